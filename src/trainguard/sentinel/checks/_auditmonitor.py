"""What the audit check does with each audit event (no sentinel state: testable alone).

:class:`AuditMonitor` turns raw audit events into :class:`AuditRecord` objects:

* ``pickle.find_class`` of a global outside the allowlist (the scanner's pickle
  policy, ``trainguard.scan.pickle._policy``, imported lazily), judged by
  context: a checkpoint load, or inter-process traffic of torch and
  multiprocessing, where torch's own tensor-passing globals are expected;
* process spawning (``subprocess.Popen``, ``os.system``, ``os.exec*``,
  ``os.posix_spawn``, ``os.spawn*``): always logged, an alarm (and blocked, by
  default) inside a load;
* ``compile``/``exec``/``marshal.loads``/``ctypes.dlopen``/network connects
  inside a load (import machinery excepted: a load may import a class's module);
* ``os.kill``/``os.killpg``/``signal.pthread_kill`` aimed at the job's own
  processes (this rank, its torchrun agent and sibling ranks, the supervisor,
  the ranks named in the launcher's job directory).

"Inside a load" is decided from the stack, only when a rare event fires:
a frame of a known loader (``torch.load``, the pure-Python pickle, joblib,
numpy), or the frame that was running when this thread last resolved a pickle
global (a C ``pickle.loads`` has no frame of its own, but the unpickler never
returns to its caller between ``find_class`` and the ``REDUCE`` that calls the
payload, so that caller frame is still executing the same instruction).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from trainguard.findings import Severity

__all__ = ["IPC_ALLOWED", "MONITORED_EVENTS", "AuditMonitor", "AuditRecord", "job_pids"]

SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn")
LOAD_ONLY_EVENTS = ("compile", "exec", "marshal.loads", "ctypes.dlopen", "socket.connect")
KILL_EVENTS = ("os.kill", "os.killpg", "signal.pthread_kill")
MONITORED_EVENTS = ("pickle.find_class", *SPAWN_EVENTS, *LOAD_ONLY_EVENTS, *KILL_EVENTS)

#: (file suffix, function) of frames that deserialize a checkpoint.
_LOAD_FRAMES: frozenset[tuple[str, str]] = frozenset(
    {
        ("torch/serialization.py", "load"),
        ("torch/serialization.py", "_load"),
        ("torch/serialization.py", "_legacy_load"),
        ("/pickle.py", "load"),
        ("/pickle.py", "_load"),
        ("/pickle.py", "_loads"),
        ("joblib/numpy_pickle.py", "load"),
        ("numpy/lib/npyio.py", "load"),
        ("numpy/lib/_npyio_impl.py", "load"),
        ("pandas/io/pickle.py", "read_pickle"),
        ("dill/_dill.py", "load"),
        ("dill/_dill.py", "loads"),
    }
)
#: Path fragments of code that unpickles inter-process traffic (DataLoader
#: workers, multiprocessing queues, object collectives).
_IPC_MARKERS = (
    "/multiprocessing/",
    "/torch/multiprocessing/",
    "/torch/utils/data/",
    "/torch/distributed/distributed_c10d.py",
)
#: Globals torch and multiprocessing pass between their own processes. The
#: scanner rightly calls them dangerous in a file; in IPC they are the transport.
IPC_ALLOWED: tuple[str, ...] = (
    "torch.multiprocessing.reductions.",
    "multiprocessing.resource_sharer.DupFd",
    "multiprocessing.reduction._rebuild_socket",
    "torch.utils.data._utils.worker.",
    "torch.utils.data.dataloader._",
)
_MAX_FRAMES = 64
#: Frames of the unpickler itself (pure-Python pickle, torch's find_class override).
_UNPICKLER_FUNCTIONS = frozenset({"find_class", "load_global", "load_stack_global"})


def _is_import_frame(frame: FrameType) -> bool:
    return frame.f_code.co_filename.startswith("<frozen importlib._bootstrap")


def _frame_label(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def stack_summary(frame: FrameType | None, limit: int = 12) -> list[str]:
    """``file:line in func`` of the innermost frames, trainguard's own frames left out."""
    out: list[str] = []
    while frame is not None and len(out) < limit:
        if "/trainguard/sentinel/" not in frame.f_code.co_filename:
            out.append(_frame_label(frame))
        frame = frame.f_back
    return out


