"""Formatters over :class:`~trainguard.findings.Report`: text, JSON and SARIF 2.1.0.

Formatters consume only the shared findings vocabulary, so every engine's
report renders the same way.

Example:
    >>> from trainguard.findings import Report
    >>> from trainguard.report import render
    >>> print(render(Report(engine="scan"), "json")[:1])
    {
"""

from __future__ import annotations

from trainguard.findings import Report
from trainguard.report.json import render_json
from trainguard.report.sarif import render_sarif
from trainguard.report.text import render_text

__all__ = ["FORMATS", "render", "render_json", "render_sarif", "render_text"]

FORMATS = ("text", "json", "sarif")


def render(report: Report, fmt: str, *, color: bool = False, verbose: bool = False) -> str:
    """Render ``report`` as ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "text":
        return render_text(report, color=color, verbose=verbose)
    if fmt == "json":
        return render_json(report)
    if fmt == "sarif":
        return render_sarif(report)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
