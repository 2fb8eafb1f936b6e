"""The per-job directory through which ranks, the agent and the supervisor talk.

Layout (one directory per ``trainguard run``, on the node's local disk)::

    JOB/heartbeat/rank-N.json   one small JSON record per rank, replaced atomically
    JOB/events.jsonl            append-only events: workers started/exited/stopped,
                                signals received with their sender

Files rather than a socket: ranks are grandchildren of the supervisor (under
torchrun) and may fork, exec or be stopped at any moment; a file written with
``os.replace`` or a single ``O_APPEND`` write is never half-visible, needs no
connection state and survives the writer. Readers validate every record
(construction validates), so a malformed line is skipped and counted, never
trusted.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_CANARY_STEPS",
    "ENV_CANARY_WORLD_SIZE",
    "ENV_HEARTBEAT_INTERVAL",
    "ENV_JOB_DIR",
    "ENV_RANK_SIGNALS",
    "ENV_SUPERVISOR_PID",
    "EVENT_KINDS",
    "Event",
    "EventReader",
    "Heartbeat",
    "JobDir",
]

#: The job directory; its presence tells a rank it runs under ``trainguard run``.
ENV_JOB_DIR = "TRAINGUARD_JOB_DIR"
#: Pid of the ``trainguard run`` supervisor (a signal from it is expected).
ENV_SUPERVISOR_PID = "TRAINGUARD_SUPERVISOR_PID"
#: Seconds between heartbeats written by each rank.
ENV_HEARTBEAT_INTERVAL = "TRAINGUARD_HEARTBEAT_INTERVAL"
#: ``0`` turns off in-rank signal attribution (see ``_ranksignals``).
ENV_RANK_SIGNALS = "TRAINGUARD_RANK_SIGNALS"
#: The world size a canary run reports to the job code.
ENV_CANARY_WORLD_SIZE = "TRAINGUARD_CANARY_WORLD_SIZE"
#: Steps after which the supervisor ends a canary run.
ENV_CANARY_STEPS = "TRAINGUARD_CANARY_STEPS"

#: Event kinds and the integer fields each must carry.
EVENT_KINDS: Mapping[str, tuple[str, ...]] = {
    "worker-started": ("rank", "pid"),
    "worker-exited": ("rank", "pid", "exitcode"),
    "worker-stopped": ("rank", "pid", "signal"),
    "worker-continued": ("rank", "pid"),
    "signal-received": ("rank", "pid", "signal"),
    "rank-exiting": ("rank", "pid"),
    "kill-sent": ("rank", "pid", "target_pid", "signal"),
}


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, found {value!r}")
    return value


@dataclass(frozen=True)
class Heartbeat:
    """A rank's liveness record: who it is, how many beats, which training step."""

    rank: int
    local_rank: int
    host: str
    pid: int
    seq: int
    wall: float
    step: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Heartbeat:
        """Validate a decoded record; raises ``ValueError`` when malformed."""
        try:
            rank, local_rank, pid, seq = (
                data["rank"],
                data["local_rank"],
                data["pid"],
                data["seq"],
            )
            host, wall = data["host"], data["wall"]
        except KeyError as exc:
            raise ValueError(f"heartbeat lacks field {exc}") from None
        for value in (rank, local_rank, pid, seq):
            if _int_or_none(value) is None:
                raise ValueError("heartbeat rank/local_rank/pid/seq must be integers")
        if not isinstance(host, str) or not isinstance(wall, (int, float)):
            raise ValueError("heartbeat host/wall have the wrong type")
        return cls(rank, local_rank, host, pid, seq, float(wall), _int_or_none(data.get("step")))


@dataclass(frozen=True)
class Event:
    """One line of ``events.jsonl``: a kind, when, and its facts."""

    kind: str
    time: float
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """Validate a decoded line; raises ``ValueError`` when malformed."""
        kind, when = data.get("kind"), data.get("time")
        if not isinstance(kind, str) or kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if not isinstance(when, (int, float)):
            raise ValueError("event time is not a number")
        for name in EVENT_KINDS[kind]:
            if name not in data or _int_or_none(data[name]) is None:
                raise ValueError(f"event {kind} lacks integer field {name!r}")
        facts = {k: v for k, v in data.items() if k not in ("kind", "time")}
        return cls(kind, float(when), facts)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "time": self.time, **self.fields}

    def int_field(self, name: str) -> int:
        value = self.fields[name]
        assert isinstance(value, int)
        return value


class JobDir:
    """Paths and record I/O of one job directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.heartbeats = self.root / "heartbeat"
        self.events = self.root / "events.jsonl"

    def create(self) -> JobDir:
        """Make the directory tree (mode 0700: heartbeats name pids and hosts)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.heartbeats.mkdir(mode=0o700, exist_ok=True)
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobDir | None:
        """The job directory named by ``TRAINGUARD_JOB_DIR``, if set."""
        env = os.environ if environ is None else environ
        root = env.get(ENV_JOB_DIR)
        return cls(root) if root else None

    def heartbeat_path(self, rank: int) -> Path:
        return self.heartbeats / f"rank-{rank}.json"

    def write_heartbeat(self, beat: Heartbeat) -> None:
        """Replace the rank's record atomically (write a temp file, then rename)."""
        path = self.heartbeat_path(beat.rank)
        tmp = path.with_name(f".{path.name}.{beat.pid}.tmp")
        tmp.write_text(json.dumps(asdict(beat)), encoding="utf-8")
        os.replace(tmp, path)

    def read_heartbeats(self) -> dict[int, Heartbeat]:
        """Every well-formed heartbeat, by rank (malformed or half-gone files skipped)."""
        beats: dict[int, Heartbeat] = {}
        try:
            paths = list(self.heartbeats.glob("rank-*.json"))
        except OSError:
            return beats
        for path in paths:
            try:
                beat = Heartbeat.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
            beats[beat.rank] = beat
        return beats

    def append_event(self, kind: str, **facts: Any) -> None:
        """Append one event line with a single ``O_APPEND`` write.

        One ``write`` per line keeps concurrent writers (ranks, agent) from
        interleaving; the record is validated before it is written.
        """
        event = Event.from_json({"kind": kind, "time": time.time(), **facts})
        line = (json.dumps(event.to_json(), sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class EventReader:
    """Reads ``events.jsonl`` incrementally, keeping a partial last line for later."""

    def __init__(self, job: JobDir) -> None:
        self._path = job.events
        self._offset = 0
        self._pending = b""
        #: Lines that were not valid events (counted: a tampered file is evidence).
        self.malformed = 0

    def poll(self) -> Iterator[Event]:
        """The events appended since the last call."""
        try:
            with self._path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            try:
                yield Event.from_json(json.loads(line))
            except (ValueError, TypeError):
                self.malformed += 1


def local_host() -> str:
    """The host name recorded in heartbeats and alarms."""
    return socket.gethostname()