@dataclass(frozen=True)
class AuditRecord:
    """One audited event worth keeping, with its verdict."""

    kind: str  # find-class | spawn | in-load | kill
    event: str
    message: str
    severity: Severity
    alarm: bool
    blocked: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    """Where an audited event happens, from the stack."""

    loader: str | None  # the frame of a known checkpoint loader, if any
    anchored: bool  # the frame that was unpickling when this thread last resolved a global
    ipc: bool  # code that unpickles inter-process traffic is on the stack
    in_import: bool  # import machinery runs between the event and the unpickler

    @property
    def unpickling(self) -> bool:
        return self.loader is not None or self.anchored

    @property
    def kind(self) -> str:
        """``load`` (a checkpoint or an unknown caller) or ``ipc`` (torch/multiprocessing traffic)."""
        return "ipc" if self.ipc and self.loader is None else "load"


def job_pids(environ: dict[str, str] | None = None) -> dict[int, str]:
    """The pids of this job's own processes, by role (a /proc scan: call it rarely)."""
    from trainguard.sentinel.launcher._jobdir import ENV_SUPERVISOR_PID, JobDir
    from trainguard.sentinel.launcher._procinfo import children_of

    env = dict(os.environ) if environ is None else environ
    me = os.getpid()
    pids: dict[int, str] = {}
    if env.get("TORCHELASTIC_RUN_ID"):
        agent = os.getppid()
        for sibling in children_of(agent):
            pids[sibling] = "a local rank of this job"
        pids[agent] = "the torchrun agent of this job"
    supervisor = env.get(ENV_SUPERVISOR_PID, "")
    if supervisor.isdigit():
        pids[int(supervisor)] = "the trainguard run supervisor"
    job = JobDir.from_env(env)
    if job is not None:
        for beat in job.read_heartbeats().values():
            pids[beat.pid] = f"rank {beat.rank} on {beat.host}"
    pids[me] = "this rank itself"
    return pids


