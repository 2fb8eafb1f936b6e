"""trainguard: keep ML training on shared GPU clusters honest.

Five parts, one package:

* :mod:`trainguard.scan`: static analysis of model artifacts; never executes what it reads.
* :mod:`trainguard.env`: the Python environment and training code checked against what they claim.
* :mod:`trainguard.ledger`: tamper-evident provenance, lineage and blast radius.
* :mod:`trainguard.sentinel`: runtime checks inside the training loop.
* drills, demo and dashboard: the incident replayed and shown.

Example:
    >>> import trainguard
    >>> report = trainguard.scan_paths(["."])  # doctest: +SKIP
    >>> report.exit_code(trainguard.Severity.MEDIUM)  # doctest: +SKIP
    0
    >>> sentinel = trainguard.protect(model, optimizer)  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from trainguard.errors import (
    IntegrityError,
    TrainguardError,
    UnsafeArtifactError,
)
from trainguard.findings import Finding, Report, Severity, Skipped

__all__ = [
    "Finding",
    "IntegrityError",
    "Report",
    "Severity",
    "Skipped",
    "TrainguardError",
    "UnsafeArtifactError",
    "__version__",
    "load",
    "protect",
    "save",
    "scan_buffer",
    "scan_paths",
]


def __getattr__(name: str) -> object:
    # Engines load on first use: the sentinel imports torch, and every command
    # (one process per file in a Slurm prolog) pays for what it imports.
    if name in ("save", "load"):
        from trainguard.ledger import capture

        return getattr(capture, name)
    if name == "protect":
        from trainguard.sentinel import protect

        return protect
    if name in ("scan_buffer", "scan_paths"):
        from trainguard import scan

        return getattr(scan, name)
    raise AttributeError(f"module 'trainguard' has no attribute {name!r}")
