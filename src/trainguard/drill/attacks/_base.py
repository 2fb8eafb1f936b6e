"""The contract between a drill's attack module, the runner and the training job.

An attack module is small and always has the same shape::

    NAME = "rng-reseed"                      # the drill's name on the command line
    TITLE = "RNG reseeded mid-run"           # one line for the summary table
    INCIDENT = "..."                         # the incident technique it replays
    EXPECTED_CHECKS = ("rng",)               # checks that count as catching it
    # optional: EXPECTED_RULES, STEPS, ATTACK_STEP, BOUND, PROLOG, CANARY_WORLD_SIZE,
    #           EXPECT_JOB_FAILURE, PAYLOAD, TIMEOUT (see Drill below)

    def prepare(ctx: DrillContext) -> None: ...          # outside the job (optional)
    def inject(job: JobContext, model, optimizer, step) -> None: ...   # inside it (optional)
    def judge(ctx: DrillContext, outcome: Outcome) -> None: ...       # special verdicts (optional)

``prepare`` runs in the runner before the job starts (poison a checkpoint, make
a throwaway environment, start a helper process); ``inject`` runs on every
rank at the start of every training step, before the forward, and does the
harmless version of the attack; ``judge`` adds evidence the runner cannot know
(a payload proven live in a throwaway process, the sender a signal should be
attributed to). Attack modules import torch only inside their functions, so
listing drills stays fast.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from trainguard.errors import ConfigError

if TYPE_CHECKING:  # importing the sentinel imports torch: listing drills must not
    from trainguard.sentinel.alarms import Alarm

__all__ = [
    "PROLOGS",
    "Drill",
    "DrillContext",
    "JobContext",
    "Outcome",
    "model_params",
    "read_events",
]

#: What the runner does with the environment check it runs before the job
#: (``trainguard preflight`` of the job's interpreter): nothing, report its
#: findings and start the job anyway, or refuse to start the job on a finding.
PROLOGS = (None, "report", "block")


@dataclass(frozen=True)
class Drill:
    """One drill, validated from its attack module (construction validates).

    Attributes:
        name, title, incident: what the module says.
        expected_checks: alarm ``check`` names that count as a detection
            (``"preflight"``, ``"scan"`` and ``"ledger"`` are the runner's and the
            job's own checks; the rest are sentinel checks and ``"kills"``).
        expected_rules: when set, only alarms of these rule ids count.
        steps: optimizer steps the job runs.
        attack_step: the step at which the attack takes effect (the job reports
            the exact step; this is the plan).
        bound: the most steps after the attack a detection may take.
        prolog: see :data:`PROLOGS`.
        canary_world_size: run under ``trainguard run --canary-world-size``.
        expect_job_failure: the attack ends the job (a killed rank).
        payload: the drill carries a harmless payload whose marker file is watched.
        timeout: seconds before the job is stopped.
        control: the clean control drill (no attack; passes when nothing is raised).
    """

    name: str
    title: str
    incident: str
    expected_checks: tuple[str, ...]
    module: ModuleType
    expected_rules: tuple[str, ...] = ()
    steps: int = 16
    attack_step: int = 8
    bound: int = 1
    prolog: str | None = None
    canary_world_size: int = 0
    expect_job_failure: bool = False
    payload: bool = False
    timeout: float = 240.0
    control: bool = False

    def __post_init__(self) -> None:
        where = f"drill module {self.module.__name__}"
        if (
            not self.name
            or not self.name.replace("-", "").isalnum()
            or self.name != self.name.lower()
        ):
            raise ConfigError(
                f"{where}: NAME must be lower-case words joined by '-'", found=repr(self.name)
            )
        if not self.title or not self.incident:
            raise ConfigError(f"{where}: TITLE and INCIDENT are required")
        if not self.control and not self.expected_checks:
            raise ConfigError(f"{where}: EXPECTED_CHECKS names the checks that must catch it")
        if self.prolog not in PROLOGS:
            raise ConfigError(f"{where}: PROLOG must be one of {PROLOGS}", found=repr(self.prolog))
        if not 0 <= self.attack_step < self.steps or self.bound < 0 or self.timeout <= 0:
            raise ConfigError(f"{where}: 0 <= ATTACK_STEP < STEPS, BOUND >= 0, TIMEOUT > 0")

    @classmethod
    def from_module(cls, module: ModuleType) -> Drill:
        """Read a drill from its attack module's constants."""
        get = module.__dict__.get
        try:
            return cls(
                name=module.NAME,
                title=module.TITLE,
                incident=module.INCIDENT,
                expected_checks=tuple(get("EXPECTED_CHECKS", ())),
                module=module,
                expected_rules=tuple(get("EXPECTED_RULES", ())),
                steps=int(get("STEPS", 16)),
                attack_step=int(get("ATTACK_STEP", 8)),
                bound=int(get("BOUND", 1)),
                prolog=get("PROLOG"),
                canary_world_size=int(get("CANARY_WORLD_SIZE", 0)),
                expect_job_failure=bool(get("EXPECT_JOB_FAILURE", False)),
                payload=bool(get("PAYLOAD", False)),
                timeout=float(get("TIMEOUT", 240.0)),
                control=bool(get("CONTROL", False)),
            )
        except AttributeError as exc:
            raise ConfigError(f"drill module {module.__name__} lacks {exc.name}") from exc

    # -- the module's optional functions ---------------------------------------------------
    def prepare(self, ctx: DrillContext) -> None:
        fn = getattr(self.module, "prepare", None)
        if fn is not None:
            fn(ctx)

    def inject(self, job: JobContext, model: Any, optimizer: Any, step: int) -> None:
        fn = getattr(self.module, "inject", None)
        if fn is not None:
            fn(job, model, optimizer, step)

    def judge(self, ctx: DrillContext, outcome: Outcome) -> None:
        fn = getattr(self.module, "judge", None)
        if fn is not None:
            fn(ctx, outcome)


@dataclass
class DrillContext:
    """The runner's side of one drill: where things go and how the job is started.

    ``prepare`` may change ``python`` (the job's interpreter), ``script`` (a
    training script to run instead of ``-m trainguard.drill._train``),
    ``job_args``, ``env``, ``marker``; add ``facts`` (evidence for the result)
    and ``cleanups`` (called after the job, in reverse order).
    """

    drill: Drill
    workdir: Path
    run_id: str
    ledger_url: str
    python: str
    spool_dir: Path
    job_dir: Path
    script: Path | None = None
    job_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    marker: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Outcome:
    """What the runner saw; ``judge`` may add evidence or drop detections that do not count."""

    alarms: list[Alarm]
    events: list[dict[str, Any]]
    job_status: int | None
    detections: list[Alarm] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    marker_fired: bool | None = None
    error: str | None = None

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("kind") == kind]


