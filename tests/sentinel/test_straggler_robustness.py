"""The straggler statistics under a busy host's noise: seeded simulations of the drill.

The ``sleep-rank`` drill (rank 1 of 2 sleeps 5-15% of a step on three steps out of
four from step 50; caught within 20 steps) runs on a loaded 2-core machine. Traces
of real runs show the timing noise the detector sees there: a gaussian core of
about 1% of the step at the data-wait boundary and 5-10% at the end of forward,
and heavy-tailed scheduling spikes (a rank descheduled for 3-25% of a step,
somewhere in it) on about one step in five. :func:`simulate` replays that noise, scaled up to a
noisier machine, with the drill's sleeps, a machine that gets busier mid-run and
a rank 0 that writes a checkpoint every few dozen steps. Pure arithmetic, seeded:
a failure names its seed and replays exactly.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, replace

import pytest

from trainguard.sentinel.checks._stragglerstats import BOUNDARIES, StragglerDetector

STEP = 0.06  # the drill's step time, seconds
ONSET = 50  # the drill's first sleep
BOUND = 20  # the drill's bound: caught at most this many steps after the onset


@dataclass(frozen=True)
class Scenario:
    """A synthetic job; noise in fractions of a step, per rank.

    Attributes:
        world: ranks.
        steps: steps simulated (the attack runs stop ``BOUND`` steps after the onset).
        jitter: gaussian noise of the host segments (optimizer, data wait).
        forward_jitter: gaussian noise of the forward pass (much larger on a busy CPU).
        spike_rate: chance per rank and step of a scheduling spike, in a random segment.
        spike_scale: the smallest spike; sizes are Pareto (alpha 1.5): heavy-tailed.
        busier_at: from this step on the machine is busier (host noise x2, forward noise
            and spikes x1.5: NOMINAL becomes NOISY).
        checkpoint_every: rank 0 stalls 30-100% of a step every this many steps (0: never).
        drift: standard deviation of a slow (AR(1), 0.95) drift of each rank's forward.
        onset: first step of the sleeps (``None``: a clean job).
        culprit: the sleeping rank.
        prob: chance of a sleep on a step after the onset.
        low, high: a sleep's length, as a fraction of the step time measured at the onset.
    """

    world: int = 2
    steps: int = ONSET + BOUND + 1
    jitter: float = 0.006
    forward_jitter: float = 0.06
    spike_rate: float = 0.2
    spike_scale: float = 0.03
    busier_at: int | None = None
    checkpoint_every: int = 0
    drift: float = 0.0
    onset: int | None = ONSET
    culprit: int = 1
    prob: float = 0.75
    low: float = 0.05
    high: float = 0.15


#: The drill as measured on a loaded 2-core machine, and a machine twice and thrice as noisy.
NOMINAL = Scenario()
NOISY = replace(NOMINAL, jitter=0.012, forward_jitter=0.09, spike_rate=0.3)
VERY_NOISY = replace(NOMINAL, jitter=0.018, forward_jitter=0.12, spike_rate=0.4)


def simulate(seed: int, sc: Scenario) -> tuple[int, int, str] | None:
    """Run the detector over a synthetic job; (step, rank, boundary) of the first verdict."""
    rng = random.Random(seed)
    detector = StragglerDetector(sc.world)
    drift = [0.0] * sc.world
    times: list[float] = []
    sleep_unit = 0.0
    for step in range(sc.steps):
        busy = sc.busier_at is not None and step >= sc.busier_at
        # A neighbour starts: from the measured machine's noise to the noisy one's.
        scale, more = (2.0, 1.5) if busy else (1.0, 1.0)
        if step == sc.onset:  # the drill sizes its sleeps from the last 20 step times
            sleep_unit = statistics.median(times[-20:]) if times else STEP
        rows, extras = [], []
        for rank in range(sc.world):
            drift[rank] = 0.95 * drift[rank] + rng.gauss(0, sc.drift * 0.31)
            seg = [
                0.01 + rng.gauss(0, 0.5 * sc.jitter * scale),  # optimizer step
                0.02 + rng.gauss(0, sc.jitter * scale),  # data wait / host gap
                0.3 + rng.gauss(0, sc.forward_jitter * more) + drift[rank],  # forward
                0.01 + rng.gauss(0, 0.5 * sc.jitter * scale),  # after backward (own clock)
            ]
            extra = 0.0
            if rng.random() < sc.spike_rate * more:
                spike = min(sc.spike_scale * rng.paretovariate(1.5), 2.0)
                seg[rng.randrange(4)] += spike
                extra += spike
            if rank == 0 and sc.checkpoint_every and step and step % sc.checkpoint_every == 0:
                stall = rng.uniform(0.3, 1.0)
                seg[1] += stall
                extra += stall
            attacked = sc.onset is not None and step >= sc.onset and rank == sc.culprit
            if attacked and rng.random() < sc.prob:
                sleep = sleep_unit / STEP * rng.uniform(sc.low, sc.high)
                seg[1] += sleep
                extra += sleep
            rows.append([STEP * seg[0], STEP * sum(seg[:2]), STEP * sum(seg[:3]), STEP * seg[3]])
            extras.append(extra)
        # The ranks are coupled by their collectives: the step lasts as long as the slowest.
        step_time = STEP * (1 + rng.gauss(0, 0.03 * scale) + max(extras))
        times.append(step_time)
        verdicts = detector.update(step, rows, step_time)
        if verdicts:
            return step, verdicts[0].rank, verdicts[0].boundary
    return None


def caught(seed: int, sc: Scenario) -> bool:
    """The drill's verdict: the culprit named (first) within the bound."""
    found = simulate(seed, sc)
    assert sc.onset is not None
    return found is not None and found[1] == sc.culprit and found[0] - sc.onset <= BOUND