class AuditMonitor:
    """Judges audit events; ``report`` receives every record that is an alarm.

    Args:
        report: called with each alarm-worthy :class:`AuditRecord` (any thread).
        allow: extra allowed globals: ``"pkg.mod.Name"`` or a prefix ending in ``.``.
        block_in_load: veto spawning and code execution inside a load.
        alarm_on_spawn: also alarm on process spawning outside loads.
        job_pids_fn: where the job's own pids come from (tests inject one).
    """

    def __init__(
        self,
        report: Callable[[AuditRecord], None],
        *,
        allow: Collection[str] = (),
        block_in_load: bool = True,
        alarm_on_spawn: bool = False,
        job_pids_fn: Callable[[], dict[int, str]] = job_pids,
    ) -> None:
        self.report = report
        self.allow = tuple(allow)
        self.block_in_load = block_in_load
        self.alarm_on_spawn = alarm_on_spawn
        self.job_pids_fn = job_pids_fn
        self.pid = os.getpid()
        #: Every record (alarms and plain log entries), newest last.
        self.log: deque[AuditRecord] = deque(maxlen=512)
        self._seen_globals: set[tuple[str, str, bool]] = set()
        self._tls = threading.local()

    # -- context ----------------------------------------------------------------
    def _context(self, frame: FrameType | None) -> _Context:
        anchor = getattr(self._tls, "anchor", None)
        loader: str | None = None
        anchored = ipc = in_import = False
        depth = 0
        while frame is not None and depth < _MAX_FRAMES:
            code = frame.f_code
            path = code.co_filename.replace("\\", "/")
            if loader is None and not anchored:
                if any(path.endswith(sfx) and code.co_name == fn for sfx, fn in _LOAD_FRAMES):
                    loader = _frame_label(frame)
                anchored = anchor is not None and anchor == (id(frame), frame.f_lasti, id(code))
                if loader is None and not anchored and _is_import_frame(frame):
                    in_import = True
            if any(marker in path for marker in _IPC_MARKERS):
                ipc = True
            frame = frame.f_back
            depth += 1
        unpickling = loader is not None or anchored
        return _Context(loader, anchored, ipc, in_import and unpickling)

    def _record(self, record: AuditRecord) -> AuditRecord:
        self.log.append(record)
        if record.alarm:
            self.report(record)
        return record

    # -- the listener -----------------------------------------------------------------
    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        """The audit listener; raises :class:`AuditVeto` to block (see ``block_in_load``)."""
        if os.getpid() != self.pid:
            return  # a forked child (DataLoader worker): its alarms would go nowhere
        frame: FrameType | None = sys._getframe(1)
        # Skip the shared hook's own frame(s).
        while (
            frame is not None
            and "/trainguard/sentinel/checks/_audithook" in frame.f_code.co_filename
        ):
            frame = frame.f_back
        if event == "pickle.find_class":
            self._find_class(frame, str(args[0]), str(args[1]))
        elif event in KILL_EVENTS:
            self._kill(frame, event, args)
        elif event in SPAWN_EVENTS:
            self._spawn(frame, event, args)
        else:
            self._in_load(frame, event, args)

    def _find_class(self, frame: FrameType | None, module: str, name: str) -> None:
        ctx = self._context(frame)
        # Remember the frame that runs the unpickler (a C unpickler has none of its
        # own) so that later events of this same unpickling are recognised.
        anchor = frame
        while anchor is not None and anchor.f_code.co_name in _UNPICKLER_FUNCTIONS:
            anchor = anchor.f_back
        if anchor is not None:
            self._tls.anchor = (id(anchor), anchor.f_lasti, id(anchor.f_code))
        full = f"{module}.{name}"
        if any(full == a or (a.endswith(".") and full.startswith(a)) for a in self.allow):
            return
        from trainguard.scan.pickle._policy import Tier, classify

        verdict = classify(module, name)
        if verdict.tier is Tier.SAFE:
            return
        ipc = ctx.kind == "ipc"
        if ipc and (verdict.tier is not Tier.DANGEROUS or full.startswith(IPC_ALLOWED)):
            return  # torch's own inter-process transport, or a plain data class in it
        if verdict.tier is Tier.KNOWN:
            return  # a data-only class of a popular library
        key = (module, name, ipc)
        if key in self._seen_globals:
            return  # once per global and context: a checkpoint repeats its globals
        self._seen_globals.add(key)
        where = "inter-process data" if ipc else "a load"
        self._record(
            AuditRecord(
                "find-class",
                "pickle.find_class",
                f"unpickling in {where} resolved {full}: {verdict.reason}",
                verdict.severity or Severity.MEDIUM,
                alarm=True,
                evidence={
                    "global": full,
                    "tier": verdict.tier.value,
                    "context": ctx.kind,
                    "load_frame": ctx.loader,
                    "stack": stack_summary(frame),
                },
            )
        )

    def _spawn(self, frame: FrameType | None, event: str, args: tuple[Any, ...]) -> None:
        from trainguard.sentinel.launcher import _ranksignals

        ctx = self._context(frame)
        command = _describe_command(event, args)
        inside = ctx.unpickling
        block = inside and not ctx.in_import and self.block_in_load
        where = "inside a load, " if ctx.kind == "load" else "inside inter-process unpickling, "
        record = self._record(
            AuditRecord(
                "spawn",
                event,
                f"{where if inside else ''}{event} starts {command!r}"
                + (" (blocked)" if block else ""),
                Severity.CRITICAL
                if inside and not ctx.in_import
                else (Severity.HIGH if inside else Severity.INFO),
                alarm=inside or self.alarm_on_spawn,
                blocked=block,
                evidence={
                    "command": command,
                    "context": ctx.kind if inside else "outside",
                    "load_frame": ctx.loader or ("the unpickler's caller" if inside else None),
                    "during_import": ctx.in_import,
                    "stack": stack_summary(frame),
                },
            )
        )
        if block:
            _veto(record)
        attributor = _ranksignals.current()
        if attributor is not None:
            attributor.unblock_for_spawn()  # the child must not inherit the blocked mask

    def _in_load(self, frame: FrameType | None, event: str, args: tuple[Any, ...]) -> None:
        if event == "exec" and getattr(self._tls, "compiled", False):
            self._tls.compiled = False
            return  # the exec of what the compile just below reported
        ctx = self._context(frame)
        if not ctx.unpickling or ctx.in_import:
            return
        if event == "socket.connect" and ctx.kind == "ipc":
            return  # multiprocessing's resource sharer hands file descriptors over a socket
        if event == "compile":
            source = args[0] if args else None
            if not isinstance(source, (str, bytes)):
                return  # compiling an AST: the AST came from somewhere we already saw
            detail = repr(source[:200])
        elif event == "exec":
            code = args[0] if args else None
            detail = getattr(code, "co_filename", repr(code))
        else:
            detail = repr(args[:2])[:200]
        block = self.block_in_load and event != "socket.connect"
        record = self._record(
            AuditRecord(
                "in-load",
                event,
                f"{event} during a load: {detail}" + (" (blocked)" if block else ""),
                Severity.CRITICAL,
                alarm=True,
                blocked=block,
                evidence={
                    "detail": detail,
                    "context": ctx.kind,
                    "load_frame": ctx.loader or "the unpickler's caller",
                    "stack": stack_summary(frame),
                },
            )
        )
        if block:
            _veto(record)
        if event == "compile":
            self._tls.compiled = True

    def _kill(self, frame: FrameType | None, event: str, args: tuple[Any, ...]) -> None:
        from trainguard.sentinel.launcher import _ranksignals

        if _ranksignals.is_internal() or len(args) < 2:
            return
        target, signo = args[0], args[1]
        if not isinstance(target, int) or not isinstance(signo, int) or signo == 0:
            return
        if event == "signal.pthread_kill":
            # A thread of this very process: a fatal signal ends this rank.
            if signo in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
                pids = {os.getpid(): "this rank itself"}
                target = os.getpid()
            else:
                return
        else:
            if event == "os.killpg" and target == 0:
                target = os.getpgid(0)
            pids = self.job_pids_fn()
        role = pids.get(target)
        if role is None and target < 0:
            role = pids.get(-target)  # kill(-pgid): ranks lead their own process groups
        if role is None:
            return
        from trainguard.sentinel.launcher._procinfo import signal_name

        self._record(
            AuditRecord(
                "kill",
                event,
                f"{event} sends {signal_name(signo)} to pid {target} ({role})",
                Severity.HIGH,
                alarm=True,
                evidence={
                    "target_pid": target,
                    "target": role,
                    "signal": signo,
                    "signal_name": signal_name(signo),
                    "stack": stack_summary(frame),
                },
            )
        )


def _describe_command(event: str, args: tuple[Any, ...]) -> str:
    if event == "os.system":
        value: Any = args[0] if args else ""
    elif event == "subprocess.Popen":
        value = args[1] if len(args) > 1 else args
    elif event == "os.spawn":
        value = args[2] if len(args) > 2 else args
    else:  # os.exec, os.posix_spawn: (path, argv, env)
        value = args[1] if len(args) > 1 else args
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        value = " ".join(
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value
        )
    return str(value)[:300]


def _veto(record: AuditRecord) -> None:
    from trainguard.sentinel.checks._audithook import AuditVeto

    raise AuditVeto(
        f"trainguard blocked {record.event} during a load",
        subject=record.evidence.get("load_frame") or record.event,
        expected="a load that only builds data",
        found=record.message,
        hint="the artifact runs code when loaded: scan it with `trainguard scan` and do not use it",
    )