class JobContext:
    """The training job's side: rank, steps, and where the job writes its own events.

    Events are JSON lines in ``WORKDIR/events/rank{R}.jsonl``: ``attack`` (the
    step an attack took effect), ``alarm`` (a detection by the job itself: a
    refused checkpoint), ``note`` (facts for the evidence) and ``done``.
    """

    def __init__(
        self, *, rank: int, world: int, workdir: Path, steps: int, attack_step: int
    ) -> None:
        self.rank = rank
        self.world = world
        self.workdir = workdir
        self.steps = steps
        self.attack_step = attack_step
        #: Wall time of every completed step (the sleep drill scales its sleeps by it).
        self.step_times: list[float] = []
        #: Scratch space for attacks (handles, threads, saved originals).
        self.state: dict[str, Any] = {}
        self.sentinel: Any = None
        self.recorder: Any = None
        self.host = os.uname().nodename
        self._path = workdir / "events" / f"rank{rank}.jsonl"
        self._path.parent.mkdir(parents=True, exist_ok=True)

    def event(self, kind: str, **fields: Any) -> None:
        """Append one event line (a single write on an append-only file)."""
        record = {"kind": kind, "rank": self.rank, "time": time.time(), **fields}
        data = (json.dumps(record, sort_keys=True, default=repr) + "\n").encode()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def attacked(self, step: int, what: str, **facts: Any) -> None:
        """Record that the attack took effect at ``step`` (once per rank)."""
        if not self.state.get("_attacked"):
            self.state["_attacked"] = True
            self.event("attack", step=step, what=what, **facts)

    def alarm(
        self,
        check: str,
        rule: str,
        step: int,
        message: str,
        *,
        severity: str = "high",
        evidence: Mapping[str, Any] | None = None,
        to_ledger: bool = True,
    ) -> Alarm:
        """A detection made by the job itself (not by the sentinel): written as an event and,
        when the run is recorded, as an ``Alert`` in the ledger."""
        from trainguard.findings import Severity
        from trainguard.sentinel.alarms import Alarm

        alarm = Alarm(
            check=check,
            rule=rule,
            rank=self.rank,
            host=self.host,
            step=step,
            message=message,
            evidence=dict(evidence or {}),
            severity=Severity.parse(severity),
            reporter=self.rank,
        )
        self.event("alarm", alarm=alarm.to_dict())
        if to_ledger and self.recorder is not None:
            from trainguard.sentinel.alarms import RunLedgerSink

            try:
                RunLedgerSink(self.recorder).append_alarm(alarm.to_dict())
            except Exception as exc:  # the ledger's failure must not hide the detection
                self.event("note", ledger_error=repr(exc))
        return alarm


def read_events(workdir: Path) -> list[dict[str, Any]]:
    """Every event line the job's ranks wrote (malformed lines are skipped)."""
    out: list[dict[str, Any]] = []
    for path in sorted((workdir / "events").glob("rank*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out


def model_params(model: Any) -> Sequence[Any]:
    """The parameters of ``model`` (unwrapping DDP)."""
    inner = getattr(model, "module", model)
    return list(inner.parameters())
