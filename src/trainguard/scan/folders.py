"""Scaffolding: directory-level checks (HF model folders) go here."""

from __future__ import annotations

from pathlib import Path

from trainguard.findings import Report
from trainguard.scan.limits import ScanLimits


def scan_folder(root: Path, report: Report, limits: ScanLimits) -> None:
    """Directory-level checks for ``root`` and its sub-folders."""
