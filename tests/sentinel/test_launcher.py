"""Check 9: ``trainguard run``: dead, killed, stopped and silent ranks, and who signalled them.

Unit tests feed the tracker records; the end-to-end tests start real jobs under
the supervisor (a single ``python`` rank, and two torchrun gloo ranks) and send
the real signals from this test process, whose pid and uid the alarms must name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from trainguard.errors import UsageError
from trainguard.sentinel.launcher import Heartbeat, JobDir, RankTracker, RunOptions, plan_command
from trainguard.sentinel.launcher._command import AGENT_MODULE, RANK_SCRIPT
from trainguard.sentinel.launcher._jobdir import Event, EventReader
from trainguard.sentinel.launcher._ranksignals import classify_sender

REPO = Path(__file__).resolve().parents[2]

# `trainguard run` until the lead registers it in cli/main.py: the same parser entry.
_DRIVER = """
import argparse, sys
from trainguard.cli import run
parser = argparse.ArgumentParser(prog="trainguard")
run.register(parser.add_subparsers())
args = parser.parse_args(["run", *sys.argv[1:]])
sys.exit(args.func(args))
"""


@dataclass
class Outcome:
    returncode: int
    stderr: str
    alarms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rules(self) -> list[str]:
        return [a["rule"] for a in self.alarms]


def _spool_alarms(spool: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(spool.glob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return out


def start_trainguard(
    args: list[str], cwd: Path, *, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    spool = cwd / "spool"
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, "--spool", str(spool), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})},
    )


def finish(proc: subprocess.Popen[str], cwd: Path, timeout: float = 240) -> Outcome:
    _, err = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, err, _spool_alarms(cwd / "spool"))


def run_trainguard(args: list[str], cwd: Path, *, env: dict[str, str] | None = None) -> Outcome:
    return finish(start_trainguard(args, cwd, env=env), cwd)


def wait_for(path: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


# -- command planning -----------------------------------------------------------------------


def test_plan_python_script_and_module() -> None:
    plan = plan_command(["python3", "-u", "train.py", "--lr", "1"])
    assert plan.mode == "python" and plan.script == "train.py"
    assert plan.argv == ("python3", "-u", RANK_SCRIPT, "train.py", "--lr", "1")
    plan = plan_command(["python", "-X", "dev", "-m", "pkg.train", "x"])
    assert plan.argv == ("python", "-X", "dev", RANK_SCRIPT, "-m", "pkg.train", "x")
    assert plan.module == "pkg.train"


def test_plan_torchrun_wraps_workers_through_the_rank_bootstrap() -> None:
    plan = plan_command(
        ["torchrun", "--nproc-per-node", "2", "--standalone", "train.py", "--x", "1"]
    )
    assert plan.mode == "torchrun" and plan.script == "train.py"
    assert plan.argv[1:3] == ("-m", AGENT_MODULE)
    assert plan.argv[3:] == (
        "--nproc-per-node",
        "2",
        "--standalone",
        RANK_SCRIPT,
        "train.py",
        "--x",
        "1",
    )
    plan = plan_command(
        ["python", "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "pkg.train"]
    )
    assert plan.argv[3:] == ("--nproc_per_node=2", RANK_SCRIPT, "-m", "pkg.train")
    assert plan.module == "pkg.train"


def test_plan_falls_back_to_running_unchanged() -> None:
    assert plan_command(["bash", "run.sh"]).mode == "generic"
    assert plan_command(["python", "-c", "print(1)"]).mode == "generic"
    assert (
        plan_command(["torchrun", "--no-python", "--nproc-per-node", "1", "./a.out"]).mode
        == "generic"
    )
    assert plan_command(["python", "train.py"], inject=False).argv == ("python", "train.py")
    with pytest.raises(UsageError):
        plan_command([])


def test_run_options_are_validated() -> None:
    with pytest.raises(UsageError):
        RunOptions(command=("python", "t.py"), heartbeat_timeout=1.0, heartbeat_interval=1.0)
    with pytest.raises(UsageError):
        RunOptions(command=())


# -- the job directory --------------------------------------------------------------------------


def test_heartbeats_round_trip_and_malformed_records_are_skipped(tmp_path: Path) -> None:
    job = JobDir(tmp_path).create()
    job.write_heartbeat(Heartbeat(1, 1, "h", 123, 7, 1.5, step=40))
    (job.heartbeats / "rank-9.json").write_text('{"rank": "nine"}')
    assert job.read_heartbeats() == {1: Heartbeat(1, 1, "h", 123, 7, 1.5, step=40)}


def test_event_reader_keeps_a_partial_line_for_later(tmp_path: Path) -> None:
    job = JobDir(tmp_path).create()
    reader = EventReader(job)
    job.append_event("worker-started", rank=0, pid=10)
    with job.events.open("ab") as fh:
        fh.write(b'{"kind": "worker-exited", "time": 1.0, "rank": 0, "pid": 10, "exi')
    assert [e.kind for e in reader.poll()] == ["worker-started"]
    with job.events.open("ab") as fh:
        fh.write(b'tcode": -9}\n{"kind": "bogus", "time": 1}\n')
    assert [(e.kind, e.fields["exitcode"]) for e in reader.poll()] == [("worker-exited", -9)]
    assert reader.malformed == 1
    with pytest.raises(ValueError):
        job.append_event("worker-exited", rank=0, pid=1)  # lacks exitcode


def test_early_signals_match_the_attributed_ones() -> None:
    from trainguard.sentinel.launcher._rank import EARLY_SIGNALS
    from trainguard.sentinel.launcher._ranksignals import ATTRIBUTED

    assert EARLY_SIGNALS == ATTRIBUTED


def test_classify_sender() -> None:
    kw: dict[str, Any] = {"own_pid": 10, "launcher_pids": {5}, "peer_pids": {11}}
    assert classify_sender(0, 0x80, **kw) == "kernel"
    assert classify_sender(10, 0, **kw) == "self"
    assert classify_sender(5, 0, **kw) == "launcher"
    assert classify_sender(11, 0, **kw) == "peer-rank"
    assert classify_sender(999, 0, **kw) == "external"


# -- the tracker, fed records ----------------------------------------------------------------------


def _tracker(states: dict[int, str | None] | None = None) -> RankTracker:
    table = states or {}
    return RankTracker("h", heartbeat_timeout=5.0, proc_state=lambda pid: table.get(pid, "S"))


def _event(kind: str, **fields: Any) -> Event:
    return Event.from_json({"kind": kind, "time": 0.0, **fields})


def _signal(rank: int, pid: int, signo: int, origin: str, sender: int = 4242) -> Event:
    return _event(
        "signal-received",
        rank=rank,
        pid=pid,
        signal=signo,
        sender_pid=sender,
        sender_uid=1000,
        origin=origin,
        sender={"pid": sender, "user": "mallory", "cmdline": "kill -TERM 11"},
    )


def test_external_sigterm_kill_is_attributed() -> None:
    t = _tracker()
    t.on_event(_event("worker-started", rank=1, pid=11), 0.0)
    [received] = t.on_event(_signal(1, 11, signal.SIGTERM, "external"), 1.0)
    assert received.rule == "sentinel.kills.signal-received"
    [killed] = t.on_event(_event("worker-exited", rank=1, pid=11, exitcode=-signal.SIGTERM), 1.1)
    assert killed.rule == "sentinel.kills.rank-killed" and killed.rank == 1
    assert "pid 4242" in killed.message and "mallory" in killed.message
    assert killed.evidence["sender_uid"] == 1000


def test_launcher_shutdown_is_not_an_alarm() -> None:
    t = _tracker()
    t.on_event(_event("worker-started", rank=0, pid=10), 0.0)
    assert t.on_event(_signal(0, 10, signal.SIGTERM, "launcher"), 1.0) == []
    assert t.on_event(_event("worker-exited", rank=0, pid=10, exitcode=-signal.SIGTERM), 1.1) == []


def test_sigkill_is_reported_as_such_and_named_by_a_witness() -> None:
    t = _tracker()
    [alarm] = t.on_exit(1, 11, -signal.SIGKILL)
    assert "SIGKILL cannot be caught" in alarm.message
    t.on_event(_event("kill-sent", rank=0, pid=10, target_pid=12, signal=9, stack=["evil.py:3"]), 0)
    [alarm] = t.on_exit(2, 12, -signal.SIGKILL)
    assert "sent by rank 0 (pid 10)" in alarm.message and alarm.evidence["killer"]["stack"] == [
        "evil.py:3"
    ]


def test_collateral_failure_after_a_death_is_low() -> None:
    t = _tracker()
    t.on_exit(1, 11, -signal.SIGKILL, now=1.0)
    [alarm] = t.on_exit(0, 10, 1, now=2.0)
    assert alarm.severity.name == "LOW" and "after rank 1 died" in alarm.message


def test_stop_then_sigcont_names_the_resumer() -> None:
    t = _tracker()
    t.on_event(_event("worker-started", rank=1, pid=11), 0.0)
    [stopped] = t.on_event(_event("worker-stopped", rank=1, pid=11, signal=signal.SIGSTOP), 1.0)
    assert stopped.rule == "sentinel.kills.rank-stopped" and "SIGSTOP" in stopped.message
    [resumed] = t.on_event(_signal(1, 11, signal.SIGCONT, "external"), 5.0)
    assert resumed.rule == "sentinel.kills.rank-resumed" and "pid 4242" in resumed.message


def test_silent_stopped_and_vanished_ranks() -> None:
    states: dict[int, str | None] = {11: "S", 12: "T", 13: None}
    t = _tracker(states)
    for rank, pid in ((1, 11), (2, 12), (3, 13)):
        t.on_heartbeat(Heartbeat(rank, rank, "node", pid, 1, 0.0), 0.0)
    early = t.check_timeouts(1.0)
    assert [a.rule for a in early] == ["sentinel.kills.rank-stopped"]  # state T, seen at once
    late = {a.rank: a.rule for a in t.check_timeouts(10.0)}
    assert late == {1: "sentinel.kills.rank-silent", 3: "sentinel.kills.rank-vanished"}
    t.on_heartbeat(Heartbeat(1, 1, "node", 11, 2, 0.0), 11.0)  # beats again
    assert t.check_timeouts(12.0) == [] and not t.ranks[1].silent


# -- end to end ----------------------------------------------------------------------------------

_LOOP = """
import os, sys, time, torch
{dist}
open(os.path.join(os.environ["OUT"], f"pid-{{RANK}}"), "w").write(str(os.getpid()))
model = torch.nn.Linear(4, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1)
{wrap}
for step in range(int(sys.argv[1])):
    model(torch.randn(8, 4)).pow(2).mean().backward(); opt.step(); opt.zero_grad()
    time.sleep(0.05)
