"""Run drills: each one a real 2-rank job under ``trainguard run``, then a verdict.

For every drill the runner

1. lets the attack ``prepare`` (poison a file, make a throwaway environment,
   start a helper process);
2. for drills with a prolog, runs ``trainguard preflight`` on the job's
   interpreter first, as a Slurm prolog would, and on ``block`` does not start
   a job that fails it;
3. starts ``python -m trainguard run -- python -m torch.distributed.run
   --nproc-per-node 2 ... -m trainguard.drill._train --attack NAME`` in its own
   session with a timeout (the whole process group is killed when it expires),
   everything on 127.0.0.1 and gloo;
4. collects the alarms: the spool (every rank's sentinel and the supervisor),
   the job's own events (refused checkpoints), the prolog's findings; counts the
   run's alerts in the ledger;
5. decides: detected by an expected check or not, which checks, steps from the
   attack to its first detection, a short evidence summary; the attack's
   ``judge`` adds what only it knows (a payload proven live in a throwaway
   process, the sender a kill must be attributed to).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from trainguard.drill._result import DrillResult
from trainguard.drill.attacks import Drill, DrillContext, Outcome, drills, get
from trainguard.drill.attacks._base import read_events
from trainguard.findings import Severity
from trainguard.sentinel.alarms import Alarm, AlarmSpool

__all__ = ["Progress", "run_drill", "run_drills"]

#: ``progress(index, total, name, result)``: called before each drill with
#: ``result=None`` and after it with its result.
Progress = Callable[[int, int, str, DrillResult | None], None]

#: Ranks of every drill job (torchrun ``--nproc-per-node``).
RANKS = 2
#: Seconds between heartbeats of the ranks (the kill drill's helper watches them).
HEARTBEAT_INTERVAL = 0.2
#: Evidence values longer than this are cut (the full alarm stays in the spool).
MAX_EVIDENCE_TEXT = 240
#: Evidence keys that hold bulky data, left to the spool.
BULKY_KEYS = frozenset(
    {"stack", "traceback", "diff", "lines", "shapes", "scores", "apparent_scale"}
)


def run_drills(
    names: Sequence[str] | None = None,
    *,
    workdir: str | os.PathLike[str],
    ledger_url: str | None = None,
    progress: Progress | None = None,
) -> list[DrillResult]:
    """Run drills (all of them, in registry order, when ``names`` is None).

    Args:
        names: drill names (see :data:`trainguard.drill.DRILLS`); run in the given order.
        workdir: a directory for the drills' files (one sub-directory per drill,
            replaced when it exists; the default ledger lives here too).
        ledger_url: the ledger to record the drill runs in (default: a SQLite
            ledger in ``workdir``).
        progress: see :data:`Progress`.

    Returns:
        One :class:`DrillResult` per drill, in order.

    Raises:
        UsageError: an unknown drill name.
    """
    selected = [get(n) for n in names] if names is not None else list(drills())
    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    url = ledger_url or f"sqlite:///{root / 'ledger.db'}"
    _ensure_ledger(url)
    results = []
    for index, drill in enumerate(selected):
        if progress is not None:
            progress(index, len(selected), drill.name, None)
        result = run_drill(drill, root=root, ledger_url=url)
        results.append(result)
        if progress is not None:
            progress(index, len(selected), drill.name, result)
    from trainguard.drill.attacks._venv import wait_discarded

    wait_discarded()
    return results


def _ensure_ledger(url: str) -> None:
    # The ranks open the ledger concurrently: initialise it once, here, first.
    from trainguard.ledger import Ledger

    Ledger.open(url, create=True).close()


def run_drill(drill: Drill, *, root: Path, ledger_url: str) -> DrillResult:
    """Run one drill in ``root/<name>`` (see the module docstring)."""
    started = time.monotonic()
    workdir = root / drill.name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ctx = DrillContext(
        drill=drill,
        workdir=workdir,
        run_id=f"drill-{drill.name}-{uuid.uuid4().hex[:8]}",
        ledger_url=ledger_url,
        python=sys.executable,
        spool_dir=workdir / "spool",
        job_dir=workdir / "job",
    )
    try:
        outcome = _run(ctx)
    except Exception as exc:  # a drill that cannot run is a failed drill, never a pass
        outcome = Outcome(
            alarms=[], events=[], job_status=None, error=f"{type(exc).__name__}: {exc}"
        )
    finally:
        for cleanup in reversed(ctx.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
    return _result(ctx, outcome, time.monotonic() - started)


# -- running -------------------------------------------------------------------------------


def _run(ctx: DrillContext) -> Outcome:
    drill = ctx.drill
    drill.prepare(ctx)
    alarms: list[Alarm] = []
    blocked = False
    if drill.prolog is not None:
        found = _prolog(ctx)
        alarms.extend(found)
        # As a real prolog: any finding at or above medium keeps the job from starting.
        blocked = drill.prolog == "block" and bool(found)
    status: int | None = None
    log_tail = ""
    if not blocked:
        status, log_tail = _launch(ctx)
    alarms.extend(_spooled(ctx.spool_dir))
    events = read_events(ctx.workdir)
    alarms.extend(_job_alarms(events))
    outcome = Outcome(alarms=_dedupe(alarms), events=events, job_status=status)
    outcome.marker_fired = ctx.marker.exists() if ctx.marker is not None else None
    if blocked:
        outcome.evidence["job"] = "not started: the prolog refused it"
    else:
        outcome.error = _job_error(ctx, status, events, log_tail)
    outcome.detections = [a for a in outcome.alarms if _counts(drill, a)]
    alerts = _ledger_alerts(ctx)
    if alerts is not None:
        outcome.evidence["ledger_alerts"] = alerts
    drill.judge(ctx, outcome)
    return outcome


def _prolog(ctx: DrillContext) -> list[Alarm]:
    """``trainguard preflight`` of the job's interpreter, its findings as alarms at step 0."""
    from trainguard.env import EnvConfig, PreflightConfig, preflight

    report = preflight(PreflightConfig(env=EnvConfig(python=ctx.python), code=None))
    host = socket.gethostname()
    out = []
    for f in report.sorted_findings():
        if f.severity < Severity.MEDIUM:
            continue
        evidence = {k: v for k, v in f.evidence.items() if k != "diff"}
        if "diff" in f.evidence:
            evidence["diff"] = str(f.evidence["diff"])[:2000]
        out.append(
            Alarm(
                check="preflight",
                rule=f.rule,
                rank=0,
                host=host,
                step=0,
                message=f.message,
                evidence={"subject": f.subject, **evidence},
                severity=f.severity,
            )
        )
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the drills' rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job_command(ctx: DrillContext) -> list[str]:
    """The command line of the drill's job: ``trainguard run -- torchrun ... _train``."""
    drill = ctx.drill
    cmd = [
        sys.executable, "-m", "trainguard", "run",
        "--spool", str(ctx.spool_dir), "--job-dir", str(ctx.job_dir),
        "--heartbeat-interval", str(HEARTBEAT_INTERVAL),
        "--ledger", ctx.ledger_url, "--run-id", ctx.run_id,
    ]  # fmt: skip
    if drill.canary_world_size:
        cmd += [
            "--canary-world-size", str(drill.canary_world_size),
            "--canary-steps", str(max(1, drill.steps // 2)),
            "--canary-timeout", str(drill.timeout),
        ]  # fmt: skip
    cmd += [
        "--", ctx.python, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc-per-node", str(RANKS), "--max-restarts", "0",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "--local-addr", "127.0.0.1",
    ]  # fmt: skip
    cmd += [str(ctx.script)] if ctx.script is not None else ["-m", "trainguard.drill._train"]
    cmd += ["--attack", drill.name, "--workdir", str(ctx.workdir), "--ledger", ctx.ledger_url]
    return cmd + ctx.job_args


def _launch(ctx: DrillContext) -> tuple[int, str]:
    env = dict(os.environ)
    env.update(
        TRAINGUARD_RUN_ID=ctx.run_id,
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    if os.path.isdir("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # collectives stay on the loopback interface
    env.update(ctx.env)
    log = ctx.workdir / "job.log"
    with open(log, "wb") as out:
        # A session of its own: on timeout the whole tree (supervisor, agent, ranks) goes.
        proc = subprocess.Popen(
            job_command(ctx),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ctx.workdir,
            start_new_session=True,
        )
        try:
            status = proc.wait(timeout=ctx.drill.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(
                f"the job did not finish within {ctx.drill.timeout:.0f} s (log: {log})"
            ) from None
    return status, _tail(log)


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


# -- collecting --------------------------------------------------------------------------------


def _spooled(spool: Path) -> list[Alarm]:
    alarms: list[Alarm] = []
    for path in sorted(spool.glob("alarms-*.jsonl")):
        alarms.extend(AlarmSpool.read(path))
    return alarms


def _job_alarms(events: Iterable[dict[str, Any]]) -> list[Alarm]:
    out = []
    for e in events:
        if e.get("kind") == "alarm" and isinstance(e.get("alarm"), dict):
            with contextlib.suppress(ValueError):
                out.append(Alarm.from_dict(e["alarm"]))
    return out


def _dedupe(alarms: Iterable[Alarm]) -> list[Alarm]:
    seen: set[tuple[str, str, int, int, str]] = set()
    out = []
    for a in sorted(alarms, key=lambda a: (a.step, a.time)):
        key = (a.check, a.rule, a.rank, a.step, a.message)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def _ledger_alerts(ctx: DrillContext) -> int | None:
    """How many alerts of this run the ledger holds (None if it cannot be read)."""
    from trainguard.ledger import Ledger

    try:
        with Ledger.open(ctx.ledger_url) as ledger:
            rows = ledger.storage.select("events", "run_id", [ctx.run_id])
    except Exception:
        return None
    return sum(1 for r in rows if r[1] == "alert")


def _job_error(
    ctx: DrillContext, status: int | None, events: list[dict[str, Any]], tail: str
) -> str | None:
    drill = ctx.drill
    done = {e.get("rank") for e in events if e.get("kind") == "done"}
    protected = {e.get("rank") for e in events if e.get("kind") == "protected"}
    errors = [e for e in events if e.get("kind") == "error"]
    if drill.expect_job_failure or drill.canary_world_size:
        # The attack (or the canary) ends the job early; it must at least have trained.
        if len(protected) == RANKS:
            return None
        return f"the job never started training on every rank; last lines of job.log:\n{tail}"
    if len(done) == RANKS and not errors:
        return None
    why = errors[0].get("error") if errors else f"exit status {status}"
    return f"the job did not complete on every rank ({why}); last lines of job.log:\n{tail}"


# -- deciding ----------------------------------------------------------------------------------


def _counts(drill: Drill, alarm: Alarm) -> bool:
    """Whether ``alarm`` is a detection of the drill's attack."""
    if drill.control:
        return alarm.severity > Severity.INFO
    if alarm.check not in drill.expected_checks:
        return False
    return not drill.expected_rules or alarm.rule in drill.expected_rules


def _short(evidence: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in evidence.items():
        if key in BULKY_KEYS:
            continue
        if isinstance(value, str) and len(value) > MAX_EVIDENCE_TEXT:
            value = value[:MAX_EVIDENCE_TEXT] + "..."
        elif (
            isinstance(value, list | dict)
            and len(json.dumps(value, default=repr)) > MAX_EVIDENCE_TEXT
        ):
            continue
        out[key] = value
        if len(out) >= 8:
            break
    return out


def _attack_step(drill: Drill, events: list[dict[str, Any]]) -> int:
    steps = [
        e["step"] for e in events if e.get("kind") == "attack" and isinstance(e.get("step"), int)
    ]
    return min(steps) if steps else drill.attack_step


def _result(ctx: DrillContext, outcome: Outcome, seconds: float) -> DrillResult:
    drill = ctx.drill
    # The first detection, a rank's own alarm before a peer's relay of it.
    detections = sorted(outcome.detections, key=lambda a: (a.step, a.is_peer, -a.severity, a.time))
    checks = tuple(dict.fromkeys(a.check for a in detections))
    counted = {id(a) for a in detections}
    also = tuple(
        sorted(
            {a.check for a in outcome.alarms if id(a) not in counted and a.severity > Severity.INFO}
        )
    )
    evidence: dict[str, Any] = {}
    steps: int | None = None
    if detections:
        first = detections[0]
        evidence.update(
            check=first.check, rule=first.rule, rank=first.rank, step=first.step,
            message=first.message[:MAX_EVIDENCE_TEXT],
        )  # fmt: skip
        evidence["details"] = _short(dict(first.evidence))
        evidence["first_step_by_check"] = {
            c: min(a.step for a in detections if a.check == c) for c in checks
        }
        if not drill.control:
            attack = _attack_step(drill, outcome.events)
            evidence["attack_step"] = attack
            steps = max(0, first.step - attack)
    evidence.update(ctx.facts)
    evidence.update(outcome.evidence)
    return DrillResult(
        name=drill.name,
        title=drill.title,
        detected=bool(detections),
        checks=checks,
        steps_to_detection=steps,
        evidence=evidence,
        run_id=ctx.run_id,
        seconds=seconds,
        marker_fired=outcome.marker_fired if drill.payload else None,
        error=outcome.error,
        expected_checks=drill.expected_checks,
        bound=None if drill.control else drill.bound,
        also=also,
        control=drill.control,
    )
