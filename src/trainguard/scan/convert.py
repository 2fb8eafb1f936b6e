"""Convert a PyTorch checkpoint to safetensors, loading it only through :func:`safe_load`.

The checkpoint is read once, scanned, loaded with ``weights_only=True`` and
flattened: nested dicts, lists and tuples of tensors become dotted keys
(``optimizer.state.0.exp_avg``). Small non-tensor values (step counters,
learning rates, names) are kept as JSON in ``__metadata__``; anything else is
refused with the key that holds it. The file is written next to its
destination and renamed into place only once complete and synced.

Example:
    >>> import torch, tempfile, os
    >>> from trainguard.scan.convert import convert_to_safetensors
    >>> d = tempfile.mkdtemp()
    >>> torch.save({"w": torch.ones(2), "step": 7}, os.path.join(d, "ckpt.pt"))
    >>> result = convert_to_safetensors(os.path.join(d, "ckpt.pt"), os.path.join(d, "ckpt.safetensors"))
    >>> result.tensors, result.extra
    (1, ('step',))
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainguard.errors import UsageError
from trainguard.findings import Report, Severity
from trainguard.scan import _safetensors_io
from trainguard.scan.limits import DEFAULT_LIMITS, ScanLimits
from trainguard.scan.load import VerifiedArtifact, read_verified, safe_load

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_EXTRA_JSON", "ConversionResult", "convert_to_safetensors", "flatten"]

#: Non-tensor values kept in ``__metadata__`` may total this many bytes of JSON.
MAX_EXTRA_JSON = 1024 * 1024
_SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_to_safetensors` wrote.

    Attributes:
        source, destination: the two paths.
        source_sha256: hash of the checkpoint bytes that were scanned and loaded.
        tensors: tensors written (aliases of another tensor not counted).
        size: bytes of the safetensors file.
        aliases: dropped key -> key whose bytes it shares exactly.
        extra: keys of non-tensor values stored in ``__metadata__``.
        report: the scan report of the source.
    """

    source: Path
    destination: Path
    source_sha256: str
    tensors: int
    size: int
    aliases: Mapping[str, str]
    extra: tuple[str, ...]
    report: Report

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "source_sha256": self.source_sha256,
            "tensors": self.tensors,
            "bytes": self.size,
            "aliases": dict(self.aliases),
            "extra": list(self.extra),
        }


def flatten(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split nested containers into dotted-key tensors and JSON-able other values.

    Raises:
        UsageError: a value is neither a tensor, a container nor a plain scalar,
            or two paths flatten to the same key.
    """
    import torch

    tensors: dict[str, torch.Tensor] = {}
    extra: dict[str, Any] = {}

    def put(key: str, value: Any, into: dict[str, Any]) -> None:
        if key in tensors or key in extra:
            raise UsageError(f"two entries flatten to the same key {key!r}", subject=key)
        into[key] = value

    def walk(value: Any, key: str) -> None:
        if isinstance(value, torch.Tensor):
            put(key or "tensor", value, tensors)
        elif isinstance(value, Mapping):
            if not value and key:
                put(key, {}, extra)
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list | tuple):  # torch.Size is a tuple too
            if all(isinstance(v, _SCALARS) for v in value):
                put(key, list(value), extra)
            else:
                for i, v in enumerate(value):
                    walk(v, f"{key}.{i}" if key else str(i))
        elif isinstance(value, _SCALARS):
            put(key, value, extra)
        elif isinstance(value, torch.dtype | torch.device):
            put(key, str(value), extra)
        else:
            raise UsageError(
                f"cannot store {type(value).__name__} at {key or 'the top level'!r} in safetensors",
                subject=key,
                expected="tensors, dicts, lists, tuples, numbers, strings",
                found=type(value).__name__,
                hint="save only the state dict (tensors and plain values) from trusted code",
            )

    walk(obj, prefix)
    return tensors, extra


def _dedupe(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop exact aliases (tied weights); partial overlaps keep their own bytes.

    Like safetensors' ``save_model``: a key whose tensor is exactly the same
    view of the same storage as another's is dropped and recorded; a view that
    only overlaps another (a slice) is written with its own copy of its bytes
    (the file never aliases, whatever the storages did).
    """
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name in sorted(tensors):
        t = tensors[name]
        if t.device.type == "meta":
            raise UsageError(f"tensor {name!r} is on the meta device and has no data", subject=name)
        key = (
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            tuple(t.stride()),
            t.dtype,
        )
        if key in seen and t.numel():
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = t
    return kept, aliases


def convert_to_safetensors(
    src: str | os.PathLike[str] | VerifiedArtifact,
    dst: str | os.PathLike[str],
    *,
    threshold: Severity = Severity.MEDIUM,
    limits: ScanLimits = DEFAULT_LIMITS,
    force: bool = False,
) -> ConversionResult:
    """Scan ``src``, load it weights-only, and write its tensors to ``dst`` atomically.

    Raises:
        UnsafeArtifactError: the scan found something at ``threshold``, or the
            checkpoint holds objects the weights-only loader refuses (a whole
            pickled ``nn.Module``, for instance).
        UsageError: ``dst`` exists (without ``force``), or a value cannot be stored.
    """
    destination = Path(dst)
    if destination.exists() and not force:
        raise UsageError(
            f"{destination} exists",
            subject=str(destination),
            hint="pass force=True (--force) to overwrite it",
        )
    artifact = (
        src
        if isinstance(src, VerifiedArtifact)
        else read_verified(src, threshold=threshold, limits=limits)
    )
    source = artifact.path or Path("<buffer>")
    state = safe_load(artifact, map_location="cpu", threshold=threshold)
    tensors, extra = flatten(state)
    if not tensors:
        raise UsageError(f"{source} holds no tensors", subject=str(source))
    kept, aliases = _dedupe(tensors)
    metadata = {
        "format": "pt",
        "converted_by": "trainguard",
        "source_sha256": artifact.sha256,
        "source_name": source.name,
    }
    if aliases:
        metadata["trainguard.aliases"] = json.dumps(aliases, sort_keys=True)
    if extra:
        text = json.dumps(extra, sort_keys=True, allow_nan=True)
        if len(text) > MAX_EXTRA_JSON:
            raise UsageError(
                f"{len(text)} bytes of non-tensor values (limit {MAX_EXTRA_JSON}) do not fit in metadata",
                subject=str(source),
                found=", ".join(sorted(extra)[:10]),
                hint="drop large non-tensor entries (histories, configs) before converting",
            )
        metadata["trainguard.extra"] = text
    plan = _safetensors_io.plan(kept, metadata)
    _write_atomically(destination, plan)
    return ConversionResult(
        source,
        destination,
        artifact.sha256,
        len(kept),
        plan.size,
        aliases,
        tuple(sorted(extra)),
        artifact.report,
    )


def _write_atomically(destination: Path, plan: _safetensors_io.Plan) -> None:
    """Write to a temporary file beside ``destination``, fsync, rename: all or nothing."""
    folder = destination.parent if str(destination.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in plan.chunks():
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
