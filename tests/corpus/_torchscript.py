"""A TorchScript module whose ``__setstate__`` runs code when ``torch.jit.load`` reads it.

``torch.from_file(path, shared=True, size=1)`` creates ``path``: the harmless
stand-in for what load-time TorchScript code can do to the file system.
Scripting and saving never call ``__setstate__``; only loading does.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


class MarkerOnLoad(torch.nn.Module):
    """Creates the file named by ``marker`` when deserialized."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.weight = torch.ones(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return (self.marker, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.marker = state[0]
        # The result is used so the TorchScript compiler keeps the call.
        touched = torch.from_file(state[0], shared=True, size=1)
        self.weight = state[1] + touched.sum() * 0
        self.training = state[2]


class Plain(torch.nn.Module):
    """A TorchScript module with no load-time code."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


def _save(module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # TorchScript is deprecated, still loaded
        torch.jit.save(torch.jit.script(module), str(path))


def save_marker_module(marker: str, path: Path) -> None:
    _save(MarkerOnLoad(marker), path)


def save_plain_module(path: Path) -> None:
    _save(Plain(), path)
