"""The contract every sentinel check implements (see docs/sentinel-api.md).

A check is a class derived from :class:`Check`, exported by its module as
``CHECK``. The sentinel builds one instance per protected job and calls its
phase methods from the hooks it installed:

=================  ====================================================================
``on_forward``     before the first training forward after a step (or every one, see
                   ``SentinelConfig.forward_verify``)
``before_step``    in the optimizer's step pre-hook, before the step's one collective
``after_reduce``   right after that collective: ``state.gathered(self)`` is filled and
                   ``state.global_new(self)`` holds every rank's trips of this step
``after_step``     in the optimizer's step post-hook
``describe``       on the host, when an alarm is read back (log step, veto, flush): turn
                   a trip into :class:`Detection` objects with evidence (may sync)
``close``          when the sentinel closes: remove what the check installed
=================  ====================================================================

Phase methods run on the hot path: device work only, no ``.item()``, no
``.tolist()``, no Python loop over all parameters where a batched op will do. A
check trips with ``state.trip(self, cond)`` (``cond`` a 0-d device tensor, no sync)
or, for something already known on the host, ``state.trip_host(self, message,
**evidence)`` (thread-safe, callable from any thread or audit hook).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from trainguard.findings import Rule, Severity
from trainguard.sentinel._flags import FlagBoard, HostEvent
from trainguard.sentinel.config import CheckConfig, SentinelConfig

if TYPE_CHECKING:
    import torch.distributed as dist

    from trainguard.sentinel._fingerprint import Fingerprinter

__all__ = ["Check", "Detection", "SentinelContext", "StepState", "Trip"]


@dataclass(frozen=True)
class Detection:
    """What :meth:`Check.describe` returns: one alarm's text and evidence."""

    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    step: int | None = None  # defaults to the trip's step
    severity: Severity | None = None  # defaults to the check's rule severity
    rule: Rule | None = None  # defaults to the check's rule
    rank: int | None = None  # the rank the problem is on, when not this one (replicas)


@dataclass(frozen=True)
class Trip:
    """A slot of a check that tripped on this rank, as read back on the host."""

    slot: int  # index within the check's own slots
    step: int  # the first step it tripped at since the last read-back
    events: tuple[HostEvent, ...]  # host-side trips of this slot, with their evidence


