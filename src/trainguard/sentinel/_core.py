"""The sentinel: runs the checks from the training loop's own hooks.

One step, as the sentinel sees it::

    forward pre-hook   (first training forward after a step)  -> checks.on_forward
    step pre-hook      checks.before_step -> ONE all_reduce(MAX) -> checks.after_reduce
                       -> decision (host sync only if some check's action is veto/halt)
    optimizer.step()   (skipped in effect when vetoed: rolled back before anyone sees it)
    step post-hook     checks.after_step -> [post-step veto vote] -> log-step read-back

Alarms are read back from the device only on log steps (``log_every``), when a
veto/halt must be decided, on :meth:`Sentinel.flush` and on ``close``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Iterator
from typing import Any

import torch

from trainguard.errors import IntegrityError
from trainguard.findings import Rule, Severity
from trainguard.sentinel._flags import FlagBoard
from trainguard.sentinel._rollback import StepSnapshot
from trainguard.sentinel.alarms import Alarm, AlarmRouter
from trainguard.sentinel.checks import Check, StepState, Trip
from trainguard.sentinel.checks._base import SentinelContext
from trainguard.sentinel.config import Action

__all__ = ["STEPS_UNOBSERVED", "Sentinel", "SentinelHalt"]

log = logging.getLogger("trainguard.sentinel")

STEPS_UNOBSERVED = Rule(
    "sentinel.steps-unobserved",
    Severity.CRITICAL,
    "Training forwards continue but the sentinel sees no optimizer steps",
    "The protected module keeps running training forwards while the optimizer's step hooks "
    "no longer fire: optimizer.step was replaced by code that does not call the hooked "
    "original, or the sentinel's step hooks were removed. Updates are happening unverified.",
)
SANCTIONED = Rule(
    "sentinel.sanctioned-change",
    Severity.INFO,
    "Parameters changed on purpose outside the optimizer",
    "Code declared a parameter change with Sentinel.sanctioned(); recorded with its stack.",
)
CHECK_FAILED = Rule(
    "sentinel.check-failed",
    Severity.HIGH,
    "A sentinel check failed and was disabled",
    "A check raised an exception; it no longer runs, so what it covers is unprotected.",
)


class SentinelHalt(IntegrityError):
    """Raised on every rank at the same step when a check whose action is ``halt`` trips."""

    def __init__(self, alarms: list[Alarm]) -> None:
        first = alarms[0] if alarms else None
        super().__init__(
            f"training halted by the trainguard sentinel: {first.check}: {first.message}"
            if first
            else "training halted by the trainguard sentinel",
            subject=f"rank {first.rank} step {first.step}" if first else None,
            expected="no tampering detected during training",
            found="; ".join(f"{a.check}: {a.message}" for a in alarms[:5]),
            hint="read the alarm spool for the evidence; do not resume from state written after this step",
        )
        self.alarms = alarms


class Sentinel:
    """A protected training job. Made by :func:`trainguard.protect`; use it as a context manager.

    Attributes:
        checks: the running checks, in phase order.
        skipped: ``{check name: reason}`` for checks that could not run here.
        vetoed_steps: how many optimizer steps were vetoed (rolled back).
    """

    def __init__(
        self,
        ctx: SentinelContext,
        checks: list[Check],
        router: AlarmRouter,
        skipped: dict[str, str],
    ) -> None:
        self.ctx = ctx
        self.checks = checks
        self.skipped = skipped
        self.router = router
        base: dict[str, int] = {}
        pos = 0
        self._slot_owner: list[tuple[Check, int]] = []
        for c in checks:
            base[c.name] = pos
            pos += c.slots
            self._slot_owner.extend((c, i) for i in range(c.slots))
        self.board = FlagBoard(
            pos,
            [c.gather for c in checks if c.gather],
            device=ctx.device,
            rank=ctx.rank,
            world=ctx.world,
            group=ctx.group,
        )
        self.state = StepState(ctx, self.board, base)
        self.state._gather_index = {c.name: i for i, c in enumerate(c for c in checks if c.gather)}
        self._alarms: list[Alarm] = []
        self._seen: set[tuple[str, int, int, str]] = set()
        self._pre_deciders = [c for c in checks if c.config.action is not Action.WARN]
        self._post_deciders = [c for c in self._pre_deciders if c.decides_after_step]
        self._snapshot: StepSnapshot | None = None
        self._vetoing = False
        self._forwards_since_step = 0
        self._max_forwards = 0
        self._closed = False
        self._pre_done = False
        self.vetoed_steps = 0

    # -- public API ----------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Optimizer steps completed under protection."""
        return self.state.step

    @property
    def alarms(self) -> list[Alarm]:
        """Every alarm raised so far (reads pending detections back from the device first)."""
        if not self._closed:
            self.flush()
        return list(self._alarms)

    def observe(self, *, loss: torch.Tensor | float | None = None) -> None:
        """Give the sentinel this step's loss (kept on the device; no sync)."""
        if loss is not None:
            t = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
            self.state.loss = t.reshape(-1)[0] if t.numel() else t

    def flush(self) -> list[Alarm]:
        """Read detections back from the device and emit them as alarms (a host sync)."""
        return self._read_back(action_for={})

    @contextlib.contextmanager
    def sanctioned(self, reason: str) -> Iterator[None]:
        """Change parameters outside the optimizer on purpose (a checkpoint load, weight
        clipping). The change is recorded in the spool with the caller's stack."""
        self.flush()
        try:
            yield
        finally:
            self.state.mark("rebaseline")
            for c in self.checks:
                c.rebaseline(self.state)
            note = Alarm(
                check="sentinel",
                rule=SANCTIONED.id,
                rank=self.ctx.rank,
                host=self.ctx.host,
                step=self.state.step,
                message=f"sanctioned parameter change: {reason}",
                evidence={"stack": traceback.format_stack(limit=8)[:-2]},
                severity=Severity.INFO,
                reporter=self.ctx.rank,
            )
            self.router.emit(note)

    def close(self) -> None:
        """Read back pending alarms, remove every hook and patch; idempotent."""
        if self._closed:
            return
        try:
            # No reduce follows: host trips still waiting for one are read back here.
            self.board.apply_pending(self.state.step)
            self.flush()
        finally:
            self._closed = True
            from trainguard.sentinel.integrations import loop

            loop.uninstall(self)
            for c in self.checks:
                try:
                    c.close()
                except Exception as exc:
                    log.error("trainguard: closing check %s failed: %s", c.name, exc)
            self.router.close()

    def __enter__(self) -> Sentinel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hook entry points (installed by integrations.loop) --------------------------------
    def _on_forward(self, module: torch.nn.Module, args: Any) -> None:
        if self._closed or not (module.training and torch.is_grad_enabled()):
            return
        self._forwards_since_step += 1
        if self.state.step and self._forwards_since_step == self._forward_limit():
            self._steps_unobserved()
        mode = self.ctx.config.forward_verify
        if mode == "off" or (mode == "first" and self._forwards_since_step > 1):
            return
        self.state.mark("forward")
        self._run("on_forward")

    def _before_step(
        self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if self._closed:
            return None
        self._pre_done = False
        closure = kwargs.get("closure") if kwargs else None
        positional = closure is None and bool(args[1:]) and callable(args[1])
        if positional:
            closure = args[1]
        if closure is None:
            self._pre_step(kwargs)
            return None

        # optimizer.step(closure): forward and backward run inside the step (Lightning, LBFGS),
        # so the pre-step phase runs right after the closure's first call, on fresh gradients.
        def guarded() -> Any:
            loss = closure()
            if not self._pre_done:
                if isinstance(loss, torch.Tensor):
                    self.observe(loss=loss)
                self._pre_step(kwargs)
            return loss

        if positional:
            return (args[0], guarded, *args[2:]), kwargs
        return args, {**kwargs, "closure": guarded}

    def _pre_step(self, kwargs: dict[str, Any] | None) -> None:
        self._pre_done = True
        state = self.state
        state.mark("before_step")
        state.step_kwargs = {k: v for k, v in (kwargs or {}).items() if k != "closure"}
        self.board.prepare(state.step)
        self._run("before_step")
        self.board.apply_pending(state.step)  # host trips of before_step join this reduce
        self.board.reduce()  # the step's one collective
        state.mark("reduce_end")
        self._run("after_reduce")
        self._vetoing = False
        if self._pre_deciders:
            # Host sync, once per step, only because a check's action is veto/halt.
            new = torch.maximum(self.board.gnew, self.board.new).tolist()
            tripped = {c for c, i in self._tripped(new)}
            self._decide(tripped & set(self._pre_deciders), pre=True)
        if self._post_deciders and not self._vetoing:
            self._snapshot = StepSnapshot(self.ctx.local_tensors(), self.ctx.optimizer)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._closed:
            return
        if not self._pre_done:
            self._pre_step(kwargs)  # a closure the optimizer never called: verify what we can
        state = self.state
        state.mark("after_step")
        if self._vetoing and self._snapshot is not None:
            self._rollback()
        else:
            self._run("after_step")
            if self._post_deciders:
                self.board.apply_pending(state.step)
                new = self.board.reduce_new_only()
                tripped = {c for c, _ in self._tripped(new)} & set(self._post_deciders)
                if tripped and self._snapshot is not None:
                    self._rollback()
                self._decide(tripped, pre=False)
        self._snapshot = None
        self._max_forwards = max(self._max_forwards, self._forwards_since_step)
        self._forwards_since_step = 0
        state.loss = None
        if (state.step + 1) % self.ctx.config.log_every == 0:
            self.flush()  # host sync: log step
            self._record_metrics()
        state.times["step_end"] = time.perf_counter()
        state.prev_times, state.times = state.times, {}
        state.step += 1
        _note_heartbeat(state.step)

    # -- internals -------------------------------------------------------------------------
    def _record_metrics(self) -> None:
        """On a log step: the checks' telemetry to the ledger, when the run is recorded."""
        sink = self.router.ledger
        if sink is None:
            return
        values: dict[str, float] = {}
        for c in self.checks:
            try:
                values.update(c.telemetry())
            except Exception as exc:  # telemetry must never break the training step
                log.error("trainguard: telemetry of check %s failed: %s", c.name, exc)
        if "step_time" not in values:
            end, prev = self.state.times.get("after_step"), self.state.prev_times.get("after_step")
            if end is not None and prev is not None:
                values["step_time"] = end - prev
        if values:
            try:
                sink.append_metrics(self.state.step, self.ctx.rank, values)
            except Exception as exc:  # the ledger's failure must not stop training
                log.error("trainguard: could not append metrics to the ledger: %s", exc)

    def _forward_limit(self) -> int:
        # Gradient accumulation runs several forwards per step; four times the most seen
        # (and at least 64) is far from any honest loop.
        return max(64, 4 * self._max_forwards)

    def _steps_unobserved(self) -> None:
        # Emitted directly: the step hooks (and with them the collective) may never run again.
        self._emit(
            Alarm(
                check="sentinel",
                rule=STEPS_UNOBSERVED.id,
                rank=self.ctx.rank,
                host=self.ctx.host,
                step=self.state.step,
                message=f"{self._forwards_since_step} training forwards since the last observed optimizer step",
                evidence={
                    "forwards_since_step": self._forwards_since_step,
                    "most_forwards_per_step_seen": self._max_forwards,
                    "optimizer_step": repr(
                        self.ctx.optimizer.__dict__.get("step", type(self.ctx.optimizer).step)
                    ),
                },
                severity=STEPS_UNOBSERVED.severity,
                reporter=self.ctx.rank,
            ),
            [],
        )

    def _run(self, phase: str) -> None:
        for c in list(self.checks):
            try:
                getattr(c, phase)(self.state)
            except SentinelHalt:
                raise
            except Exception as exc:
                # Fail closed: a check that breaks is an alarm, and it stops running.
                self.checks.remove(c)
                self.skipped[c.name] = f"disabled after an error in {phase}: {exc!r}"
                self._emit(
                    Alarm(
                        check=c.name,
                        rule=CHECK_FAILED.id,
                        rank=self.ctx.rank,
                        host=self.ctx.host,
                        step=self.state.step,
                        message=f"check {c.name} failed in {phase} and was disabled: {exc!r}",
                        evidence={"traceback": traceback.format_exc(limit=6)},
                        severity=Severity.HIGH,
                        reporter=self.ctx.rank,
                    ),
                    [],
                )

    def _tripped(self, values: list[float]) -> list[tuple[Check, int]]:
        return [self._slot_owner[i] for i, v in enumerate(values) if v > 0]

    def _decide(self, tripped: set[Check], *, pre: bool) -> None:
        if not tripped:
            return
        halts = [c for c in tripped if c.config.action is Action.HALT]
        vetoes = [c for c in tripped if c.config.action is Action.VETO]
        action_for = {c.name: c.config.action.value for c in tripped}
        if vetoes and pre:
            self._vetoing = True
            self._snapshot = StepSnapshot(self.ctx.local_tensors(), self.ctx.optimizer)
        emitted = self._read_back(action_for=action_for)
        if halts:
            raise SentinelHalt(
                [a for a in emitted if a.check in {c.name for c in halts}] or emitted
            )

    def _rollback(self) -> None:
        assert self._snapshot is not None
        self._snapshot.restore()
        self.vetoed_steps += 1
        self.state.mark("rebaseline")
        for c in self.checks:
            c.rebaseline(self.state)

    def _read_back(self, *, action_for: dict[str, str]) -> list[Alarm]:
        if not self.board.reduced and not self.board.has_events():
            return []
        local, lfirst, glob, gfirst = self.board.snapshot()  # host sync
        ctx = self.ctx
        emitted: list[Alarm] = []
        for idx, (check, slot) in enumerate(self._slot_owner):
            action = action_for.get(check.name, check.config.action.value)
            events = self.board.take_events(idx)
            if local[idx] > 0 or events:
                step = int(lfirst[idx]) if lfirst[idx] >= 0 else self.state.step
                for det in check.describe(Trip(slot, step, tuple(events))):
                    rank = ctx.rank if det.rank is None else det.rank
                    rule = det.rule or check.rule
                    alarm = Alarm(
                        check=check.name,
                        rule=rule.id,
                        rank=rank,
                        host=ctx.hosts[rank] if rank < len(ctx.hosts) else "?",
                        step=step if det.step is None else det.step,
                        message=det.message,
                        evidence=det.evidence,
                        severity=det.severity or rule.severity,
                        action=action,
                        reporter=ctx.rank,
                    )
                    self._emit(alarm, emitted)
            peer = int(glob[idx]) - 1
            # A peer's trip is relayed only when this rank did not see it itself (checks that
            # decide from gathered values, like replicas, describe it fully on every rank).
            if glob[idx] > 0 and peer != ctx.rank and local[idx] <= 0:
                alarm = Alarm(
                    check=check.name,
                    rule=check.rule.id,
                    rank=peer,
                    host=ctx.hosts[peer] if peer < len(ctx.hosts) else "?",
                    step=max(int(gfirst[idx]), 0),
                    message=f"{check.rule.title} (detected on rank {peer}; evidence in its spool)",
                    evidence={"slot": slot},
                    severity=check.rule.severity,
                    action=action,
                    reporter=ctx.rank,
                )
                self._emit(alarm, emitted)
        self.board.clear()
        return emitted

    def _emit(self, alarm: Alarm, emitted: list[Alarm]) -> None:
        key = (alarm.check, alarm.rank, alarm.step, alarm.message)
        if key in self._seen:
            return
        self._seen.add(key)
        self._alarms.append(alarm)
        emitted.append(alarm)
        self.router.emit(alarm)


def _note_heartbeat(step: int) -> None:
    """Tell the launcher's heartbeat thread (if this rank runs under ``trainguard run``)."""
    try:
        from trainguard.sentinel.launcher._heartbeat import note_step
    except ImportError:
        return
    note_step(step)
