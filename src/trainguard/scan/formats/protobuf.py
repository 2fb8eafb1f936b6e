"""Scaffolding: to be replaced by the real protobuf format module."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "protobuf"


def detect(data: memoryview, filename: str | None) -> bool:
    return False


def scan(data: memoryview, ctx: ScanContext) -> None:
    raise NotImplementedError("protobuf")
