"""Straggler statistics: who is late, where in the step, and is it more than noise.

Pure host arithmetic over plain floats (no torch), so it is tested on synthetic
timelines. The input, per step and rank, is the time from a point where all ranks
are aligned (the exit of the previous step's collective: a collective ends at
nearly the same instant everywhere) to each later boundary of the step::

    0 optimizer step done   1 forward start (data wait + host gap)
    2 forward end           3 arrival at the step's collective, measured from the end
                              of backward (itself aligned by the job's collectives)

A sleep (or any extra local work) on one rank makes that rank *late* at the next
boundary; its peers are on time there and absorb the delay as wait inside the
next collective (DDP's all-reduce in backward, FSDP's all-gather, the sentinel's
own). So per boundary ``lateness = offset - median(offsets of the other ranks)``,
a rank's step score is its largest lateness, and its excess is that score minus
the median score of the other ranks, in units of the step time. The culprit's
excess is the sleep; a victim's is zero or negative. Sleeps hidden inside
backward, between two of the job's own collectives, leave no boundary late and
are not attributed (documented).

Decision: a one-sided CUSUM per (rank, boundary) on the excess, confirmed (two
steps in a row) by the median of the recent excess (a guard against a busy
host's large scheduling spikes), after a calibration window
learns each rank's baseline (clamped to ``[0, max_baseline]``, so a sleep present
from the first step is not learnt as normal) and its noise: a robust scale (MAD)
and the spread of the clipped excess, which also counts how often a busy host's
spikes come. Per-step inputs are clipped, so a single slow step (a checkpoint
written by rank 0) cannot trigger on its own, while a small persistent sleep or
frequent random sleeps accumulate within a few steps.

The noise is refreshed from the recent steps (a machine gets busier), but not
from the steps of the current CUSUM episode: the evidence must not raise its own
bar (a sleep on three steps out of four would inflate the MAD of the recent
steps within one refresh, and the median guard with it, past the sleep's own
median excess). Frequent spikes raise the CUSUM's bars through the spread, so
the median guard can stay low enough for a sleep of 5% of a step on a noisy host.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["BOUNDARIES", "StragglerDetector", "StragglerParams", "StragglerVerdict"]

#: What being late at each boundary means.
BOUNDARIES = (
    "optimizer step",
    "data wait / host gap",
    "forward",
    "code between backward and optimizer.step",
)

_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class StragglerParams:
    """Tuning of the detector; fractions are of the median step time.

    Attributes:
        warmup: steps ignored at the start (compilation, allocator warm-up).
        calibration: steps that learn each rank's baseline and noise.
        max_baseline: at most this much persistent excess is accepted as a rank's normal.
        slack: CUSUM allowance per step (at least; ``slack_sigmas`` noise otherwise).
        threshold: CUSUM decision threshold (at least; ``threshold_sigmas`` noise otherwise).
        clip: largest excess one step may add (at least; ``clip_sigmas`` noise otherwise).
        window: steps kept for evidence and the rolling noise estimate.
        min_excess: the median excess over the last ``guard_window`` steps must reach
            this (and ``guard_sigmas`` noise, more on a boundary noisier than 4% of a
            step) too: a few large scheduling spikes, or a noisy boundary's slow
            drifts, do not make a straggler. (How often spikes come is the CUSUM's
            business: its bars grow with the spread of the clipped excess.)
        cooldown: steps after an alarm before the same rank can alarm again.
    """

    warmup: int = 5
    calibration: int = 40
    max_baseline: float = 0.01
    slack: float = 0.01
    slack_sigmas: float = 0.75
    threshold: float = 0.3
    threshold_sigmas: float = 10.0
    clip: float = 0.1
    clip_sigmas: float = 3.0
    min_sigma: float = 0.002
    min_excess: float = 0.025
    guard_sigmas: float = 1.25
    guard_window: int = 16
    window: int = 64
    cooldown: int = 100

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.calibration < 4 or self.window < 8 or self.cooldown < 0:
            raise ValueError("warmup >= 0, calibration >= 4, window >= 8, cooldown >= 0")
        if min(self.slack, self.threshold, self.clip, self.min_sigma, self.min_excess) <= 0:
            raise ValueError("slack, threshold, clip, min_sigma and min_excess must be positive")
        if not 4 <= self.guard_window <= self.window:
            raise ValueError("guard_window must be between 4 and window")


@dataclass(frozen=True)
class StragglerVerdict:
    """A rank judged a straggler, with the evidence for the alarm."""

    rank: int
    step: int
    boundary: str
    excess_s: float
    excess_fraction: float
    step_time_s: float
    cusum: float
    threshold: float
    sigma: float
    baseline: float
    recent_excess: list[float] = field(default_factory=list)
    lateness_s: dict[str, float] = field(default_factory=dict)


#: The CUSUM's allowance and threshold are at least this many spreads (the RMS
#: of the clipped excess, spikes included): a host whose scheduling spikes are
#: frequent needs more evidence than its MAD says.
_SPREAD_SLACK = 0.5
_SPREAD_THRESHOLD = 10.0
#: Steps between refreshes of the rolling noise (a median per pair per step is too
#: slow at scale), and the most steps of a current episode kept out of it.
_REFRESH = 16
_EPISODE_CAP = 32
#: Fewest steps a rolling noise estimate is made from.
_MIN_REFERENCE = 16
#: Steps in a row the CUSUM and the median guard must agree: a cluster of spikes
#: that brushes the guard for a step is not a straggler.
_CONFIRM = 2
#: The median guard on a very noisy boundary: this many sigmas less the smallest
#: sleep (a fraction of the step) that a quiet enough boundary must let through.
_NOISY_GUARD_SIGMAS = 2.5
_SMALLEST_SLEEP = 0.05

#: From this many ranks on, "the median of the others" is the median of all: one
#: rank moves it by at most one order statistic, and it is O(world) instead of O(world^2).
_EXACT_BELOW = 8


def _peer_medians(values: Sequence[float]) -> list[float]:
    """For each index, the median of the other values (nan entries ignored)."""
    valid = [v for v in values if v == v]
    if len(values) >= _EXACT_BELOW:
        med = statistics.median(valid) if valid else float("nan")
        return [med] * len(values)
    out = []
    for i in range(len(values)):
        others = [v for j, v in enumerate(values) if j != i and v == v]
        out.append(statistics.median(others) if others else float("nan"))
    return out


def _noise(values: Sequence[float], p: StragglerParams, sigma_floor: float) -> tuple[float, float]:
    """Robust scale and spread of ``values``.

    The MAD as a standard deviation, and the RMS of the deviations from the median
    clipped as the CUSUM clips them (so it also counts how often spikes come).
    """
    center = statistics.median(values)
    sigma = _MAD_TO_SIGMA * statistics.median(abs(x - center) for x in values)
    clip = max(p.clip, p.clip_sigmas * max(sigma, sigma_floor))
    clipped = [min(abs(x - center), clip) for x in values]
    return sigma, math.sqrt(statistics.fmean(c * c for c in clipped))


@dataclass
class _Track:
    """CUSUM state of one (rank, boundary) pair."""

    calib: list[float] = field(default_factory=list)
    baseline: float = 0.0
    sigma: float = 0.0
    spread: float = 0.0
    cusum: float = 0.0
    rolling_sigma: float = 0.0
    rolling_spread: float = 0.0
    sigma_age: int = 0
    rising: int = 0  # consecutive steps with cusum > 0: the current episode
    agreed: int = 0  # consecutive steps over the threshold and past the guard
    recent: deque[float] = field(default_factory=deque)


class StragglerDetector:
    """Feed it one step of per-rank boundary offsets at a time; it names stragglers.

    Each (rank, boundary) pair has its own baseline, noise and CUSUM: a sleep
    sits at one place in the step, so the boundary right after it carries the
    whole signal with only that segment's noise (a forward pass's jitter does
    not dilute a late data loader).
    """

    def __init__(
        self, world: int, params: StragglerParams | None = None, boundaries: int = 4
    ) -> None:
        if world < 2:
            raise ValueError("straggler detection compares ranks: it needs at least two")
        self.world = world
        self.boundaries = boundaries
        self.params = params or StragglerParams()
        self.steps_seen = 0
        self._tracks = [[_Track() for _ in range(boundaries)] for _ in range(world)]
        self._cooldown_until = [-1] * world
        self._step_times: deque[float] = deque(maxlen=self.params.window)

    @property
    def calibrated(self) -> bool:
        return self.steps_seen > self.params.warmup + self.params.calibration

    def cusum(self, rank: int) -> float:
        """The largest CUSUM of ``rank`` over its boundaries."""
        return max(t.cusum for t in self._tracks[rank])

    def update(
        self, step: int, offsets: Sequence[Sequence[float]], step_time: float
    ) -> list[StragglerVerdict]:
        """One step: ``offsets[rank][boundary]`` seconds since the aligned point.

        A boundary a rank did not see this step may be ``nan``; it is left out.
        ``step_time`` is the step's duration (any rank's: they are coupled).
        """
        if len(offsets) != self.world:
            raise ValueError(f"expected offsets of {self.world} ranks, got {len(offsets)}")
        p = self.params
        self.steps_seen += 1
        if step_time > 0:
            self._step_times.append(step_time)
        if self.steps_seen <= p.warmup or not self._step_times:
            return []
        t_step = statistics.median(self._step_times)
        if t_step <= 0:
            return []
        late = self._lateness(offsets)
        calibrating = self.steps_seen <= p.warmup + p.calibration
        finishing = self.steps_seen == p.warmup + p.calibration
        verdicts: list[StragglerVerdict] = []
        for rank in range(self.world):
            fired: list[tuple[float, int, float, float]] = []
            for k, track in enumerate(self._tracks[rank]):
                x = late[rank][k] / t_step
                track.recent.append(x)
                if len(track.recent) > p.window:
                    track.recent.popleft()
                if calibrating:
                    track.calib.append(x)
                    if finishing:
                        self._finish_calibration(track)
                    continue
                hit = self._cusum_step(track, x)
                if hit is not None:
                    fired.append((track.cusum / hit[0], k, hit[0], hit[1]))
            if fired and step >= self._cooldown_until[rank]:
                _, k, threshold, sigma = max(fired)
                verdicts.append(self._verdict(rank, k, step, t_step, threshold, sigma))
                self._cooldown_until[rank] = step + p.cooldown
                for track in self._tracks[rank]:
                    track.cusum = 0.0
            elif fired:
                for _, k, threshold, _ in fired:  # already reported: hold, do not grow
                    self._tracks[rank][k].cusum = threshold
        return verdicts

    # -- internals ---------------------------------------------------------------
    def _lateness(self, offsets: Sequence[Sequence[float]]) -> list[list[float]]:
        late: list[list[float]] = [[0.0] * self.boundaries for _ in range(self.world)]
        for k in range(self.boundaries):
            column = [row[k] if k < len(row) else float("nan") for row in offsets]
            peers = _peer_medians(column)
            for r in range(self.world):
                mine, peer = column[r], peers[r]
                # nan: a boundary this rank (or every peer) did not see this step.
                late[r][k] = mine - peer if mine == mine and peer == peer else 0.0
        return late

    def _finish_calibration(self, track: _Track) -> None:
        p = self.params
        center = statistics.median(track.calib)
        # A rank may be a little late by nature (rank 0 logs); more than
        # max_baseline is not learnt, so a sleep present from step 0 still shows.
        # Nor is earliness: a rank ahead of its peers that comes back on par holds
        # nobody up, and on a noisy boundary (forward on a busy CPU) the median of
        # the calibration steps is often a few percent off either way.
        track.baseline = min(max(center, 0.0), p.max_baseline)
        sigma, spread = _noise(track.calib, p, p.min_sigma)
        track.sigma = max(sigma, p.min_sigma)
        track.spread = spread
        track.calib = []

    def _noise_now(self, track: _Track) -> tuple[float, float]:
        """(sigma, spread): the calibration's, or the recent steps' if the machine got busier."""
        if track.sigma_age <= 0:
            # Not from the current episode (the steps since the CUSUM last rested at
            # zero, and this one): those are the evidence. At most _EPISODE_CAP
            # of them, so a long episode of noise does not freeze the estimate.
            excluded = min(track.rising + 1, _EPISODE_CAP)
            reference = list(track.recent)[: len(track.recent) - excluded]
            if len(reference) >= _MIN_REFERENCE:
                track.rolling_sigma, track.rolling_spread = _noise(
                    reference, self.params, track.sigma
                )
            track.sigma_age = _REFRESH
        track.sigma_age -= 1
        return max(track.sigma, track.rolling_sigma), max(track.spread, track.rolling_spread)

    def _cusum_step(self, track: _Track, x: float) -> tuple[float, float] | None:
        """Advance one CUSUM; (threshold, sigma) when it crosses, else ``None``."""
        p = self.params
        sigma, spread = self._noise_now(track)
        slack = max(p.slack, p.slack_sigmas * sigma, _SPREAD_SLACK * spread)
        threshold = max(p.threshold, p.threshold_sigmas * sigma, _SPREAD_THRESHOLD * spread)
        clip = max(p.clip, p.clip_sigmas * sigma)
        x = min(max(x - track.baseline, -clip), clip)
        # Capped at twice the threshold: evidence does not pile up while the
        # median guard below holds the decision back.
        track.cusum = min(max(0.0, track.cusum + x - slack), 2 * threshold)
        track.rising = track.rising + 1 if track.cusum > 0 else 0
        if track.cusum < threshold:
            track.agreed = 0
            return None
        # Median guard: the rank must be late on most recent steps, not on a few
        # big ones (a busy host's scheduling spikes are rare and large; a sleep
        # is steady or frequent). A very noisy boundary (the forward on a busy
        # CPU) also drifts slowly by about its noise: there the guard is 2.5
        # sigma less the smallest sleep that must still pass it.
        guard = max(
            p.min_excess,
            p.guard_sigmas * sigma,
            _NOISY_GUARD_SIGMAS * sigma - _SMALLEST_SLEEP,
        )
        recent = list(track.recent)[-p.guard_window :]
        if statistics.median(recent) - track.baseline < guard:
            track.agreed = 0
            return None
        track.agreed += 1
        return (threshold, sigma) if track.agreed >= _CONFIRM else None

    def _verdict(
        self, rank: int, k: int, step: int, t_step: float, threshold: float, sigma: float
    ) -> StragglerVerdict:
        fired = self._tracks[rank][k]
        # The episode: the steps since the CUSUM last rested at zero (at most 16).
        # Its median: a peer's stall in it (a checkpoint) must not make the culprit
        # look early.
        n = max(min(fired.rising, 16), 1)
        excess = [statistics.median(list(t.recent)[-n:]) - t.baseline for t in self._tracks[rank]]
        # Lateness carries over to every boundary until the next collective: the
        # extra time was spent in the segment before the *first* late boundary.
        top = max(excess)
        # None may be positive (a short episode of mostly early steps): the pair that fired.
        where = next((j for j, e in enumerate(excess) if e >= 0.5 * top), k)
        track = self._tracks[rank][where]
        return StragglerVerdict(
            rank=rank,
            step=step,
            boundary=BOUNDARIES[where] if where < len(BOUNDARIES) else f"boundary {where}",
            excess_s=excess[where] * t_step,
            excess_fraction=excess[where],
            step_time_s=t_step,
            cusum=fired.cusum,
            threshold=threshold,
            sigma=sigma,
            baseline=track.baseline,
            recent_excess=[round(x, 5) for x in list(track.recent)[-16:]],
            lateness_s={
                (BOUNDARIES[j] if j < len(BOUNDARIES) else str(j)): round(e * t_step, 6)
                for j, e in enumerate(excess)
            },
        )
