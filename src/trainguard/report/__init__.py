"""Formatters over :class:`~trainguard.findings.Report`: text, JSON and SARIF 2.1.0.

Formatters consume only the shared findings vocabulary, so every engine's
report renders the same way. Each formatter module loads on first use.

Example:
    >>> from trainguard.findings import Report
    >>> from trainguard.report import render
    >>> print(render(Report(engine="scan"), "json")[:1])
    {
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.findings import Report

if TYPE_CHECKING:
    from trainguard.report.json import render_json
    from trainguard.report.sarif import render_sarif
    from trainguard.report.text import render_text

__all__ = ["FORMATS", "render", "render_json", "render_sarif", "render_text"]

FORMATS = ("text", "json", "sarif")


def render(report: Report, fmt: str, *, color: bool = False, verbose: bool = False) -> str:
    """Render ``report`` as ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "text":
        from trainguard.report.text import render_text

        return render_text(report, color=color, verbose=verbose)
    if fmt == "json":
        from trainguard.report.json import render_json

        return render_json(report)
    if fmt == "sarif":
        from trainguard.report.sarif import render_sarif

        return render_sarif(report)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")


def __getattr__(name: str) -> object:
    # A command that prints only text (or nothing, with -q) never imports json.
    if name in ("render_json", "render_sarif", "render_text"):
        from importlib import import_module

        module = import_module(f"trainguard.report.{name.removeprefix('render_')}")
        return getattr(module, name)
    raise AttributeError(f"module 'trainguard.report' has no attribute {name!r}")
