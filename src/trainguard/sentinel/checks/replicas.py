"""Check 6, cross-replica consistency: replicated parameters are equal on every replica.

Before each step every rank reduces the fingerprints of its replicated
parameters (the ones the weights check just computed) to one keyed 52-bit value
(exact integer arithmetic, so equal parameters give equal values on any rank)
and publishes it in the step collective: 8 bytes per rank. After the collective
each rank compares every replica with its group's majority (the lowest rank wins a
tie, so with two replicas the higher rank is named, and the weights check on the
edited rank names the tensor). A rank that differs was tampered with or suffered
silent data corruption.

Replica groups: under DDP all ranks; under HSDP the ranks holding the same shard;
plain FSDP has none (the check reports itself not applicable).

Options: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from trainguard.findings import Rule, Severity
from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip
from trainguard.sentinel.config import CheckConfig
from trainguard.sentinel.integrations import fsdp

__all__ = ["CHECK", "REPLICA_DIVERGED", "ReplicasCheck"]

REPLICA_DIVERGED = Rule(
    "sentinel.replica-diverged",
    Severity.CRITICAL,
    "A replica's parameters differ from its peers'",
    "Data-parallel replicas apply identical updates and must hold bit-identical parameters. "
    "A rank whose replicated parameters differ was edited, received a different update, or "
    "hit silent data corruption; every later step mixes its gradients into all replicas.",
)

#: Above this many ranks the majority vote (a world x world comparison) gives way to
#: comparing every rank with the lowest rank of its group.
_MAJORITY_MAX_WORLD = 512


class ReplicasCheck(Check):
    name = "replicas"
    rule = REPLICA_DIVERGED
    defaults = CheckConfig()
    gather = 1

    @classmethod
    def applicable(cls, ctx: SentinelContext) -> str | None:
        if ctx.world < 2:
            return "single process: no replicas"
        if not any(ctx.replicated):
            return "no replicated parameters (fully sharded)"
        return None

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        super().__init__(ctx, config)
        dev = ctx.device
        self.mask = torch.tensor(ctx.replicated, dtype=torch.bool, device=dev)
        first = next(p for p, r in zip(ctx.params, ctx.replicated, strict=True) if r)
        keys: list[Any] = [None] * ctx.world
        dist.all_gather_object(keys, fsdp.replica_key(first), group=ctx.group)  # setup only
        groups: dict[str, list[int]] = {}
        for r, k in enumerate(keys):
            groups.setdefault(repr(k), []).append(r)
        same = torch.zeros(ctx.world, ctx.world, dtype=torch.bool)
        lowest = torch.zeros(ctx.world, dtype=torch.int64)
        for members in groups.values():
            for r in members:
                same[r, members] = True
                lowest[r] = members[0]
        self.same = same.to(dev)
        self.lowest = lowest.to(dev)
        self.group_size = {r: len(m) for m in groups.values() for r in m}
        # Tie-break of the majority vote: more votes first, then the lower rank.
        self.order = torch.arange(ctx.world, 0, -1, dtype=torch.float64, device=dev) / (
            ctx.world + 1
        )
        self.diverged = torch.full((ctx.world,), -1, dtype=torch.int64, device=dev)
        self.values = torch.zeros(ctx.world, dtype=torch.float64, device=dev)
        self.was_different = torch.zeros(ctx.world, dtype=torch.bool, device=dev)

    def before_step(self, state: StepState) -> None:
        value = self.ctx.fingerprinter.combine(state.fingerprints(), self.mask)
        state.publish(self, value.reshape(1))

    def after_reduce(self, state: StepState) -> None:
        vals = state.gathered(self)[:, 0]
        if self.ctx.world <= _MAJORITY_MAX_WORLD:
            agree = (vals[:, None] == vals[None, :]) & self.same
            votes = agree.sum(dim=1).to(torch.float64) + self.order
            # For each rank, the member of its group with the most votes holds the reference.
            ref = torch.where(
                self.same, votes[None, :], torch.full_like(self.same, -1, dtype=torch.float64)
            ).argmax(1)
        else:
            ref = self.lowest
        differs = vals != vals[ref]
        # A replica that diverged stays diverged (DDP never re-syncs parameters): report the
        # moment each rank starts to differ, not every step after.
        started = differs & ~self.was_different
        self.was_different = differs
        fresh = started & (self.diverged < 0)
        self.diverged = torch.where(
            fresh, torch.full_like(self.diverged, state.step), self.diverged
        )
        self.values = torch.where(fresh, vals, self.values)
        state.trip(self, started.any())  # identical on every rank: all saw the same values

    def describe(self, trip: Trip) -> Sequence[Detection]:
        steps, values = self.diverged.tolist(), self.values.tolist()  # host sync: read-back
        self.diverged.fill_(-1)
        out = []
        for r, s in enumerate(steps):
            if s < 0:
                continue
            note = (
                " (two replicas: which one is wrong is ambiguous)"
                if self.group_size.get(r) == 2
                else ""
            )
            out.append(
                Detection(
                    f"rank {r}'s replicated parameters differ from its replica group's majority{note}",
                    {
                        "diverging_rank": r,
                        "fingerprint": int(values[r]),
                        "replica_group_size": self.group_size.get(r),
                    },
                    step=s,
                    rank=r,
                )
            )
        return out


CHECK = ReplicasCheck
