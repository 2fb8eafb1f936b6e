"""The explicit, ordered registry of artifact formats.

Each format is one module with the same small surface::

    NAME: str
    def detect(data: memoryview, filename: str | None) -> bool: ...
    def scan(data: memoryview, ctx: ScanContext) -> None: ...

``detect`` decides from content (magic bytes, structure), never from the file
name alone; ``filename`` may only break ties between formats whose content
is ambiguous. ``scan`` reports findings on ``ctx`` and asks ``ctx.scan_nested``
for embedded content; it may raise on malformed input (the engine turns that
into a finding, failing closed).

Order matters: the first format whose ``detect`` accepts the buffer wins, so
specific formats come before general ones (legacy torch and joblib before
plain pickle; torch zip, Keras and npz before generic zip; text last).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from trainguard.scan.formats import (
    compressed,
    gguf,
    hdf5,
    joblib,
    keras,
    media,
    npz,
    numpy,
    onnx,
    pickle,
    protobuf,
    safetensors,
    tar,
    text,
    torch_legacy,
    torch_tar,
    torch_zip,
    zip,
)

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

__all__ = ["FORMATS", "Format", "by_name"]


class Format(Protocol):
    """What every format module provides."""

    NAME: str

    def detect(self, data: memoryview, filename: str | None) -> bool: ...

    def scan(self, data: memoryview, ctx: ScanContext) -> None: ...


FORMATS: tuple[Format, ...] = (
    safetensors,
    gguf,
    numpy,
    hdf5,
    torch_zip,
    keras,
    npz,
    zip,
    torch_tar,
    tar,
    compressed,
    onnx,
    torch_legacy,
    joblib,
    pickle,
    media,
    protobuf,
    text,
)

_BY_NAME = {fmt.NAME: fmt for fmt in FORMATS}


def by_name(name: str) -> Format | None:
    """The registered format called ``name``, if any."""
    return _BY_NAME.get(name)