# -- the drill's sleeps are caught within its bound ---------------------------------------------
# Over 300 seeds (a script around simulate()), missed within the bound / before this detector
# stopped counting the sleeps as noise and lowered its median guard: measured host 0.7% / 1.3%,
# noisy host 3.3% / 36%, noisy with four ranks 0.7% / 13%, very noisy 23% / 84%. A clean job
# alarms on 0-1% of seeds, as before.


@pytest.mark.parametrize(
    ("sc", "seeds", "allowed"),
    [
        (NOMINAL, 40, 1),
        (replace(NOMINAL, world=4, culprit=2), 40, 0),
        (replace(NOMINAL, world=8, culprit=5), 40, 0),
        (NOISY, 50, 2),
        (replace(NOISY, world=4, culprit=2), 50, 1),
    ],
    ids=["measured", "measured-4-ranks", "measured-8-ranks", "noisy", "noisy-4-ranks"],
)
def test_drill_sleeps_caught_within_the_bound(sc: Scenario, seeds: int, allowed: int) -> None:
    # Real drill runs on the 2-core machine ranged from the measured noise to about
    # three times it. The sleeps' own luck (three steps out of four) leaves the odd
    # miss; counting the sleeps as noise, with a median guard at 2.5 sigma, missed one
    # run in three on the noisy host.
    missed = [seed for seed in range(seeds) if not caught(seed, sc)]
    assert len(missed) <= allowed, missed


def test_drill_sleeps_on_a_very_noisy_host_are_mostly_caught() -> None:
    # Three times the measured noise: the sleeps' median is about 2 sigma.
    missed = [seed for seed in range(40) if not caught(seed, VERY_NOISY)]
    assert len(missed) <= 20, missed


def test_random_sleeps_located_at_the_data_wait() -> None:
    for seed in range(10):
        found = simulate(seed, NOISY)
        assert found is not None and found[2] == BOUNDARIES[1]


# -- and a clean job on the same host raises nothing --------------------------------------------

CLEAN = replace(NOMINAL, onset=None, steps=320)


@pytest.mark.parametrize(
    "sc",
    [
        CLEAN,
        replace(NOISY, onset=None, steps=320),
        replace(CLEAN, busier_at=150),
        replace(CLEAN, checkpoint_every=25),
        replace(NOISY, onset=None, steps=320, checkpoint_every=10),
        replace(CLEAN, drift=0.03),
        replace(CLEAN, world=4, busier_at=150, checkpoint_every=25),
    ],
    ids=[
        "measured",
        "noisy",
        "busier-mid-run",
        "checkpoints",
        "noisy-checkpoints",
        "drift",
        "4-ranks",
    ],
)
def test_clean_job_on_a_noisy_host_raises_nothing(sc: Scenario) -> None:
    alarms = [(seed, found) for seed in range(24) if (found := simulate(seed, sc)) is not None]
    assert alarms == []
