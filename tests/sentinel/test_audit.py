"""Check 8: the audit hook.

Malicious samples are built in code and carry harmless payloads (touching a
marker file); every test that unpickles one runs in a throwaway subprocess.
The in-process tests feed the monitor events directly and never unpickle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from trainguard.findings import Severity
from trainguard.sentinel.checks import _audithook
from trainguard.sentinel.checks._auditmonitor import AuditMonitor, AuditRecord, job_pids
from trainguard.sentinel.launcher._jobdir import Heartbeat, JobDir

REPO = Path(__file__).resolve().parents[2]


def _monitor(**kw: Any) -> tuple[AuditMonitor, list[AuditRecord]]:
    alarms: list[AuditRecord] = []
    kw.setdefault("job_pids_fn", lambda: {os.getpid(): "this rank itself", 4242: "rank 1 on h"})
    return AuditMonitor(alarms.append, **kw), alarms


# -- in-process: events fed directly ----------------------------------------------------------


def test_dangerous_global_is_an_alarm_safe_one_is_not() -> None:
    monitor, alarms = _monitor()
    monitor("pickle.find_class", ("torch._utils", "_rebuild_tensor_v2"))
    monitor("pickle.find_class", ("collections", "OrderedDict"))
    assert alarms == []
    monitor("pickle.find_class", ("posix", "system"))
    assert len(alarms) == 1
    assert alarms[0].kind == "find-class" and alarms[0].severity is Severity.CRITICAL
    assert alarms[0].evidence["global"] == "posix.system"
    monitor("pickle.find_class", ("posix", "system"))
    assert len(alarms) == 1  # once per global and context


def test_unknown_global_is_an_alarm_unless_allowed() -> None:
    monitor, alarms = _monitor(allow=("mylab.data.",))
    monitor("pickle.find_class", ("mylab.data", "Batch"))
    assert alarms == []
    monitor("pickle.find_class", ("somepkg.mod", "Thing"))
    assert alarms and alarms[0].evidence["tier"] == "unknown"


def test_spawn_outside_a_load_is_logged_not_alarmed() -> None:
    monitor, alarms = _monitor()
    monitor("os.system", ("echo hi",))
    assert alarms == []
    assert monitor.log[-1].kind == "spawn" and monitor.log[-1].evidence["command"] == "echo hi"
    loud, loud_alarms = _monitor(alarm_on_spawn=True)
    loud("subprocess.Popen", ("/bin/true", ["/bin/true", "-x"], None, None))
    assert loud_alarms and loud_alarms[0].evidence["command"] == "/bin/true -x"


def test_kill_aimed_at_own_ranks() -> None:
    monitor, alarms = _monitor()
    monitor("os.kill", (4242, signal.SIGKILL))
    monitor("os.kill", (4242, 0))  # an existence probe, not a signal
    monitor("os.kill", (99999999, signal.SIGTERM))  # not one of ours
    monitor("os.killpg", (-4242, signal.SIGTERM))
    assert [a.evidence["target"] for a in alarms] == ["rank 1 on h", "rank 1 on h"]
    assert alarms[0].evidence["signal_name"] == "SIGKILL" and alarms[0].kind == "kill"


def test_job_pids_from_the_launchers_job_directory(tmp_path: Path) -> None:
    job = JobDir(tmp_path).create()
    job.write_heartbeat(Heartbeat(3, 1, "node7", 31337, 1, 0.0))
    pids = job_pids({"TRAINGUARD_JOB_DIR": str(tmp_path), "TRAINGUARD_SUPERVISOR_PID": "77"})
    assert pids[31337] == "rank 3 on node7"
    assert pids[77] == "the trainguard run supervisor"
    assert pids[os.getpid()] == "this rank itself"


def test_hook_is_inert_when_inactive_and_survives_listener_errors() -> None:
    seen: list[str] = []

    def broken(event: str, args: tuple[Any, ...]) -> None:
        seen.append(event)
        raise RuntimeError("listener bug")

    sub = _audithook.subscribe(("trainguard.test-event",), broken)
    try:
        before = _audithook.errors()
        sys.audit("trainguard.test-event")  # the bug is swallowed, the event goes on
        assert seen == ["trainguard.test-event"] and _audithook.errors() == before + 1
        _audithook.set_active(False)
        sys.audit("trainguard.test-event")
        assert len(seen) == 1
    finally:
        _audithook.set_active(True)
        sub.cancel()
    sys.audit("trainguard.test-event")
    assert len(seen) == 1


# -- subprocess: real payloads ------------------------------------------------------------------


_PRELUDE = """
import json, os, pickle, sys, io
from trainguard.sentinel.checks import _audithook
from trainguard.sentinel.checks._auditmonitor import MONITORED_EVENTS, AuditMonitor
records = []
monitor = AuditMonitor(records.append, block_in_load={block})
_audithook.subscribe(MONITORED_EVENTS, monitor)
MARKER = {marker!r}

