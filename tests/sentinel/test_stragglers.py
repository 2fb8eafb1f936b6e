"""Check 5: stragglers and injected sleeps.

Unit tests feed the statistics synthetic timelines; the distributed tests inject
exactly the attack (a sleep of 5% of the step time on one rank of two) into a
real two-rank gloo DDP job and expect that rank and its host to be named within
20 steps, and no alarm at all in a clean run of a few hundred steps.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.sentinel._util import alarm_rows, batch, quiet, run_ranks, tiny_model
from trainguard.sentinel.checks._sleepaudit import SleepAudit, call_site
from trainguard.sentinel.checks._stragglerstats import (
    BOUNDARIES,
    StragglerDetector,
    StragglerParams,
)

REPO = Path(__file__).resolve().parents[2]
STEP = 0.1  # synthetic step time, seconds
BASE = (0.01, 0.03, 0.05, 0.09)  # boundary offsets of a clean step


def _timeline(
    seed: int,
    *,
    world: int = 2,
    steps: int = 400,
    culprit: int = 1,
    onset: int | None = None,
    sleep: float = 0.05,
    prob: float = 1.0,
    spread: float = 0.0,
    boundary: int = 1,
    noise: float = 0.01,
) -> tuple[int, list[int], str] | None:
    """Run the detector on a synthetic job; (step, ranks, boundary) of the first verdict."""
    rng = random.Random(seed)
    detector = StragglerDetector(world)
    for step in range(steps):
        rows = []
        for rank in range(world):
            row = [b + rng.gauss(0, noise * STEP) for b in BASE]
            # Rare jitter spikes (GC, a busy neighbour) on any rank.
            if rng.random() < 0.03:
                row[rng.randrange(4)] += rng.expovariate(1 / (0.03 * STEP))
            if onset is not None and step >= onset and rank == culprit and rng.random() < prob:
                # Late from the boundary after the sleep until the next collective.
                extra = sleep * STEP * (1 + spread * (2 * rng.random() - 1))
                for k in range(boundary, 3):
                    row[k] += extra
            rows.append(row)
        verdicts = detector.update(step, rows, STEP * (1 + rng.gauss(0, 0.01)))
        if verdicts:
            return step, [v.rank for v in verdicts], verdicts[0].boundary
    return None


@pytest.mark.parametrize("seed", range(8))
def test_clean_timeline_raises_nothing(seed: int) -> None:
    assert _timeline(seed) is None


@pytest.mark.parametrize("seed", range(6))
def test_persistent_sleep_of_5_percent_named_within_20_steps(seed: int) -> None:
    found = _timeline(seed, onset=60)
    assert found is not None
    step, ranks, boundary = found
    assert ranks == [1] and step - 60 < 20
    assert boundary == BOUNDARIES[1]  # the data wait / host gap, where the sleep was


@pytest.mark.parametrize("seed", range(4))
def test_random_sleeps_on_most_steps_are_detected(seed: int) -> None:
    # Random sleeps: on 70% of the steps, 5% +- 2.5% of the step time.
    found = _timeline(seed, onset=60, sleep=0.05, prob=0.7, spread=0.5)
    assert found is not None and found[1] == [1] and found[0] - 60 < 20


def test_rare_large_spikes_are_not_a_straggler() -> None:
    # A busy host: one rank descheduled for 30% of a step now and then. The median
    # guard keeps this from alarming (documented: rare long sleeps are the job of
    # the time.sleep audit on Python 3.13+).
    for seed in range(4):
        assert _timeline(seed, onset=60, sleep=0.3, prob=0.15) is None


def test_sleep_in_forward_is_located_in_forward() -> None:
    found = _timeline(3, onset=60, boundary=2)
    assert found is not None and found[1] == [1] and found[2] == BOUNDARIES[2]


def test_sleep_present_from_the_first_step_is_not_learnt_as_normal() -> None:
    params = StragglerParams()
    found = _timeline(1, onset=0)
    assert found is not None and found[1] == [1]
    assert found[0] < params.warmup + params.calibration + 20


def test_culprit_named_among_eight_ranks() -> None:
    found = _timeline(5, world=8, culprit=6, onset=60)
    assert found is not None and found[1] == [6]


def test_victims_are_never_named() -> None:
    for seed in range(4):
        found = _timeline(seed, onset=60, culprit=0)
        assert found is not None and found[1] == [0]


def test_one_slow_step_alone_does_not_trigger() -> None:
    detector = StragglerDetector(2)
    rows = [list(BASE), list(BASE)]
    for step in range(200):
        slow = [list(BASE), [b + (5 * STEP if step == 100 else 0.0) for b in BASE]]
        assert detector.update(step, slow if step == 100 else rows, STEP) == []


def test_verdict_evidence() -> None:
    detector = StragglerDetector(2)
    verdict = None
    for step in range(200):
        late = [b + (0.1 * STEP if step >= 60 and 1 <= k < 3 else 0) for k, b in enumerate(BASE)]
        out = detector.update(step, [list(BASE), late], STEP)
        if out:
            verdict = out[0]
            break
    assert verdict is not None
    assert verdict.rank == 1 and verdict.excess_s == pytest.approx(0.1 * STEP, rel=0.2)
    assert verdict.lateness_s[BOUNDARIES[1]] > 0 and verdict.cusum >= verdict.threshold


def test_peer_stall_inside_the_episode_does_not_hide_the_culprit() -> None:
    # Rank 0 stalls for five steps (a checkpoint) while rank 1's sleep is building up:
    # rank 1 is then early by five steps at every boundary once. Its verdict still
    # names the data wait and the sleep's size (the mean of the episode was negative
    # everywhere, and locating the boundary raised StopIteration).
    detector = StragglerDetector(2)
    verdict = None
    for step in range(120):
        late = [b + (0.1 * STEP if step >= 60 and 1 <= k < 3 else 0) for k, b in enumerate(BASE)]
        peer = [b + (5 * STEP if step == 65 else 0) for b in BASE]
        out = detector.update(step, [peer, late], STEP)
        if out:
            verdict = out[0]
            break
    assert verdict is not None and verdict.rank == 1
    assert verdict.boundary == BOUNDARIES[1]
    assert verdict.excess_s == pytest.approx(0.1 * STEP, rel=0.2)


def test_invalid_parameters_and_world() -> None:
    with pytest.raises(ValueError):
        StragglerParams(calibration=2)
    with pytest.raises(ValueError):
        StragglerDetector(1)
    with pytest.raises(ValueError):
        StragglerDetector(2).update(0, [list(BASE)], STEP)


# -- time.sleep attribution (the audit event exists on 3.13+; the logic is fed here) ------------


def test_sleep_audit_names_the_call_site() -> None:
    audit = SleepAudit(fraction=0.02, window=8, cooldown=100)
    verdict = None
    for step in range(8):
        audit.on_sleep(0.005, "train.py:42 in main")
        verdict = audit.end_step(step, 0.1) or verdict
    assert verdict is not None
    assert verdict.fraction == pytest.approx(0.05) and "train.py:42 in main" in verdict.sites


def test_sleep_audit_one_short_sleep_is_not_a_pattern_one_long_one_is() -> None:
    audit = SleepAudit(fraction=0.02, window=8, cooldown=100, thread=threading.get_ident())
    audit.on_sleep(0.05, "retry.py:1 in backoff")  # half a step, once
    assert [audit.end_step(step, 0.1) for step in range(16)] == [None] * 16
    audit.on_sleep(5.0, "evil.py:9 in stall")  # fifty steps' worth, once
    verdict = audit.end_step(16, 0.1)
    assert verdict is not None and "evil.py:9 in stall" in verdict.sites


def test_sleep_audit_ignores_other_threads() -> None:
    other = SleepAudit(fraction=0.02, window=2, cooldown=0, thread=-1)
    other._listener("time.sleep", (1.0,))  # not the training thread
    assert other.end_step(0, 0.1) is None and other.end_step(1, 0.1) is None


def test_call_site_skips_trainguard_and_stdlib() -> None:
    import sys

    site = call_site(sys._getframe())
    assert site.startswith(__file__) and "test_call_site_skips_trainguard_and_stdlib" in site


# -- distributed: the real attack on two gloo ranks -------------------------------------------------


def _ddp_job(
    rank: int, world: int, steps: int, onset: int | None, fraction: float, prob: float = 1.0
) -> dict[str, Any]:
    import trainguard
    from trainguard.sentinel.checks import CHECK_MODULES

    model = torch.nn.parallel.DistributedDataParallel(tiny_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    checks: dict[str, Any] = {c: c == "stragglers" for c in CHECK_MODULES}
    checks["census"] = {"enabled": False}
    sentinel = trainguard.protect(model, opt, **quiet(log_every=10, others=True, checks=checks))
    wait = threading.Event()
    rng = random.Random(rank)
    data_time = 0.06  # the data loader: a wait, so CPU contention barely moves it
    for step in range(steps):
        wait.wait(data_time)
        if rank == 1 and onset is not None and step >= onset and rng.random() < prob:
            time.sleep(
                fraction * data_time * rng.uniform(0.75, 1.25) if prob < 1 else fraction * data_time
            )
        x, y = batch(step, rank)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    alarms = alarm_rows(sentinel.alarms)
    sentinel.close()
    return {"alarms": alarms, "host": sentinel.ctx.host}


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_sleep_of_5_percent_on_rank_1_named_within_20_steps() -> None:
    onset = 60
    results = run_ranks(_ddp_job, 110, onset, 0.05)
    own = [a for a in results[1]["alarms"] if a["check"] == "stragglers" and a["reporter"] == 1]
    assert own, results
    first = min(own, key=lambda a: a["step"])
    assert first["rank"] == 1 and first["host"] == results[1]["host"]
    assert onset <= first["evidence"]["step_detected"] < onset + 20
    assert first["evidence"]["late_at"] == BOUNDARIES[1]
    # The victim sees the core's peer alarm naming rank 1, never itself.
    peer = [a for a in results[0]["alarms"] if a["check"] == "stragglers"]
    assert peer and all(a["rank"] == 1 for a in peer)


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_random_sleeps_on_rank_1_are_named() -> None:
    onset = 60
    results = run_ranks(_ddp_job, 110, onset, 0.08, 0.75)
    own = [a for a in results[1]["alarms"] if a["check"] == "stragglers" and a["reporter"] == 1]
    assert own and own[0]["rank"] == 1, results
    assert own[0]["evidence"]["step_detected"] < onset + 30


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_clean_run_of_300_steps_raises_no_alarm() -> None:
    results = run_ranks(_ddp_job, 300, None, 0.0)
    assert [r["alarms"] for r in results] == [[], []]


PY313 = Path("/root/.pyenv/versions/3.13.0/bin/python")
_SLEEP_313 = """
import importlib.util, json, sys, threading, time, types
import trainguard.errors
# torch is not installed for this interpreter: load the two torch-free modules by path,
# under stub parent packages.
for name in ("trainguard.sentinel", "trainguard.sentinel.checks"):
    sys.modules[name] = types.ModuleType(name)
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
base = sys.argv[1]
hook = load("trainguard.sentinel.checks._audithook", base + "/_audithook.py")
sys.modules["trainguard.sentinel.checks"]._audithook = hook
audit_mod = load("trainguard.sentinel.checks._sleepaudit", base + "/_sleepaudit.py")
audit = audit_mod.SleepAudit(fraction=0.02, window=8, cooldown=100)
assert audit.subscribe()
def training_step():
    time.sleep(0.004)        # the injected sleep, line 21 of this script
verdict = None
for step in range(8):
    threading.Thread(target=time.sleep, args=(0.01,)).start()   # another thread: ignored
    training_step()
    verdict = audit.end_step(step, 0.05) or verdict
print(json.dumps({"fraction": verdict.fraction, "sites": verdict.sites}))
"""


@pytest.mark.skipif(not PY313.exists(), reason="needs a Python 3.13 interpreter")
def test_time_sleep_audit_event_on_python_313(tmp_path: Path) -> None:
    script = tmp_path / "sleepy.py"
    script.write_text(_SLEEP_313)
    proc = subprocess.run(
        [str(PY313), str(script), str(REPO / "src/trainguard/sentinel/checks")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    [(site, ms)] = out["sites"].items()
    assert site.startswith(f"{script}:21 in training_step") and ms == pytest.approx(32, rel=0.05)
    assert out["fraction"] == pytest.approx(0.08, rel=0.05)
