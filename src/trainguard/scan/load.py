"""Load a checkpoint only after scanning the very bytes that will be loaded.

``torch.load(path)`` after ``trainguard scan path`` has a race: the file can
change between the two reads. Here the file is read once into memory, hashed,
scanned, and that same buffer is what the loader sees, so what was checked is
what runs.

Example:
    >>> import torch, tempfile, os
    >>> from trainguard.scan.load import read_verified, safe_load
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save({"w": torch.ones(2)}, path)
    >>> artifact = read_verified(path)      # raises UnsafeArtifactError on findings
    >>> safe_load(artifact)["w"].tolist()   # loads artifact.data, not the file again
    [1.0, 1.0]

Memory: the whole file is held while it loads (``mmap`` is deliberately not
offered: a mapping shows later writes to the file, which would reopen the race).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainguard.errors import LoadError, UnsafeArtifactError, UsageError
from trainguard.findings import Report, Severity
from trainguard.scan._engine import scan_buffer
from trainguard.scan.limits import DEFAULT_LIMITS, ScanLimits

__all__ = ["TORCH_FORMATS", "VerifiedArtifact", "read_verified", "safe_load", "verify_bytes"]

#: Formats ``torch.load`` reads (TorchScript archives are torch_zip; weights_only refuses them).
TORCH_FORMATS = frozenset({"torch_zip", "torch_legacy"})
_SAFETENSORS = "safetensors"


@dataclass(frozen=True)
class VerifiedArtifact:
    """Bytes that passed a scan, with their hash: load these, not the file again.

    Attributes:
        data: the file's content as read (once).
        sha256: hex SHA-256 of ``data``.
        size: ``len(data)``.
        report: the scan report of ``data``; no finding reached the threshold.
        path: where the bytes came from, if a file.
        threshold: the severity the report was checked against.
    """

    data: bytes = field(repr=False)
    sha256: str
    size: int
    report: Report = field(repr=False)
    path: Path | None = None
    threshold: Severity = Severity.MEDIUM

    @property
    def format(self) -> str:
        """The format the scanner detected for the whole buffer (``unknown`` if none)."""
        return self.report.checked[0].kind if self.report.checked else "unknown"


def _refuse(report: Report, threshold: Severity, subject: str) -> UnsafeArtifactError:
    blocking = sorted(report.at_least(threshold), key=lambda f: -f.severity)
    worst = blocking[0]
    more = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
    return UnsafeArtifactError(
        f"refused {subject}: {worst.severity.label} {worst.rule}: {worst.message}{more}",
        report=report,
        subject=subject,
    )


def verify_bytes(
    data: bytes,
    subject: str,
    *,
    threshold: Severity = Severity.MEDIUM,
    limits: ScanLimits = DEFAULT_LIMITS,
    path: Path | None = None,
) -> VerifiedArtifact:
    """Hash and scan ``data``; raise :class:`UnsafeArtifactError` at ``threshold``."""
    digest = hashlib.sha256(data).hexdigest()
    report = scan_buffer(data, subject, limits=limits, filename=path.name if path else None)
    if report.at_least(threshold):
        raise _refuse(report, threshold, subject)
    return VerifiedArtifact(data, digest, len(data), report, path, threshold)


def read_verified(
    path: str | os.PathLike[str],
    *,
    threshold: Severity = Severity.MEDIUM,
    limits: ScanLimits = DEFAULT_LIMITS,
) -> VerifiedArtifact:
    """Read ``path`` once, hash and scan those bytes, and return them if clean.

    Raises:
        UsageError: the path is missing or not a regular file.
        UnsafeArtifactError: a finding reached ``threshold`` (``.report`` has them all).
    """
    p = Path(path)
    if p.is_dir():
        raise UsageError(
            f"{p} is a directory",
            subject=str(p),
            hint="load one checkpoint file; use `trainguard scan` for folders",
        )
    try:
        with open(p, "rb") as fh:
            data = fh.read()
    except FileNotFoundError as exc:
        raise UsageError(f"no such file: {p}", subject=str(p)) from exc
    except OSError as exc:
        raise UsageError(f"cannot read {p}: {exc.strerror or exc}", subject=str(p)) from exc
    return verify_bytes(data, str(p), threshold=threshold, limits=limits, path=p)


def safe_load(
    source: str | os.PathLike[str] | VerifiedArtifact,
    *,
    map_location: Any = None,
    threshold: Severity = Severity.MEDIUM,
    limits: ScanLimits = DEFAULT_LIMITS,
    weights_only: bool = True,
) -> Any:
    """Load a PyTorch checkpoint or safetensors file from scanned bytes.

    ``source`` is a path (read and verified here) or a :class:`VerifiedArtifact`
    (its bytes are loaded as they are; the file is not read again). PyTorch
    files go through ``torch.load(..., weights_only=True)``: tensors and plain
    containers only, so even a payload the scanner missed cannot run.
    ``weights_only=False`` drops that second defence and leaves the scan as the
    only one: use it only for files you trust that hold Python objects.
    safetensors files are read natively into a ``dict`` of tensors.

    Raises:
        UnsafeArtifactError: a finding reached ``threshold``, or torch's
            weights-only unpickler refused the content.
        UsageError: the format is not one this loader reads.
        LoadError: the loader failed on bytes the scan accepted.
    """
    if isinstance(source, VerifiedArtifact):
        artifact = source
        if artifact.report.at_least(threshold):  # verified against a laxer threshold
            raise _refuse(artifact.report, threshold, str(artifact.path or "<buffer>"))
    else:
        artifact = read_verified(source, threshold=threshold, limits=limits)
    subject = str(artifact.path or "<buffer>")
    fmt = artifact.format
    if fmt == _SAFETENSORS:
        from trainguard.scan import _safetensors_io

        if (
            map_location is not None
            and not isinstance(map_location, str)
            and not _is_device(map_location)
        ):
            raise UsageError(
                "map_location for safetensors must be a device or device name", subject=subject
            )
        tensors, _ = _safetensors_io.read(artifact.data, map_location)
        return tensors
    if fmt not in TORCH_FORMATS:
        raise UsageError(
            f"{subject} is {fmt}: the safe loader reads PyTorch checkpoints and safetensors files only",
            subject=subject,
            expected="torch_zip, torch_legacy or safetensors",
            found=fmt,
        )
    return _torch_load(artifact, subject, map_location, weights_only)


def _weights_only_reason(text: str) -> str:
    """The informative line of torch's long weights-only error, without its ANSI codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()[:300]
    return text.strip().splitlines()[0][:300] if text.strip() else "refused"


