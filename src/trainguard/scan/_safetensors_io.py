"""A small native safetensors reader and writer (no dependency on the safetensors package).

The reader trusts nothing it has not checked: callers scan the buffer first
(:func:`trainguard.scan.load.read_verified` does, with the safetensors format
module's full header validation), and :func:`read` re-checks every bound it
uses, so a buffer that skipped the scan still cannot make it read out of range.

The writer lays files out as the safetensors crate does: tensors ordered by
decreasing dtype alignment then name, packed back to back, the JSON header
(``__metadata__`` first, then tensors in offset order) padded with spaces to a
multiple of 8 bytes.
"""

from __future__ import annotations

import ctypes
import json
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainguard.errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["Plan", "plan", "read", "to_dtype"]

_METADATA = "__metadata__"
#: The crate's cap on the header length.
MAX_HEADER = 100_000_000

#: safetensors dtype names and the torch dtype names they map to.
_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "C64": "complex64",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
}


def to_dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name; :class:`UsageError` when torch has none."""
    import torch

    dtype = getattr(torch, _DTYPES.get(name, ""), None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(
            f"safetensors dtype {name!r} has no torch equivalent in this torch build",
            hint="load this file with a torch version that supports the dtype",
        )
    return dtype


def _st_name(dtype: torch.dtype) -> str:
    text = str(dtype).removeprefix("torch.")
    for st, name in _DTYPES.items():
        if name == text:
            return st
    raise UsageError(
        f"tensors of dtype {text} cannot be stored in safetensors",
        expected="a dtype safetensors defines (float, int, uint, bool, complex64, float8)",
        found=text,
    )


def _malformed(message: str) -> UsageError:
    return UsageError(
        f"malformed safetensors file: {message}",
        hint="run `trainguard scan` on it; a valid file never fails here",
    )


def read(
    data: bytes, device: str | torch.device | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and ``__metadata__`` of a safetensors buffer.

    Each tensor owns a copy of its bytes (aligned, writable), so ``data`` can
    be dropped afterwards. ``device`` moves them after reading.
    """
    import torch

    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
        raise UsageError("the native safetensors reader needs a little-endian machine")
    if len(data) < 8:
        raise _malformed("shorter than its 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > min(MAX_HEADER, len(data) - 8):
        raise _malformed(f"header length {n} out of range")
    try:
        header = json.loads(bytes(data[8 : 8 + n]))
    except ValueError as exc:
        raise _malformed(f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _malformed("header is not a JSON object")
    metadata = header.pop(_METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _malformed("__metadata__ is not a map of strings")
    base = 8 + n
    view = memoryview(data)
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        try:
            dtype = to_dtype(info["dtype"])
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(f"tensor {name!r} entry is incomplete") from exc
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * dtype.itemsize
        if (
            begin < 0
            or end != begin + nbytes
            or base + end > len(data)
            or min(shape, default=0) < 0
        ):
            raise _malformed(f"tensor {name!r} offsets disagree with its shape or the file size")
        if nbytes == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        chunk = bytearray(view[base + begin : base + end])  # one aligned, writable copy
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bytearray is writable; nothing to warn about
            tensor = torch.frombuffer(chunk, dtype=dtype, count=numel).reshape(shape)
        tensors[name] = tensor if device is None else tensor.to(device)
    return tensors, dict(metadata)


@dataclass(frozen=True)
class Plan:
    """A safetensors file ready to write: its header bytes and tensors in file order."""

    header: bytes
    tensors: tuple[tuple[str, torch.Tensor], ...]

    @property
    def size(self) -> int:
        return len(self.header) + sum(_nbytes(t) for _, t in self.tensors)

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, one tensor at a time (each copied once from torch memory)."""
        yield self.header
        for _, tensor in self.tensors:
            nbytes = _nbytes(tensor)
            if nbytes:
                yield ctypes.string_at(tensor.data_ptr(), nbytes)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def plan(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Plan:
    """Lay out ``tensors`` (made CPU and contiguous) as the safetensors crate would."""
    import torch

    prepared: list[tuple[str, Any]] = []
    for name, tensor in tensors.items():
        if tensor.layout != torch.strided:
            raise UsageError(
                f"tensor {name!r} has layout {tensor.layout}; safetensors stores dense tensors only",
                hint="convert it with .to_dense() in trusted code first",
            )
        prepared.append((name, tensor.detach().to("cpu").contiguous()))
    # The crate sorts by alignment (element size, largest first), then name.
    prepared.sort(key=lambda item: (-item[1].element_size(), item[0]))
    entries: dict[str, Any] = {}
    if metadata:
        entries[_METADATA] = dict(metadata)
    offset = 0
    for name, tensor in prepared:
        nbytes = _nbytes(tensor)
        entries[name] = {
            "dtype": _st_name(tensor.dtype),
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER:
        raise UsageError(
            f"the safetensors header would be {len(text)} bytes, over the {MAX_HEADER}-byte cap",
            hint="too many tensors or too much metadata for one file; shard the checkpoint",
        )
    return Plan(len(text).to_bytes(8, "little") + text, tuple(prepared))
