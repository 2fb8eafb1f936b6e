"""HDF5 files: legacy Keras ``.h5`` models and weights, and references to other files.

A Keras ``.h5`` model stores its architecture as JSON in the root attribute
``model_config`` (and ``training_config``); loading it rebuilds what that
JSON names, Lambda bytecode included, and legacy ``.h5`` loading ignores
``safe_mode`` (CVE-2025-9905). Both go through :mod:`trainguard.scan._keras`.

HDF5 can also make its reader open *other* files: external links, datasets
stored in external raw files and virtual datasets. Like ONNX external data,
they can point anywhere on disk, so they are reported.

With h5py the file is opened read-only over the scanned buffer (no copy) and
only attributes and link/dataset properties are read: reading attributes never
runs filter plugins and no dataset is read. Without h5py a byte-level fallback
finds the model config JSON in the file and says, in a LOW finding, that it is
a heuristic.
"""

from __future__ import annotations

import io
from collections import deque
from typing import TYPE_CHECKING, Any

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "hdf5"

EXTERNAL = Rule(
    "hdf5.external-reference",
    Severity.MEDIUM,
    "HDF5 file refers to other files",
    "External links, external raw storage and virtual datasets make the HDF5 library open "
    "other files when they are accessed, wherever they are on disk. A model file has no "
    "need for them; check where they point.",
)
HEURISTIC = Rule(
    "hdf5.heuristic",
    Severity.LOW,
    "HDF5 file checked without h5py",
    "h5py is not installed, so the file was searched byte by byte for a Keras model config. "
    "Configs stored in unusual ways and references to other files are not seen. Install "
    "h5py for a structural scan.",
)

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CONFIG_ATTRS = ("model_config", "training_config")
_CONFIG_STARTS = (b'{"class_name"', b'{"module"')
_FALLBACK_CANDIDATES = 64  # config-looking offsets tried by the byte-level fallback
_LISTED = 20


def _superblock(data: memoryview) -> int | None:
    """Where the HDF5 signature is: offset 0, or 512, 1024, 2048... after a user block."""
    offset = 0
    while offset + len(_SIGNATURE) <= len(data):
        if bytes(data[offset : offset + len(_SIGNATURE)]) == _SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def detect(data: memoryview, filename: str | None) -> bool:
    """True when the HDF5 signature sits where the library looks for it."""
    return _superblock(data) is not None


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Analyse Keras configs and references to other files."""
    try:
        import h5py
    except ImportError:
        _scan_bytes(data, ctx)
        return
    from trainguard.scan import _keras  # loaded with the first HDF5 file, not at start-up

    with h5py.File(_ViewFile(data), "r") as f:
        for attr in _CONFIG_ATTRS:
            if attr in f.attrs:
                value = f.attrs[attr]
                _keras.analyse_json(_as_text(value), ctx, where=attr)
        _walk(h5py, f, ctx)


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if (
        hasattr(value, "tobytes")
        and getattr(value, "dtype", None) is not None
        and value.dtype.kind == "S"
    ):
        return bytes(value.tobytes()).decode("utf-8", "replace")
    return str(value)


def _walk(h5py: Any, root: Any, ctx: ScanContext) -> None:
    """Breadth-first over groups; links are inspected, never followed out of the file."""
    limits = ctx.limits
    refs: list[dict[str, Any]] = []
    seen = {root.id}
    queue: deque[tuple[Any, str, int]] = deque([(root, "/", 0)])
    visited = 0
    while queue:
        group, path, depth = queue.popleft()
        if depth > limits.message_depth:
            raise LimitExceeded("message_depth", depth, limits.message_depth, subject=ctx.subject)
        for name in group:
            visited += 1
            if visited > limits.metadata_entries:
                raise LimitExceeded(
                    "metadata_entries", visited, limits.metadata_entries, subject=ctx.subject
                )
            if visited % 4096 == 0:
                ctx.check_time()
            full = f"{path.rstrip('/')}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                refs.append(
                    {
                        "object": full,
                        "kind": "external link",
                        "file": link.filename,
                        "path": link.path,
                    }
                )
                continue
            if isinstance(link, h5py.SoftLink):
                continue  # a path inside this file; its target is visited on its own
            obj = group[name]
            if obj.id in seen:
                continue  # hard-linked twice (cycles are legal in HDF5)
            seen.add(obj.id)
            if isinstance(obj, h5py.Group):
                queue.append((obj, full, depth + 1))
            elif isinstance(obj, h5py.Dataset):
                for file_name, offset, size in obj.external or ():
                    refs.append(
                        {
                            "object": full,
                            "kind": "external storage",
                            "file": _str(file_name),
                            "offset": offset,
                            "size": size,
                        }
                    )
                if obj.is_virtual:
                    for source in obj.virtual_sources():
                        refs.append(
                            {
                                "object": full,
                                "kind": "virtual dataset",
                                "file": source.file_name,
                                "path": source.dset_name,
                            }
                        )
    if refs:
        files = sorted({str(r["file"]) for r in refs})
        ctx.add(
            EXTERNAL,
            f"{len(refs)} reference(s) to other files: {', '.join(files[:5])}",
            references=refs[:_LISTED],
            count=len(refs),
        )


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _ViewFile(io.RawIOBase):
    """A read-only, seekable file over a memoryview, so h5py reads the scanned bytes in place."""

    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), len(self._data) - self._pos))
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _scan_bytes(data: memoryview, ctx: ScanContext) -> None:
    """Without h5py: find JSON objects that look like Keras configs and analyse them."""
    import json

    from trainguard.scan import _keras

    ctx.add(HEURISTIC, "h5py not importable: byte-level search for the Keras model config")
    decoder = json.JSONDecoder()
    for start in _candidates(data):
        window = bytes(data[start : start + ctx.limits.json_header_bytes])
        try:
            obj, _end = decoder.raw_decode(window.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            _keras.analyse_config(obj, ctx, where=f"config at byte {start}")


def _candidates(data: memoryview, chunk: int = 1 << 24) -> list[int]:
    """Offsets of config-looking JSON, searched chunk by chunk (never the whole file at once)."""
    starts: set[int] = set()
    overlap = max(len(m) for m in _CONFIG_STARTS)
    for base in range(0, len(data), chunk):
        piece = bytes(data[base : base + chunk + overlap])
        for marker in _CONFIG_STARTS:
            at = piece.find(marker)
            while at >= 0 and len(starts) < _FALLBACK_CANDIDATES:
                starts.add(base + at)
                at = piece.find(marker, at + 1)
        if len(starts) >= _FALLBACK_CANDIDATES:
            break
    return sorted(starts)
