"""Scaffolding: to be replaced by the real torch_legacy format module."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "torch_legacy"


def detect(data: memoryview, filename: str | None) -> bool:
    return False


def scan(data: memoryview, ctx: ScanContext) -> None:
    raise NotImplementedError("torch_legacy")
