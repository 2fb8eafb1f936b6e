"""Keyed, order-sensitive fingerprints of tensors, computed on their device.

For a tensor viewed as a matrix ``P`` (``R x C``), the fingerprint is the bilinear
form ``w_R . (P @ w_C)`` with secret pseudo-random weight vectors ``w_R`` and
``w_C`` drawn on the device from a key that comes from ``os.urandom`` and is not
kept. Because every position has its own secret weight, swapping two different
elements changes the result, which an XOR or plain-sum hash
(``torch.hash_tensor``) does not see. The row products run in the tensor's
precision as one matrix-vector product (a single pass over the data, no copy);
the rows are combined in float64 so that a change of one row sum by one unit in
the last place survives into the fingerprint.

Resolution, honestly: a row sum of ``C`` float32 products is rounded to about
``2**-24`` of its magnitude, so an edit of a single element smaller than roughly
``sqrt(C) * 2**-24`` relative to that element can vanish in the rounding. Edits
that matter to training (sign flips, noise, scaling, swaps, zeroing, replacing a
tensor) are far above that. Half-precision tensors are upcast to float32 first.

The same inputs on the same device and kernel give bit-identical results, which
is what the weights check (same rank, between steps) and the replicas check
(same hardware across ranks) compare: every reduction is a matrix-vector product
or a row sum of a dense, padded matrix, never an atomic scatter. Nothing here
synchronises with the host.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Fingerprinter", "fresh_key"]

#: 1-D tensors up to this length are fingerprinted with one dot product.
_SMALL = 8192
#: Long 1-D tensors are folded into rows of this width.
_FOLD = 1024


def fresh_key() -> int:
    """A 63-bit key from the OS entropy pool (never derived from job-visible RNG state)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


@dataclass(frozen=True)
class _Plan:
    index: int  # position in the caller's tensor list
    rows: int
    cols: int
    tail: int  # elements after rows*cols (long 1-D tensors only)


