"""Check 5: stragglers and injected sleeps, with the culprit rank and host named.

Every step each rank stamps six boundaries (forward start/end via its own
forward hooks, the end of backward via an autograd callback, arrival at the
sentinel's collective, its end, optimizer step done; host clock minus run-queue
wait on CPU, CUDA events on GPU: never a sync) and all-gathers one 8-number
vector through the sentinel's one collective. Every rank then runs the
same statistics (:mod:`._stragglerstats`): the culprit is the rank that is late
at a boundary while its peers are on time and wait for it in the next
collective; a calibrated, clipped CUSUM per rank decides when the lateness is
more than noise. The culprit rank reports itself (its peers then show the
core's short peer alarm naming it), with where in the step it is late and the
per-phase split of its step.

On Python >= 3.13 the ``time.sleep`` audit event attributes sleeps on the
training thread to a call site directly; sleeping for more than
``sleep_fraction`` of the step time over ``sleep_window`` steps is an alarm of
its own (this works on a single rank too).

Options (``checks={"stragglers": {...}}``): ``warmup``, ``calibration``,
``max_baseline``, ``slack``, ``threshold``, ``min_excess``, ``cooldown`` (see
:class:`~._stragglerstats.StragglerParams`), ``sleep_fraction``,
``sleep_window``.

Not attributed: a sleep inside backward, between two of the job's own
collectives (no boundary of ours is late); it still slows the job, and on 3.13
the sleep audit names it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from trainguard.errors import ConfigError
from trainguard.findings import Rule, Severity
from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip
from trainguard.sentinel.checks._sleepaudit import SleepAudit, sleep_event_available
from trainguard.sentinel.checks._steptimes import VECTOR, HostIO, StepTimeline
from trainguard.sentinel.checks._stragglerstats import StragglerDetector, StragglerParams
from trainguard.sentinel.config import CheckConfig

__all__ = ["CHECK", "SLEEP_CALLS", "STRAGGLER", "StragglerCheck"]

_ENGINE: Any = torch.autograd.Variable._execution_engine

STRAGGLER = Rule(
    "sentinel.stragglers.straggler",
    Severity.HIGH,
    "A rank is a straggler: late every step while its peers wait for it",
    "One rank spends more time than its peers between two synchronisation points, so every "
    "other rank waits for it in the next collective. Injected sleeps do exactly this (the 2024 "
    "incident slept processes at random). The alarm names the rank and host, where in the step "
    "it is late (data wait, forward, optimizer, before the step) and by how much.",
)
SLEEP_CALLS = Rule(
    "sentinel.stragglers.sleep-calls",
    Severity.HIGH,
    "time.sleep on the training thread takes a share of every step",
    "On Python 3.13+ the time.sleep audit event shows sleeps on the thread that runs the "
    "training loop, with their call site. A training loop has no reason to sleep; code that "
    "does slows the job on purpose.",
)

_OPTIONS: dict[str, float | int] = {
    "warmup": 5,
    "calibration": 40,
    "max_baseline": 0.01,
    "slack": 0.01,
    "threshold": 0.3,
    "min_excess": 0.025,
    "cooldown": 100,
    "sleep_fraction": 0.02,
    "sleep_window": 16,
}


def _number(options: Mapping[str, object], name: str) -> float:
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"stragglers: option {name!r} must be a number", found=repr(value))
    return float(value)


class StragglerCheck(Check):
    """See the module docstring."""

    name: ClassVar[str] = "stragglers"
    rule: ClassVar[Rule] = STRAGGLER
    defaults: ClassVar[CheckConfig] = CheckConfig(options=_OPTIONS)
    gather: ClassVar[int] = VECTOR

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        super().__init__(ctx, config)
        o = self.options
        try:
            self.params = StragglerParams(
                warmup=int(_number(o, "warmup")),
                calibration=int(_number(o, "calibration")),
                max_baseline=_number(o, "max_baseline"),
                slack=_number(o, "slack"),
                threshold=_number(o, "threshold"),
                min_excess=_number(o, "min_excess"),
                cooldown=int(_number(o, "cooldown")),
            )
        except ValueError as exc:
            raise ConfigError(f"stragglers: {exc}") from exc
        self.sleep_fraction = _number(o, "sleep_fraction")
        self.sleep_window = int(_number(o, "sleep_window"))
        if not 0 < self.sleep_fraction < 1 or self.sleep_window < 2:
            raise ConfigError("stragglers: sleep_fraction in (0, 1), sleep_window >= 2")
        self.detector = StragglerDetector(ctx.world, self.params) if ctx.world > 1 else None
        self.timeline = StepTimeline(ctx.device)
        self.io = HostIO(ctx.device, VECTOR)
        self.rows: deque[list[list[float]]] = deque(maxlen=16)
        self._state: StepState | None = None
        # time.sleep attribution (Python >= 3.13): training thread only.
        self.sleeps = SleepAudit(
            fraction=self.sleep_fraction, window=self.sleep_window, cooldown=self.params.cooldown
        )
        self.sleeps.subscribe()
        model = ctx.model
        # Prepended: the stamps precede other hooks' work (the weights check's verify).
        self._handles = [
            model.register_forward_pre_hook(self._forward_pre, prepend=True),
            model.register_forward_hook(self._forward_post, prepend=True),
        ]
        ctx.own_hooks.append(("module_forward_pre", model, self._handles[0].id))
        ctx.own_hooks.append(("module_forward", model, self._handles[1].id))
        # The end of backward (after the job's own collectives in it): a grad hook
        # on one parameter queues an autograd callback, which queues another that
        # runs after every callback queued so far (DDP's finalize among them).
        self._bwd_queued = False
        if ctx.params and not ctx.is_dtensor:
            param = ctx.params[0]
            handle = param.register_post_accumulate_grad_hook(self._on_grad)  # type: ignore[no-untyped-call]
            self._handles.append(handle)
            ctx.own_hooks.append(("post_accumulate_grad", param, handle.id))

    @classmethod
    def applicable(cls, ctx: SentinelContext) -> str | None:
        if ctx.world > 1 or sleep_event_available():
            return None
        return "a single rank has no peers to compare with (and Python < 3.13 has no time.sleep audit event)"

    # -- hooks and phases (host work only: perf_counter or an event record) ----------
    def _forward_pre(self, module: torch.nn.Module, args: Any) -> None:
        if module.training and torch.is_grad_enabled():
            self.timeline.mark("forward_start")

    def _forward_post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training and torch.is_grad_enabled():
            self.timeline.mark("forward_end")

    def _on_grad(self, param: torch.Tensor) -> None:
        if not self._bwd_queued:
            self._bwd_queued = True
            _ENGINE.queue_callback(lambda: _ENGINE.queue_callback(self._backward_end))

    def _backward_end(self) -> None:
        self._bwd_queued = False
        self.timeline.mark("backward_end")

    def before_step(self, state: StepState) -> None:
        self._state = state
        self.timeline.before_step(state.step)
        ready = self.timeline.take_ready()
        if ready is not None and self.detector is not None:
            values = self.io.upload(ready[1])
            if values is not None:
                state.publish(self, values)

    def after_reduce(self, state: StepState) -> None:
        self.timeline.mark("reduce_end")
        if self.detector is not None:
            self.io.download(state.gathered(self))
            for block in self.io.poll():
                self._judge(state, block)

    def after_step(self, state: StepState) -> None:
        self.timeline.mark("after_step")
        self.timeline.end_step()
        if self.sleeps.subscribed:
            self._account_sleep(state)

    # -- decisions ---------------------------------------------------------------------
    def _judge(self, state: StepState, rows: list[list[float]]) -> None:
        assert self.detector is not None
        steps = {row[0] for row in rows}
        if len(steps) != 1 or any(v == float("-inf") for row in rows for v in row):
            return  # a rank published nothing, or ranks are at different steps (CUDA lag)
        step = int(rows[0][0])
        self.rows.append(rows)
        step_times = sorted(row[6] for row in rows if row[6] == row[6] and row[6] > 0)
        step_time = step_times[len(step_times) // 2] if step_times else 0.0
        # Judged: optimizer done, forward start, forward end (since the last
        # collective) and the code after backward; not backward itself, where the
        # job's collectives make the victims wait.
        judged = [[row[1], row[2], row[3], row[5]] for row in rows]
        for verdict in self.detector.update(step, judged, step_time):
            if verdict.rank != self.ctx.rank:
                continue  # the culprit reports itself; peers show the core's peer alarm
            host = self.ctx.hosts[verdict.rank] if verdict.rank < len(self.ctx.hosts) else "?"
            state.trip_host(
                self,
                f"rank {verdict.rank} on {host} is a straggler: late by "
                f"{verdict.excess_s * 1000:.1f} ms per step ({verdict.excess_fraction:.1%} of a "
                f"{verdict.step_time_s * 1000:.0f} ms step) at the {verdict.boundary}; "
                "its peers wait for it in collectives",
                rank=verdict.rank,
                host=host,
                step_detected=verdict.step,
                late_at=verdict.boundary,
                excess_ms=round(verdict.excess_s * 1000, 3),
                excess_fraction=round(verdict.excess_fraction, 5),
                step_time_ms=round(verdict.step_time_s * 1000, 3),
                cusum=round(verdict.cusum, 4),
                threshold=round(verdict.threshold, 4),
                noise_sigma=round(verdict.sigma, 5),
                baseline=round(verdict.baseline, 5),
                recent_excess=verdict.recent_excess,
                lateness_ms={k: round(v * 1000, 3) for k, v in verdict.lateness_s.items()},
                phases_ms=self._phase_split(),
                sleep_sites=self.sleeps.top_sites(),
            )

    def _phase_split(self) -> dict[str, dict[str, float]]:
        """Mean per-rank split of the recent steps (ms): what each rank did, and waited."""
        if not self.rows:
            return {}

        def mean(values: list[float]) -> float:
            ok = [v for v in values if v == v]
            return round(1000 * sum(ok) / len(ok), 3) if ok else float("nan")

        split: dict[str, dict[str, float]] = {}
        for r in range(len(self.rows[0])):
            # Vector: step, optimizer done, forward start, forward end, backward end
            # (all since the last collective), after-backward code, T, wait.
            rows = [block[r] for block in self.rows]
            split[f"rank {r}"] = {
                "optimizer": mean([row[1] for row in rows]),
                "data_wait_and_host_gap": mean([row[2] - row[1] for row in rows]),
                "forward": mean([row[3] - row[2] for row in rows]),
                "backward_and_job_collectives": mean([row[4] - row[3] for row in rows]),
                "after_backward": mean([row[5] for row in rows]),
                "sentinel_collective_wait": mean([row[7] for row in rows]),
            }
        return split

    def telemetry(self) -> dict[str, float]:
        if not self.rows or self.ctx.rank >= len(self.rows[-1]):
            return {}
        # This rank's newest complete vector (see StepTimeline.take_ready for the layout).
        _, opt, fwd0, fwd1, bwd, pre, step_time, wait = self.rows[-1][self.ctx.rank]
        return {
            "step_time": step_time,
            "optimizer": opt,
            "data_wait": fwd0 - opt,
            "forward": fwd1 - fwd0,
            "backward": bwd - fwd1,
            "host_gap": pre,
            "collective_wait": wait,
        }

    def _account_sleep(self, state: StepState) -> None:
        end, prev_end = state.times.get("after_step"), state.prev_times.get("after_step")
        step_time = end - prev_end if end is not None and prev_end is not None else 0.0
        verdict = self.sleeps.end_step(state.step, step_time)
        if verdict is None:
            return
        top = next(iter(verdict.sites), "?")
        state.trip_host(
            self,
            f"time.sleep on the training thread took {verdict.ms_per_step:.1f} ms per step "
            f"({verdict.fraction:.1%} of step time) over {verdict.steps} steps; top call site {top}",
            rule_id=SLEEP_CALLS.id,
            sleep_ms_per_step=verdict.ms_per_step,
            sleep_fraction=verdict.fraction,
            steps_with_sleep=verdict.steps_with_sleep,
            sleep_sites=verdict.sites,
        )

    def describe(self, trip: Trip) -> Sequence[Detection]:
        out = []
        for event in trip.events:
            evidence = dict(event.evidence)
            rank = evidence.get("rank")
            rule = SLEEP_CALLS if evidence.pop("rule_id", None) == SLEEP_CALLS.id else STRAGGLER
            out.append(
                Detection(
                    event.message,
                    evidence,
                    step=event.step,
                    rule=rule,
                    rank=rank if isinstance(rank, int) else None,
                )
            )
        return out or [Detection(STRAGGLER.title)]

    def close(self) -> None:
        self.timeline.close()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.sleeps.close()


CHECK = StragglerCheck