class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + MARKER,))

def report(**extra):
    print(json.dumps({{"alarms": [
        {{"kind": r.kind, "event": r.event, "severity": r.severity.name, "blocked": r.blocked,
          "evidence": r.evidence}} for r in records], **extra}}))
"""


def _run(body: str, marker: Path, *, block: bool = True, cwd: Path | None = None) -> dict[str, Any]:
    code = _PRELUDE.format(block=block, marker=str(marker)) + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd or marker.parent,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_os_system_inside_pickle_loads_is_blocked_and_recorded(marker_dir: Path) -> None:
    marker = marker_dir / "pwned"
    out = _run(
        """
        try:
            pickle.loads(pickle.dumps(Payload()))
            outcome = "loaded"
        except Exception as exc:
            outcome = type(exc).__name__
        report(outcome=outcome)
        """,
        marker,
    )
    assert out["outcome"] == "AuditVeto" and not marker.exists()
    spawn = [a for a in out["alarms"] if a["kind"] == "spawn"]
    assert spawn and spawn[0]["blocked"] and spawn[0]["severity"] == "CRITICAL"
    assert spawn[0]["evidence"]["command"] == f"touch {marker}"
    assert any(a["kind"] == "find-class" for a in out["alarms"])


def test_recording_without_blocking_lets_the_payload_run(marker_dir: Path) -> None:
    marker = marker_dir / "ran"
    out = _run("pickle.loads(pickle.dumps(Payload())); report()", marker, block=False)
    assert marker.exists()
    assert [a["kind"] for a in out["alarms"]] == ["find-class", "spawn"]
    assert not out["alarms"][1]["blocked"]


def test_subprocess_from_inside_torch_load_is_recorded(marker_dir: Path) -> None:
    marker = marker_dir / "torch-pwned"
    out = _run(
        """
        import subprocess, torch
        class Spawn:
            def __reduce__(self):
                return (subprocess.call, (["touch", MARKER],))
        buf = io.BytesIO()
        torch.save({"w": torch.ones(2), "x": Spawn()}, buf)
        buf.seek(0)
        try:
            torch.load(buf, weights_only=False)
        except Exception as exc:
            pass
        clean = io.BytesIO(); torch.save({"w": torch.ones(3)}, clean); clean.seek(0)
        n_before = len(records)
        torch.load(clean, weights_only=False)
        report(after_clean=len(records) - n_before)
        """,
        marker,
    )
    assert not marker.exists()
    spawn = [a for a in out["alarms"] if a["kind"] == "spawn"]
    assert spawn and "torch/serialization.py" in spawn[0]["evidence"]["load_frame"]
    assert out["after_clean"] == 0  # a clean checkpoint load records nothing


def test_exec_of_a_string_during_a_load_is_recorded(marker_dir: Path) -> None:
    marker = marker_dir / "exec"
    out = _run(
        """
        class Exec:
            def __reduce__(self):
                return (exec, ("open(MARKER, 'w').close()",))
        try:
            pickle.loads(pickle.dumps(Exec()))
        except Exception:
            pass
        exec("x = 1")  # outside any load: not recorded
        report()
        """,
        marker,
    )
    assert not marker.exists()
    kinds = [(a["kind"], a["event"]) for a in out["alarms"]]
    assert ("in-load", "compile") in kinds
    assert all(a["event"] != "exec" for a in out["alarms"])


def test_unpickling_a_non_allowlisted_global_is_recorded(marker_dir: Path) -> None:
    (marker_dir / "labmod.py").write_text("class Thing:\n    pass\n")
    out = _run(
        """
        sys.path.insert(0, os.getcwd())
        import labmod
        blob = pickle.dumps(labmod.Thing())
        obj = pickle.loads(blob)
        report(kind=type(obj).__name__)
        """,
        marker_dir / "unused",
    )
    assert out["kind"] == "Thing"
    [alarm] = out["alarms"]
    assert alarm["kind"] == "find-class" and alarm["evidence"]["global"] == "labmod.Thing"
    assert alarm["severity"] == "MEDIUM" and alarm["evidence"]["context"] == "load"


def _protect_script(body: str) -> str:
    return textwrap.dedent(
        """
        import io, json, os, pickle, sys, tempfile
        import torch, trainguard
        from trainguard.sentinel.checks import CHECK_MODULES
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sentinel = trainguard.protect(model, opt, spool_dir=tempfile.mkdtemp(), console=False,
                                      log_every=1, checks={c: c == "audit" for c in CHECK_MODULES})
        def train(n):
            for _ in range(n):
                model(torch.randn(8, 4)).pow(2).mean().backward(); opt.step(); opt.zero_grad()
        """
    ) + textwrap.dedent(body)


def _run_protected(body: str, cwd: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _protect_script(body)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_protect_reports_a_load_that_spawns_as_an_alarm(marker_dir: Path) -> None:
    marker = marker_dir / "m"
    out = _run_protected(
        f"""
        class P:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        buf = io.BytesIO(); torch.save({{"p": P()}}, buf); buf.seek(0)
        try:
            torch.load(buf, weights_only=False)   # before the first step: held, then raised
        except Exception as exc:
            blocked = type(exc).__name__
        train(3)
        print(json.dumps({{"blocked": blocked, "alarms": [a.to_dict() for a in sentinel.alarms]}}))
        """,
        marker_dir,
    )
    assert out["blocked"] == "AuditVeto" and not marker.exists()
    rules = {a["rule"] for a in out["alarms"]}
    assert "sentinel.audit.spawn-in-load" in rules and "sentinel.audit.pickle-global" in rules


@pytest.mark.slow
def test_protect_clean_run_with_dataloader_workers_raises_no_alarm(tmp_path: Path) -> None:
    out = _run_protected(
        """
        from torch.utils.data import DataLoader, TensorDataset
        data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=8, num_workers=2)
        for epoch in range(2):
            for (x,) in data:
                model(x).pow(2).mean().backward(); opt.step(); opt.zero_grad()
        buf = io.BytesIO(); torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
        buf.seek(0); torch.load(buf, weights_only=False)
        os.system("true")   # a spawn outside any load: logged only
        print(json.dumps({"alarms": [a.to_dict() for a in sentinel.alarms]}))
        """,
        tmp_path,
    )
    assert out["alarms"] == []


@pytest.mark.slow
def test_protect_reports_a_kill_aimed_at_its_own_rank(tmp_path: Path) -> None:
    out = _run_protected(
        """
        import signal
        got = []
        signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
        train(2)
        os.kill(os.getpid(), signal.SIGUSR1)
        train(2)
        print(json.dumps({"got": len(got), "alarms": [a.to_dict() for a in sentinel.alarms]}))
        """,
        tmp_path,
    )
    assert out["got"] == 1
    [alarm] = out["alarms"]
    assert alarm["rule"] == "sentinel.audit.kill-own-rank"
    assert (
        alarm["evidence"]["target"] == "this rank itself"
        and alarm["evidence"]["signal_name"] == "SIGUSR1"
    )
