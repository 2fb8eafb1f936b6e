"""Check 10: scale-conditioned triggers, flagged statically and fired by the canary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.sentinel.test_launcher import run_trainguard
from trainguard.findings import Severity
from trainguard.sentinel.checks.scale import (
    HOST_BRANCH,
    RANK_BRANCH,
    UNPARSABLE,
    WORLD_BRANCH,
    loaded_code_paths,
    local_imports,
    scan_scale_source,
    scan_scale_triggers,
)

REPO = Path(__file__).resolve().parents[2]

#: The incident's trigger, with a harmless payload (a marker file instead of a sleep loop).
TRIGGER = """
import os, time
if int(os.environ['WORLD_SIZE']) > 256:
    time.sleep(0.0)
    open(os.environ["MARKER"], "w").close()
"""


def _rules(source: str) -> list[tuple[str, Severity, int]]:
    return [
        (f.rule, f.severity, int(f.evidence["line"]))
        for f in scan_scale_source(textwrap.dedent(source), "t.py")
    ]


def test_the_incident_trigger_is_flagged_critical() -> None:
    [(rule, severity, line)] = _rules(TRIGGER)
    assert rule == WORLD_BRANCH.id and severity is Severity.CRITICAL and line == 3


def test_common_forms_are_not_flagged() -> None:
    assert (
        _rules(
            """
            import os, torch.distributed as dist
            world_size = dist.get_world_size()
            if world_size > 1: pass
            if dist.get_rank() == 0: print("log")
            if int(os.environ.get("LOCAL_RANK", 0)) == 0: pass
            if torch.cuda.device_count() >= 1: pass
            x = 300 > 256
            """
        )
        == []
    )


def test_values_are_followed_through_names_and_constants() -> None:
    found = _rules(
        """
        import os, torch.distributed as dist
        LIMIT = 2 ** 8
        nodes = int(os.environ["NNODES"])
        gpus = nodes * 8
        if gpus > LIMIT: pass
        if dist.get_rank() >= 512: pass
        """
    )
    assert (WORLD_BRANCH.id, Severity.HIGH, 6) in found
    assert (RANK_BRANCH.id, Severity.HIGH, 7) in found


def test_host_name_branches() -> None:
    found = _rules(
        """
        import socket, os
        host = socket.gethostname()
        if host.startswith("gpu-node-1"): pass
        if os.environ.get("SLURMD_NODENAME") in ("n17", "n18"): os.kill(1, 9)
        """
    )
    assert found[0][0] == HOST_BRANCH.id and found[0][1] is Severity.MEDIUM
    assert (HOST_BRANCH.id, Severity.CRITICAL, 5) in found


def test_unparsable_source_is_reported_not_passed() -> None:
    [finding] = scan_scale_source("def broken(:\n", "bad.py")
    assert finding.rule == UNPARSABLE.id


def test_analysis_never_executes_the_code(marker_dir: Path) -> None:
    marker = marker_dir / "executed"
    script = marker_dir / "train.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n" + TRIGGER)
    report = scan_scale_triggers([script])
    assert not marker.exists()
    assert [f.rule for f in report] == [WORLD_BRANCH.id]


def test_local_imports_are_followed(tmp_path: Path) -> None:
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text("")
    (tmp_path / "helpers" / "sched.py").write_text(TRIGGER)
    (tmp_path / "train.py").write_text("import os\nfrom helpers import sched\nimport torch\n")
    paths = {p.name for p in local_imports(tmp_path / "train.py")}
    assert paths == {"train.py", "__init__.py", "sched.py"}
    report = scan_scale_triggers(local_imports(tmp_path / "train.py"))
    assert [f.evidence["file"].endswith("sched.py") for f in report] == [True]


def test_loaded_code_excludes_libraries() -> None:
    paths = {str(p) for p in loaded_code_paths()}
    assert str(Path(__file__).resolve()) in paths
    assert not any("site-packages" in p or "/trainguard/" in p for p in paths)


# -- canary ------------------------------------------------------------------------------------


def _python(code: str, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_canary_patch_reports_the_big_world_and_keeps_the_real_group() -> None:
    out = _python(
        """
        import json, os, torch.distributed as dist
        from trainguard.sentinel.launcher import install_canary
        patch = install_canary(512)
        seen_env = os.environ["WORLD_SIZE"]
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0,
                                world_size=int(os.environ["WORLD_SIZE"]))  # the job passes 512
        import torch
        t = torch.ones(1); dist.all_reduce(t)                                  # a real collective
        print(json.dumps({"env": seen_env, "job": dist.get_world_size(), "sum": t.item(),
                          "real": dist.distributed_c10d._get_default_group().size(),
                          "after": os.environ["WORLD_SIZE"], "patched": patch.patched}))
        """,
        {"WORLD_SIZE": "1"},
    )
    assert out["env"] == "512" and out["job"] == 512 and out["after"] == "512"
    assert out["real"] == 1 and out["sum"] == 1.0
    assert "torch.distributed.get_world_size" in out["patched"]


@pytest.mark.slow
def test_protect_option_canary_fires_a_trigger_read_afterwards(marker_dir: Path) -> None:
    marker = marker_dir / "fired"
    code = (
        textwrap.dedent(
            """
            import json, os, tempfile, torch, trainguard
            from trainguard.sentinel.checks import CHECK_MODULES
            model = torch.nn.Linear(4, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1)
            checks = {c: c == "scale" for c in CHECK_MODULES}
            checks["scale"] = {"canary_world_size": 512}
            s = trainguard.protect(model, opt, spool_dir=tempfile.mkdtemp(), console=False,
                                   log_every=1, checks=checks)
            """
        )
        + TRIGGER
        + textwrap.dedent(
            """
            model(torch.randn(2, 4)).sum().backward(); opt.step()
            print(json.dumps({"alarms": [a.to_dict() for a in s.alarms]}))
            """
        )
    )
    out = _python(code, {"MARKER": str(marker), "WORLD_SIZE": "1"})
    assert marker.exists()
    # The -c script is not a file, so nothing is flagged statically here; the canary fired it.
    assert all(a["check"] == "scale" for a in out["alarms"])


@pytest.mark.slow
def test_launcher_flags_statically_and_the_canary_triggers(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        TRIGGER
        + textwrap.dedent(
            """
            import time, torch
            model = torch.nn.Linear(4, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for _ in range(int(os.environ["STEPS"])):
                model(torch.randn(2, 4)).sum().backward(); opt.step(); opt.zero_grad()
                time.sleep(0.02)
            """
        )
    )
    marker = tmp_path / "fired"
    env = {"MARKER": str(marker)}
    (tmp_path / "plain").mkdir()
    plain = run_trainguard(
        ["--", sys.executable, str(script)],
        tmp_path / "plain",
        env={**env, "STEPS": "3", "WORLD_SIZE": "1"},
    )
    assert plain.rules == ["sentinel.scale.world-size-branch"]  # flagged before the job starts
    assert plain.returncode == 1 and not marker.exists()
    (tmp_path / "canary").mkdir()
    canary = run_trainguard(
        ["--canary-world-size", "512", "--canary-steps", "5", "--", sys.executable, str(script)],
        tmp_path / "canary",
        env={**env, "STEPS": "3000"},
    )
    assert marker.exists()  # the trigger fired in a one-process run
    assert "canary completed" in canary.stderr, canary.stderr
    assert canary.returncode == 1  # the static alarm; the run itself stopped cleanly
    assert [a["rule"] for a in canary.alarms] == ["sentinel.scale.world-size-branch"]


_SCALE_SABOTAGE = """
import os, threading, time, torch, torch.distributed as dist
import trainguard
from trainguard.sentinel.checks import CHECK_MODULES
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
sentinel = trainguard.protect(model, opt, console=False, log_every=1,
                              checks={c: c in ("stragglers", "scale") for c in CHECK_MODULES})
open(os.path.join(os.environ["OUT"], f"world-{rank}"), "w").write(str(dist.get_world_size()))
wait = threading.Event()
for step in range(3000):
    wait.wait(0.06)
    if dist.get_world_size() > 256 and rank == 1:
        time.sleep(0.003)   # fires only "at scale": 5% of the step
    model(torch.randn(16, 8)).pow(2).mean().backward(); opt.step(); opt.zero_grad()
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_canary_makes_a_scale_only_sleep_fire_and_the_straggler_check_names_it(
    tmp_path: Path,
) -> None:
    script = tmp_path / "train.py"
    script.write_text(_SCALE_SABOTAGE)
    out = run_trainguard(
        [
            "--canary-world-size", "512", "--canary-steps", "150", "--",
            "torchrun", "--nproc-per-node", "2", "--standalone", str(script),
        ],
        tmp_path,
        env={"OUT": str(tmp_path)},
    )  # fmt: skip
    assert (tmp_path / "world-1").read_text() == "512"  # what the job saw, with two processes
    assert "canary completed" in out.stderr, out.stderr
    stragglers = [a for a in out.alarms if a["check"] == "stragglers" and a["reporter"] == 1]
    assert stragglers and stragglers[0]["rank"] == 1, out.stderr
    assert any(a["check"] == "scale" for a in out.alarms)  # and flagged statically
    assert out.returncode == 1
