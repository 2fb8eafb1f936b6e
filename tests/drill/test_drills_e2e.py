"""Every drill end to end: a real 2-rank job under ``trainguard run``, the attack, the verdict.

These are the project's end-to-end tests: each runs torchrun with two gloo ranks
on CPU (about 10-25 s of two CPUs each) and asserts that the attack was caught
by the check the issue names, within its bound, with the evidence that says so.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from trainguard.drill import DrillResult, run_drills

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

#: Checks of the sentinel (in the ranks) and of the launcher (``kills``, ``scale``).
IN_JOB = {"updates", "weights", "census", "rng", "stragglers", "replicas", "anomaly", "audit"}
IN_JOB |= {"kills", "scale"}


def drill(name: str, tmp_path: Path) -> DrillResult:
    (result,) = run_drills([name], workdir=tmp_path)
    assert result.error is None, result.error
    return result


def caught(result: DrillResult, *checks: str, bound: int) -> dict[str, Any]:
    """The result is a detection by every one of ``checks``, each within ``bound`` steps."""
    assert result.detected, result.evidence
    assert set(checks) <= set(result.checks), result.checks
    assert result.steps_to_detection is not None and result.steps_to_detection <= bound
    firsts = result.evidence["first_step_by_check"]
    for check in checks:
        assert firsts[check] - result.evidence["attack_step"] <= bound, (check, firsts)
    if set(checks) & IN_JOB:
        # What the sentinel or the launcher caught is in the ledger, as alerts of the run.
        assert result.evidence.get("ledger_alerts", 0) >= 1, result.evidence
    assert result.ok
    return dict(result.evidence)


def test_control_raises_no_alarm(tmp_path: Path) -> None:
    r = drill("control", tmp_path)
    assert r.control and r.ok
    assert not r.detected and r.checks == () and r.also == ()
    assert r.evidence.get("ledger_alerts") == 0


def test_pickle_checkpoint_is_refused_and_its_payload_never_runs(tmp_path: Path) -> None:
    r = drill("pickle-checkpoint", tmp_path)
    ev = caught(r, "scan", bound=0)
    assert ev["rule"] == "pickle.dangerous-global"
    assert r.marker_fired is False
    # ...and the same file, loaded the old way in a throwaway interpreter, does run it.
    assert ev["naive_torch_load_runs_payload"] is True


def test_edited_torch_is_caught_before_the_job_and_again_at_the_flipped_step(
    tmp_path: Path,
) -> None:
    r = drill("edited-torch", tmp_path)
    ev = caught(r, "preflight", "updates", bound=0)
    assert ev["rule"] == "env.record-mismatch"
    assert ev["details"]["subject"].endswith("torch/optim/adam.py")
    assert ev["first_step_by_check"] == {"preflight": 0, "updates": 8}
    # The original environment is untouched: only the throwaway copy was edited.
    adam = importlib.import_module("torch.optim.adam")
    assert adam.__file__ is not None
    assert "step <= 8 else" not in Path(adam.__file__).read_text()


def test_signflip_monkey_patch_is_caught_by_the_update_check(tmp_path: Path) -> None:
    ev = caught(drill("signflip-patch", tmp_path), "updates", bound=1)
    assert ev["rule"] == "sentinel.update-mismatch"
    assert ev["details"]["verdict"] == "sign flipped"


def test_signflip_global_hook_is_caught_by_census_and_weights(tmp_path: Path) -> None:
    ev = caught(drill("signflip-hook", tmp_path), "census", "weights", bound=1)
    assert ev["rule"] == "sentinel.hook-installed"
    assert "_global_optimizer_" in ev["details"]["registry"]


def test_lr_behind_the_scheduler(tmp_path: Path) -> None:
    ev = caught(drill("lr-behind-scheduler", tmp_path), "updates", bound=1)
    assert ev["rule"] == "sentinel.lr-tampered"
    assert ev["details"]["lr"] == pytest.approx(10 * ev["details"]["scheduler_lr"][0])


def test_weights_edited_from_another_thread(tmp_path: Path) -> None:
    r = drill("weights-thread", tmp_path)
    ev = caught(r, "weights", bound=1)
    assert ev["rank"] == 1
    assert ev["details"]["tensors"] == ["blocks.0.mlp.0.weight"]
    assert "replicas" in r.also  # the edited replica also differs from its peer


def test_checkpoint_edited_between_save_and_load(tmp_path: Path) -> None:
    ev = caught(drill("checkpoint-edit", tmp_path), "ledger", bound=1)
    assert ev["rule"] == "ledger.unknown-provenance"
    details = ev["details"]
    assert details["loaded_digest"] != details["saved_digest"]


def test_rng_reseed(tmp_path: Path) -> None:
    ev = caught(drill("rng-reseed", tmp_path), "rng", bound=1)
    assert ev["rank"] == 1
    assert ev["rule"] == "sentinel.rng-reseeded"


def test_random_sleeps_name_the_sleeping_rank(tmp_path: Path) -> None:
    ev = caught(drill("sleep-rank", tmp_path), "stragglers", bound=20)
    assert ev["rank"] == 1 == ev["sleeping_rank"]


def test_killed_rank_names_the_sending_process(tmp_path: Path) -> None:
    r = drill("kill-rank", tmp_path)
    ev = caught(r, "kills", bound=2)
    assert ev["sender_named"] is True
    assert ev["details"]["sender_pid"] == ev["helper_pid"]
    assert ev["rank"] == 1


def test_scale_trigger_is_flagged_and_fires_in_the_canary(tmp_path: Path) -> None:
    ev = caught(drill("scale-trigger", tmp_path), "scale", bound=0)
    assert ev["rule"] == "sentinel.scale.world-size-branch"
    assert ev["details"]["file"].endswith("tuning.py")
    assert ev["trigger_fired_in_canary"] is True
    assert (ev["world_size_seen_by_job_code"], ev["real_world_size"]) == (512, 2)


def test_pth_backdoor_is_blocked_before_the_job_starts(tmp_path: Path) -> None:
    r = drill("pth-backdoor", tmp_path)
    ev = caught(r, "preflight", bound=0)
    assert ev["rule"] == "env.pth-exec"
    assert ev["job"].startswith("not started")
    assert r.marker_fired is False
    assert ev["payload_runs_at_interpreter_start"] is True
