"""Check 3, RNG integrity: no reseeding, no rewinding, once training has started.

Three signals, from the first optimizer step on:

* **seed calls**: ``torch.manual_seed``, ``random.seed``, ``numpy.random.seed``,
  ``set_rng_state`` and friends are wrapped (:mod:`._seedwatch`); a call reports
  the function, its arguments and the caller's stack.
* **state hashing**: the torch CPU (and initialised CUDA) generator, Python's
  ``random`` and NumPy's legacy global generator states are hashed before each
  training forward and before each step. A state that returns to a value seen at
  an earlier observation (not the immediately preceding one, which only means no
  random numbers were drawn) is a rewind; a torch state equal to the freshly
  seeded state of ``torch.initial_seed()`` after training began, or a changed
  ``initial_seed()``, is a reseed (``manual_seed(same seed)`` leaves
  ``initial_seed`` unchanged, which is why the state is hashed). This sees direct
  generator calls that bypass the wrappers, whenever the tampered state is
  observed before more numbers are drawn.
* **cross-rank equality** (option ``equal_across_ranks``, e.g. ``("torch",)`` when
  every rank seeds identically by design): the hash rides the step collective and
  ranks that differ are named.

Host-only work (a few microseconds of hashing); no device sync.

Options: ``equal_across_ranks`` (tuple of "torch", "cuda", "numpy", "python"),
``history`` (how many past states per generator are remembered, default 4096).
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from trainguard.errors import ConfigError
from trainguard.findings import Rule, Severity
from trainguard.sentinel.checks import _seedwatch
from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip
from trainguard.sentinel.config import CheckConfig

__all__ = ["CHECK", "RNG_DIVERGED", "RNG_RESEEDED", "RNG_REWOUND", "RngCheck"]

RNG_RESEEDED = Rule(
    "sentinel.rng-reseeded",
    Severity.HIGH,
    "A random generator was reseeded during training",
    "A seed function was called, or a generator's state was reset to a freshly seeded "
    "state, after training started. Reseeding mid-run changes data order, dropout and "
    "initialisation of later steps, so the run no longer reproduces. The evidence names "
    "the function and the caller's stack.",
)
RNG_REWOUND = Rule(
    "sentinel.rng-rewound",
    Severity.HIGH,
    "A random generator's state was rewound",
    "A generator returned to a state it had at an earlier step: the same random numbers "
    "will be drawn again (repeated data, repeated dropout masks). Legitimate code restores "
    "RNG state only when resuming from a checkpoint, before training starts.",
)
RNG_DIVERGED = Rule(
    "sentinel.rng-diverged",
    Severity.MEDIUM,
    "Random generator states differ across ranks where they must be equal",
    "The job declared that these generators stay identical on every rank, and this rank's "
    "state differs from rank 0's.",
)

_SOURCES = ("torch", "cuda", "numpy", "python")


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _torch_state(gen: torch.Generator) -> int:
    return _digest(gen.get_state().numpy().tobytes())


def _states() -> dict[str, int]:
    """Hashes of every generator in use (host-side copies of small state buffers)."""
    out = {"torch": _torch_state(torch.default_generator)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        out["cuda"] = _digest(b"".join(s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()))
    np = sys.modules.get("numpy")
    if np is not None:
        st = np.random.get_state(legacy=True)
        out["numpy"] = _digest(st[1].tobytes() + int(st[2]).to_bytes(4, "little"))
    out["python"] = hash(random.getstate()) & ((1 << 63) - 1)  # int tuples hash deterministically
    return out


def _fresh_torch_state(seed: int) -> int:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return _torch_state(gen)


class RngCheck(Check):
    name = "rng"
    rule = RNG_RESEEDED
    defaults = CheckConfig(options={"equal_across_ranks": (), "history": 4096})
    slots = 3
    gather = 1

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        super().__init__(ctx, config)
        equal = self.options["equal_across_ranks"]
        equal = (equal,) if isinstance(equal, str) else equal
        if not isinstance(equal, tuple) or not set(equal) <= set(_SOURCES):
            raise ConfigError(
                "rng option equal_across_ranks must list some of " + ", ".join(_SOURCES)
            )
        self.equal: tuple[str, ...] = equal
        self.history = config.integer("history", minimum=2)
        self.armed = False
        self.calls = 0  # wrapped seed calls since the last observation (already reported)
        self.state: StepState | None = None
        self.seen: dict[str, OrderedDict[int, int]] = {s: OrderedDict() for s in _SOURCES}
        self.prev: dict[str, int] = {}
        self.replaying: set[str] = set()  # generators replaying an old sequence (reported once)
        self.seed = torch.initial_seed()
        self.fresh = _fresh_torch_state(self.seed)
        self.diverged = torch.zeros(ctx.world, dtype=torch.bool, device=ctx.device)
        self._observe_quiet()
        self._patches = _seedwatch.add_listener(self._on_seed_call)
        ctx.own_patches.extend(self._patches)

    def _observe_quiet(self) -> dict[str, int]:
        now = _states()
        for src, h in now.items():
            self._remember(src, h, -1)
        self.prev = now
        return now

    def _remember(self, src: str, h: int, step: int) -> None:
        seen = self.seen[src]
        seen[h] = step
        seen.move_to_end(h)
        while len(seen) > self.history:
            seen.popitem(last=False)

    def _on_seed_call(self, function: str, args: tuple[Any, ...], stack: list[str]) -> None:
        state = self.state
        if not self.armed or state is None:
            return
        self.calls += 1
        state.trip_host(
            self, f"{function}{args!r} called during training", slot=0,
            function=function, args=list(args), stack=stack[-8:],
        )  # fmt: skip

    def _observe(self, state: StepState, where: str) -> None:
        self.state = state
        now = _states()
        seed = torch.initial_seed()
        # A wrapped call was already reported with its stack; the hashes would say it again.
        quiet, self.calls = self.calls > 0, 0
        reseeded = seed != self.seed
        if reseeded:
            if not quiet:
                state.trip_host(
                    self, f"torch generator reseeded ({self.seed} -> {seed}) {where}", slot=0,
                    before=self.seed, after=seed, observed=where, direct_generator_call=True,
                )  # fmt: skip
            self.seed, self.fresh = seed, _fresh_torch_state(seed)
        for src, h in now.items():
            if h == self.prev.get(src):
                continue  # nothing drawn since the last observation
            replay = h in self.seen[src]
            if quiet or (src == "torch" and reseeded) or (replay and src in self.replaying):
                pass
            elif src == "torch" and h == self.fresh and self.armed:
                state.trip_host(
                    self, f"torch generator reset to the fresh state of seed {seed} {where}", slot=0,
                    seed=seed, observed=where, direct_generator_call=True,
                )  # fmt: skip
            elif replay:
                then = self.seen[src][h]
                state.trip_host(
                    self, f"{src} RNG state rewound to its state at step {then} ({where})", slot=1,
                    generator=src, state_seen_at_step=then, observed=where,
                )  # fmt: skip
            if replay:
                self.replaying.add(src)  # the next states of a rewound generator recur too
            else:
                self.replaying.discard(src)
                self._remember(src, h, state.step)
        self.prev = now
        if self.equal:
            mixed = _digest(repr(sorted((s, now.get(s, 0)) for s in self.equal)).encode()) >> 11
            state.publish(
                self, torch.tensor([float(mixed)], dtype=torch.float64).to(self.ctx.device)
            )

    def on_forward(self, state: StepState) -> None:
        self._observe(state, "before a forward")

    def before_step(self, state: StepState) -> None:
        self._observe(state, "before the optimizer step")

    def after_reduce(self, state: StepState) -> None:
        if not self.equal or self.ctx.world < 2:
            return
        values = state.gathered(self)[:, 0]
        differs = values != values[0]
        self.diverged |= differs
        state.trip(self, differs.any(), slot=2)

    def after_step(self, state: StepState) -> None:
        self.armed = True  # seeding before the first step is set-up, after it tampering

    def describe(self, trip: Trip) -> Sequence[Detection]:
        if trip.slot == 2:
            ranks = [r for r, d in enumerate(self.diverged.tolist()) if d]  # host sync: read-back
            self.diverged.zero_()
            return [
                Detection(f"RNG state ({', '.join(self.equal)}) differs from rank 0's", {"ranks": ranks},
                          rule=RNG_DIVERGED, rank=r)
                for r in ranks if r != 0
            ]  # fmt: skip
        rule = RNG_RESEEDED if trip.slot == 0 else RNG_REWOUND
        return [Detection(e.message, dict(e.evidence), step=e.step, rule=rule) for e in trip.events]

    def close(self) -> None:
        _seedwatch.remove_listener(self._on_seed_call)


CHECK = RngCheck
