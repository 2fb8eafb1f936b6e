"""JSON output: the report's dictionary form plus tool identification."""

from __future__ import annotations

import json
from typing import Any

from trainguard import __version__
from trainguard.findings import Report

SCHEMA_VERSION = 1


def report_document(report: Report) -> dict[str, Any]:
    """The JSON document for ``report`` (stable keys; ``schema_version`` bumps on change)."""
    doc: dict[str, Any] = {
        "tool": "trainguard",
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
    }
    doc.update(report.to_dict())
    return doc


def render_json(report: Report) -> str:
    return json.dumps(report_document(report), indent=2, sort_keys=False, default=str) + "\n"