def _weights(
    n: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # Magnitudes in [0.5, 1.5) with random signs: never zero, all distinct with probability 1.
    mag = torch.rand(n, generator=gen, device=device, dtype=torch.float64) + 0.5
    sign = torch.randint(0, 2, (n,), generator=gen, device=device, dtype=torch.int64) * 2 - 1
    return (mag * sign).to(dtype)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _Bucket:
    """Matrix-shaped tensors whose row sums land in one padded ``[members, width]`` buffer.

    Padding makes every per-tensor reduction a plain row sum of a dense matrix, which is
    deterministic on every device (no atomics), unlike ``index_add_``/``scatter_add_``.
    """

    def __init__(
        self, plans: list[_Plan], dtype: torch.dtype, gen: torch.Generator, device: torch.device
    ) -> None:
        self.plans = plans
        self.dtype = dtype
        width = max(p.rows for p in plans)
        self.rows = torch.zeros(len(plans), width, dtype=dtype, device=device)
        self.row_w = torch.zeros(len(plans), width, dtype=torch.float64, device=device)
        for j, p in enumerate(plans):
            self.row_w[j, : p.rows] = _weights(p.rows, gen, device, torch.float64)
        self.outs = [self.rows[j, : p.rows] for j, p in enumerate(plans)]  # contiguous slices


class Fingerprinter:
    """Per-tensor fingerprints of a fixed list of tensor shapes.

    Args:
        tensors: example tensors (shapes, dtypes and device are taken from them).
        key: the secret; use :func:`fresh_key`.

    Calling the fingerprinter with tensors of the same shapes returns a float64
    vector with one fingerprint per tensor, on the device of the first tensor.
    Per call: one matrix-vector product per matrix-shaped tensor, and a handful of
    batched operations for everything else.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], *, key: int) -> None:
        if not tensors:
            raise ValueError("nothing to fingerprint")
        self.device = tensors[0].device
        dev = self.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(key)
        self._shapes = [tuple(t.shape) for t in tensors]
        small: list[_Plan] = []
        big: dict[tuple[int, torch.dtype], list[_Plan]] = {}
        for i, t in enumerate(tensors):
            n = t.numel()
            if t.dim() >= 2 and n > 0:
                plan = _Plan(i, t.shape[0], n // t.shape[0], 0)
            elif n <= _SMALL:
                plan = _Plan(i, 1, n, 0)
            else:
                plan = _Plan(i, n // _FOLD, _FOLD, n % _FOLD)
            if plan.rows == 1:
                small.append(plan)
            else:
                # Buckets by compute dtype and power-of-two row count: padding wastes < 2x.
                key_ = (1 << (plan.rows - 1).bit_length(), _compute_dtype(t.dtype))
                big.setdefault(key_, []).append(plan)
        # Column weights: one vector per distinct width and dtype. Tensors sharing a shape
        # are still compared each against its own reference, so a swap of whole tensors
        # is seen; row weights are distinct for every row of every tensor.
        self._col: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        for plans in big.values():
            for p in plans:
                dt = _compute_dtype(tensors[p.index].dtype)
                if (p.cols, dt) not in self._col:
                    self._col[(p.cols, dt)] = _weights(p.cols, gen, dev, dt)
        self._buckets = [_Bucket(plans, dt, gen, dev) for (_, dt), plans in big.items()]
        # Small tensors and tails of long 1-D tensors: copied (one foreach op) into the rows
        # of a padded float64 matrix, weighted per element, summed per row.
        segments: list[tuple[int, int]] = [(p.index, 0) for p in small]  # (tensor, start)
        lengths = [p.cols for p in small]
        for plans in big.values():
            for p in plans:
                if p.tail:
                    segments.append((p.index, p.rows * p.cols))
                    lengths.append(p.tail)
        self._segments = segments
        width = max(lengths, default=1) or 1
        self._seg_buf = torch.zeros(len(segments), width, dtype=torch.float64, device=dev)
        self._seg_w = torch.zeros(len(segments), width, dtype=torch.float64, device=dev)
        for j, n in enumerate(lengths):
            self._seg_w[j, :n] = _weights(n, gen, dev, torch.float64)
        self._seg_rows = [self._seg_buf[j, :n] for j, n in enumerate(lengths)]
        # Where each partial result goes in the output (param order): heads and small tensors
        # form a permutation; each tail is added to its tensor's head afterwards.
        order = [p.index for b in self._buckets for p in b.plans] + [p.index for p in small]
        self._order = torch.tensor(order, dtype=torch.int64, device=dev)
        self._tails = torch.tensor(
            [i for i, _ in segments[len(small) :]], dtype=torch.int64, device=dev
        )
        self._n = len(tensors)
        self._mix = (
            torch.randint(-(2**62), 2**62, (len(tensors),), generator=gen, device=dev) * 2 + 1
        )

    def __len__(self) -> int:
        return len(self._shapes)

    def __call__(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fingerprints of ``tensors`` (same shapes as at construction), float64, in order."""
        parts: list[torch.Tensor] = []
        for b in self._buckets:
            for p, out in zip(b.plans, b.outs, strict=True):
                t = tensors[p.index]
                main = (
                    t.reshape(-1)[: p.rows * p.cols].view(p.rows, p.cols)
                    if p.tail
                    else t.reshape(p.rows, p.cols)
                )
                torch.mv(main.to(b.dtype), self._col[(p.cols, b.dtype)], out=out)
            parts.append((b.rows.to(torch.float64) * b.row_w).sum(dim=1))
        if self._segments:
            srcs = [
                tensors[i].reshape(-1)[start : start + row.numel()]
                if start
                else tensors[i].reshape(-1)
                for (i, start), row in zip(self._segments, self._seg_rows, strict=True)
            ]
            torch._foreach_copy_(self._seg_rows, srcs)
            parts.append((self._seg_buf * self._seg_w).sum(dim=1))
        flat = torch.cat(parts) if len(parts) > 1 else parts[0]
        heads = len(self._order)
        out = torch.empty(self._n, dtype=torch.float64, device=self.device)
        out.index_copy_(0, self._order, flat[:heads])
        if len(self._tails):
            # At most one tail per tensor: unique indices, so no accumulation order to worry about.
            out.index_copy_(0, self._tails, out.index_select(0, self._tails) + flat[heads:])
        return out

    def combine(self, fingerprints: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One keyed, exactly reproducible value (float64 holding 52 bits) for many fingerprints.

        Integer arithmetic on the bit patterns wraps modulo 2**64, which is exact and
        independent of reduction order, so equal inputs give equal outputs on any device.
        ``mask`` (bool, same length) selects which fingerprints take part.
        """
        bits = fingerprints.view(torch.int64) * self._mix
        if mask is not None:
            bits = bits * mask.to(torch.int64)
        total = bits.sum()
        return (total & ((1 << 52) - 1)).to(torch.float64)