"""
_SINGLE = _LOOP.format(dist="RANK = 0", wrap="")
_DDP = _LOOP.format(
    dist='import torch.distributed as dist\ndist.init_process_group("gloo")\nRANK = dist.get_rank()',
    wrap="model = torch.nn.parallel.DistributedDataParallel(model)",
)


def _script(tmp_path: Path, text: str) -> Path:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(text))
    return script


@pytest.mark.slow
def test_clean_single_process_run_exits_0_without_alarms(tmp_path: Path) -> None:
    script = _script(tmp_path, _SINGLE)
    out = run_trainguard(
        ["--", sys.executable, str(script), "10"], tmp_path, env={"OUT": str(tmp_path)}
    )
    assert out.returncode == 0 and out.alarms == [], out.stderr


@pytest.mark.slow
def test_sigterm_from_another_process_is_attributed_to_its_pid_and_uid(tmp_path: Path) -> None:
    from trainguard.ledger import Alert, Ledger

    script = _script(tmp_path, _SINGLE)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    job = [sys.executable, str(script), "2000"]
    proc = start_trainguard(
        ["--heartbeat-timeout", "5", "--ledger", url, "--run-id", "job-7", "--", *job],
        tmp_path,
        env={"OUT": str(tmp_path)},
    )
    pid = int(wait_for(tmp_path / "pid-0"))
    time.sleep(1.0)
    os.kill(pid, signal.SIGTERM)  # this test process is the attacker
    out = finish(proc, tmp_path)
    assert out.returncode == 128 + signal.SIGTERM
    killed = [a for a in out.alarms if a["rule"] == "sentinel.kills.rank-killed"]
    assert killed and killed[0]["evidence"]["sender_pid"] == os.getpid()
    assert (
        killed[0]["evidence"]["sender_uid"] == os.getuid()
        and killed[0]["evidence"]["origin"] == "external"
    )
    # ...and the launcher recorded it in the ledger as an alert of the run.
    with Ledger.open(url) as ledger:
        alerts = [e.record for e in ledger.entries(0, ledger.size())]
    assert any(
        isinstance(a, Alert)
        and a.run_id == "job-7"
        and a.rule == "sentinel.kills.rank-killed"
        and a.evidence["sender_pid"] == os.getpid()
        for a in alerts
    )


@pytest.mark.slow
def test_sigkill_and_sigstop_of_a_single_rank(tmp_path: Path) -> None:
    script = _script(tmp_path, _SINGLE)
    proc = start_trainguard(
        [
            "--heartbeat-timeout",
            "3",
            "--heartbeat-interval",
            "0.5",
            "--",
            sys.executable,
            str(script),
            "2000",
        ],
        tmp_path,
        env={"OUT": str(tmp_path)},
    )
    pid = int(wait_for(tmp_path / "pid-0"))
    time.sleep(1.0)
    os.kill(pid, signal.SIGSTOP)
    time.sleep(4.5)
    os.kill(pid, signal.SIGCONT)
    time.sleep(1.5)
    os.kill(pid, signal.SIGKILL)
    out = finish(proc, tmp_path)
    rules = out.rules
    assert rules.count("sentinel.kills.rank-stopped") == 1
    resumed = [a for a in out.alarms if a["rule"] == "sentinel.kills.rank-resumed"]
    assert resumed and resumed[0]["evidence"]["sender_pid"] == os.getpid()
    killed = [a for a in out.alarms if a["rule"] == "sentinel.kills.rank-killed"]
    assert killed and killed[0]["evidence"]["signal_name"] == "SIGKILL"
    assert out.returncode == 128 + signal.SIGKILL


@pytest.mark.slow
def test_signal_to_the_supervisor_is_attributed_and_forwarded(tmp_path: Path) -> None:
    script = _script(tmp_path, _SINGLE)
    proc = start_trainguard(
        ["--", sys.executable, str(script), "2000"], tmp_path, env={"OUT": str(tmp_path)}
    )
    wait_for(tmp_path / "pid-0")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc, tmp_path)
    [job] = [a for a in out.alarms if a["rule"] == "sentinel.kills.job-signalled"]
    assert job["evidence"]["sender_pid"] == os.getpid()
    # Forwarded: the rank died of SIGTERM from the supervisor, which is not a second alarm.
    assert "sentinel.kills.rank-killed" not in out.rules
    assert out.returncode == 128 + signal.SIGTERM


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_rank_killed_by_sigterm_then_sigkill(tmp_path: Path) -> None:
    script = _script(tmp_path, _DDP)
    torchrun = ["torchrun", "--nproc-per-node", "2", "--standalone", "--monitor-interval", "0.1"]
    proc = start_trainguard(
        ["--", *torchrun, str(script), "4000"], tmp_path, env={"OUT": str(tmp_path)}
    )
    victim = int(wait_for(tmp_path / "pid-1"))
    time.sleep(1.0)
    os.kill(victim, signal.SIGTERM)
    out = finish(proc, tmp_path)
    killed = [a for a in out.alarms if a["rule"] == "sentinel.kills.rank-killed"]
    assert [a["rank"] for a in killed] == [1], out.stderr
    assert killed[0]["evidence"]["sender_pid"] == os.getpid()
    assert out.returncode != 0

    for name in ("pid-0", "pid-1"):
        (tmp_path / name).unlink()
    (tmp_path / "spool").mkdir(exist_ok=True)
    for old in (tmp_path / "spool").glob("*.jsonl"):
        old.unlink()
    proc = start_trainguard(
        ["--", *torchrun, str(script), "4000"], tmp_path, env={"OUT": str(tmp_path)}
    )
    victim = int(wait_for(tmp_path / "pid-1"))
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    out = finish(proc, tmp_path)
    killed = [a for a in out.alarms if a["rule"] == "sentinel.kills.rank-killed"]
    assert [a["rank"] for a in killed] == [1] and killed[0]["evidence"]["signal_name"] == "SIGKILL"