def _is_device(value: object) -> bool:
    import torch

    return isinstance(value, torch.device)


def _torch_load(
    artifact: VerifiedArtifact, subject: str, map_location: Any, weights_only: bool
) -> Any:
    import torch

    try:
        return torch.load(
            io.BytesIO(artifact.data), map_location=map_location, weights_only=weights_only
        )
    except pickle.UnpicklingError as exc:
        if not weights_only:
            raise LoadError(f"torch.load failed on {subject}: {exc}", subject=subject) from exc
        err = UnsafeArtifactError(
            f"torch's weights-only loader refused {subject}: it holds Python objects, "
            "not just tensors and containers",
            report=artifact.report,
            subject=subject,
        )
        err.expected = "tensors and plain containers only (what weights_only=True accepts)"
        err.found = _weights_only_reason(str(exc))
        err.hint = (
            "a whole pickled nn.Module or custom class cannot be loaded safely; re-save "
            "model.state_dict() from trusted code, or pass weights_only=False only if you "
            "trust the file's author"
        )
        raise err from exc
    except (RuntimeError, ValueError, EOFError, OSError, KeyError) as exc:
        raise LoadError(
            f"torch.load failed on {subject}: {type(exc).__name__}: {exc}",
            subject=subject,
            hint="the file is damaged or was written by an incompatible torch version",
        ) from exc
