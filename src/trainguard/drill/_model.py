"""A small GPT-style model over bytes, and batches of the text shipped with the package.

Used by the drills' training job (:mod:`trainguard.drill._train`) and by the
sentinel overhead benchmark: a decoder-only transformer with learned positions,
dropout (so the RNG is drawn every step) and a causal mask, byte-level so any
text trains it without a tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import torch
from torch import nn

__all__ = ["GPT", "Block", "batches", "corpus"]

#: The text the drills train on, shipped in ``trainguard/drill/data/``.
CORPUS_FILE = "shared-cluster-notes.txt"


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and an MLP, both residual."""

    def __init__(self, d: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True, dropout=dropout)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class GPT(nn.Module):
    """A small decoder-only transformer over bytes (vocabulary 256)."""

    def __init__(self, layers: int, d: int, heads: int, ctx: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.tok = nn.Embedding(256, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256, bias=False)
        self.mask: torch.Tensor
        self.register_buffer("mask", torch.triu(torch.full((ctx, ctx), float("-inf")), 1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x, self.mask[:t, :t])
        out: torch.Tensor = self.head(self.ln(x))
        return out


def corpus() -> bytes:
    """The shipped training text (original prose written for trainguard, Apache-2.0)."""
    return resources.files("trainguard.drill").joinpath("data", CORPUS_FILE).read_bytes()


def batches(
    text: bytes, batch: int, ctx: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(inputs, next-byte targets)`` batches of random windows of ``text``.

    The windows come from a private generator seeded with ``seed``, so the data
    order never depends on (and never disturbs) the global RNG.
    """
    data = torch.tensor(list(text), dtype=torch.long)
    if len(data) <= ctx + 1:
        raise ValueError(f"the text ({len(data)} bytes) is shorter than a window of {ctx + 1}")
    g = torch.Generator().manual_seed(seed)
    offsets = torch.arange(ctx)
    while True:
        starts = torch.randint(0, len(data) - ctx - 1, (batch, 1), generator=g)
        yield data[starts + offsets], data[starts + offsets + 1]