@dataclass
class SentinelContext:
    """What every check may use; built once by :func:`trainguard.protect`.

    ``params`` are the optimizer's trainable parameters in a fixed order (shared
    parameters once); ``names[i]`` names ``params[i]``; ``local_tensors()`` gives the
    rank-local data of each (a DTensor's shard, else the tensor itself).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    names: list[str]
    replicated: list[bool]
    device: torch.device
    rank: int
    world: int
    hosts: list[str]
    group: dist.ProcessGroup | None
    config: SentinelConfig
    fingerprinter: Fingerprinter
    schedulers: list[Any] = field(default_factory=list)
    #: (kind, owner object, handle id) of every hook the sentinel installed (census checks them).
    own_hooks: list[tuple[str, object, int]] = field(default_factory=list)
    #: functions the sentinel replaced on purpose: (owner, attribute, wrapper).
    own_patches: list[tuple[object, str, object]] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)
    is_dtensor: bool = False

    def local_tensors(self) -> list[torch.Tensor]:
        """Rank-local data of every parameter, detached (cheap: no copy)."""
        if self.is_dtensor:
            return [getattr(p, "_local_tensor", p).detach() for p in self.params]
        return [p.detach() for p in self.params]


class StepState:
    """Per-step state handed to every phase; owned by the sentinel core.

    Attributes:
        step: optimizer steps completed so far (the step being prepared or verified).
        phase: ``"forward"``, ``"before_step"``, ``"after_reduce"`` or ``"after_step"``.
        step_kwargs: keyword arguments of the current ``optimizer.step`` call
            (``grad_scale``/``found_inf`` from a GradScaler with fused optimizers).
        loss: the last tensor given to ``Sentinel.observe(loss=...)`` this step.
        times: host ``time.perf_counter()`` at each phase entry of this step, by phase name
            (``"forward"``, ``"before_step"``, ``"reduce_end"`` after the collective,
            ``"after_step"``, ``"step_end"`` after every post-step check ran).
        prev_times: the same for the previous step.
    """

    def __init__(self, ctx: SentinelContext, board: FlagBoard, slot_base: dict[str, int]) -> None:
        self.ctx = ctx
        self.board = board
        self._base = slot_base
        self._gather_index: dict[str, int] = {}
        self.step = 0
        self.phase = "setup"
        self.step_kwargs: dict[str, Any] = {}
        self.loss: torch.Tensor | None = None
        self.times: dict[str, float] = {}
        self.prev_times: dict[str, float] = {}
        self._fp: torch.Tensor | None = None

    # -- tripping --------------------------------------------------------------------
    def trip(self, check: Check, cond: torch.Tensor, slot: int = 0) -> None:
        """Trip ``check``'s ``slot`` where ``cond`` (a 0-d device tensor) is true. No sync."""
        self.board.trip(self._base[check.name] + self._slot(check, slot), cond, self.step)

    def trip_host(self, check: Check, message: str, *, slot: int = 0, **evidence: Any) -> None:
        """Trip from the host (any thread) with the alarm's message and evidence."""
        event = HostEvent(
            self._base[check.name] + self._slot(check, slot), self.step, message, evidence
        )
        self.board.trip_host(event)

    @staticmethod
    def _slot(check: Check, slot: int) -> int:
        if not 0 <= slot < check.slots:
            raise IndexError(f"check {check.name!r} has {check.slots} slot(s), not {slot}")
        return slot

    # -- the collective's results ------------------------------------------------------
    def publish(self, check: Check, values: torch.Tensor) -> None:
        """Put this rank's ``check.gather`` values into the step collective (before_step)."""
        self.board.publish(self._gather_index[check.name], values)

    def gathered(self, check: Check) -> torch.Tensor:
        """``[world, check.gather]`` float64: every rank's published values (after_reduce)."""
        return self.board.region(self._gather_index[check.name])

    def global_new(self, check: Check) -> torch.Tensor:
        """Trips of ``check``'s slots on any rank in this step (rank+1 of the highest, or 0)."""
        base = self._base[check.name]
        return self.board.gnew[base : base + check.slots]

    # -- shared, lazily computed per phase ---------------------------------------------
    def fingerprints(self) -> torch.Tensor:
        """Fingerprints of all parameters now (computed once per phase, shared by checks)."""
        if self._fp is None:
            fp: torch.Tensor = self.ctx.fingerprinter(self.ctx.local_tensors())
            self._fp = fp
        return self._fp

    def due(self, check: Check) -> bool:
        """True on the steps where ``check`` runs its periodic work (``every``)."""
        return self.step % check.config.every == 0

    def mark(self, phase: str) -> None:
        """Enter ``phase`` (called by the core): timestamps it and drops per-phase caches."""
        self.phase = phase
        self.times[phase] = time.perf_counter()
        if phase != "reduce_end":
            self._fp = None


class Check:
    """Base class of a sentinel check. Subclasses set the class attributes and override phases.

    Class attributes:
        name: the check's config key (``"weights"``); unique.
        rule: the :class:`~trainguard.findings.Rule` its alarms carry by default.
        defaults: its default :class:`CheckConfig` (the options it accepts, with defaults).
        slots: how many independent flag slots it uses (default 1).
        gather: how many float64 values per rank it all-gathers through the step collective.
        decides_after_step: its trips come from ``after_step`` (a veto then rolls back).
    """

    name: ClassVar[str] = ""
    rule: ClassVar[Rule]
    defaults: ClassVar[CheckConfig] = CheckConfig()
    slots: ClassVar[int] = 1
    gather: ClassVar[int] = 0
    decides_after_step: ClassVar[bool] = False

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.options = config.options

    @classmethod
    def applicable(cls, ctx: SentinelContext) -> str | None:
        """``None`` when the check can run for ``ctx``, else why not (reported, never silent)."""
        return None

    def on_forward(self, state: StepState) -> None:
        """Before a training forward (see the module docstring)."""

    def before_step(self, state: StepState) -> None:
        """In the step pre-hook, before the collective."""

    def after_reduce(self, state: StepState) -> None:
        """Right after the collective."""

    def after_step(self, state: StepState) -> None:
        """In the step post-hook."""

    def rebaseline(self, state: StepState) -> None:
        """Parameters changed on purpose outside the optimizer (a veto's rollback, a
        ``Sentinel.sanctioned()`` block): take fresh references, raise nothing."""

    def describe(self, trip: Trip) -> Sequence[Detection]:
        """Host side: alarms for a trip. The default reports the host events as they are."""
        if trip.events:
            return [Detection(e.message, dict(e.evidence), step=e.step) for e in trip.events]
        return [Detection(f"{self.rule.title} (slot {trip.slot})")]

    def telemetry(self) -> dict[str, float]:
        """Host side, on log steps only (a sync is allowed): the latest values this check
        measured that are worth charting (``{"loss": ...}``); the default has none."""
        return {}

    def close(self) -> None:
        """Undo whatever the check installed."""


#: Called with the sentinel when a check wants its hooks registered for the census.
HookRegistrar = Callable[[str, object, int], None]
