"""FSDP2 (``fully_shard``): parameters are DTensors; the sentinel works on local shards.

* Weights, updates and anomaly checks fingerprint and sample each rank's local
  shard (``DTensor._local_tensor``), so their cost is divided by the shard count.
* The replicas check compares only what is replicated: a parameter whose
  placements are all ``Replicate`` is compared across all ranks; under HSDP
  (``(Replicate(), Shard(0))`` on a 2-D mesh) a rank is compared with the ranks that
  hold the same shard (same coordinate on every sharded mesh dimension). Plain
  FSDP (``Shard`` only) has no replicas to compare, and the check says so.

Example::

    from torch.distributed.fsdp import fully_shard
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters())
    sentinel = trainguard.protect(model, opt)
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["is_dtensor", "replica_key", "replicated"]


def is_dtensor(t: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(t, DTensor)


def replicated(t: torch.Tensor) -> bool:
    """True when every rank (of its replica group) holds the same data for ``t``."""
    if not is_dtensor(t):
        return True
    from torch.distributed.tensor import Replicate

    placements: Any = getattr(t, "placements", ())
    return any(isinstance(p, Replicate) for p in placements)


def replica_key(t: torch.Tensor) -> tuple[int, ...]:
    """This rank's coordinates on the mesh dimensions along which ``t`` is *not* replicated.

    Ranks with equal keys must hold equal local data for a replicated ``t``.
    """
    if not is_dtensor(t):
        return ()
    from torch.distributed.tensor import Replicate

    dt: Any = t
    coords = dt.device_mesh.get_coordinate() or []
    return tuple(
        c for c, p in zip(coords, dt.placements, strict=False) if not isinstance(p, Replicate)
    )
