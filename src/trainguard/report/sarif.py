"""SARIF 2.1.0 output for code-scanning UIs (GitHub, GitLab, Azure DevOps).

Subjects of the form ``path::member`` become a physical location on ``path``
and a logical location naming the member.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any

from trainguard import __version__
from trainguard.findings import MEMBER_SEP, RULES, Report, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/trainguard/trainguard"

_LEVEL = {
    Severity.INFO: "note",
    Severity.LOW: "note",
    Severity.MEDIUM: "warning",
    Severity.HIGH: "error",
    Severity.CRITICAL: "error",
}
# GitHub code scanning reads a CVSS-like score from this property.
_SECURITY_SEVERITY = {
    Severity.INFO: "0.0",
    Severity.LOW: "3.0",
    Severity.MEDIUM: "5.5",
    Severity.HIGH: "8.0",
    Severity.CRITICAL: "9.5",
}


def _uri(path: str) -> str:
    p = PurePath(path)
    return p.as_posix() if not p.is_absolute() else p.as_uri()


def sarif_document(report: Report) -> dict[str, Any]:
    """The SARIF log object for ``report``."""
    rule_ids = sorted({f.rule for f in report.findings})
    index = {rid: i for i, rid in enumerate(rule_ids)}
    rules = []
    for rid in rule_ids:
        rule = RULES.get(rid)
        severity = rule.severity if rule else Severity.MEDIUM
        rules.append(
            {
                "id": rid,
                "name": rid,
                "shortDescription": {"text": rule.title if rule else rid},
                "fullDescription": {"text": (rule.help or rule.title) if rule else rid},
                "defaultConfiguration": {"level": _LEVEL[severity]},
                "properties": {"security-severity": _SECURITY_SEVERITY[severity]},
            }
        )
    results = []
    for f in report.sorted_findings():
        path, _, member = f.subject.partition(MEMBER_SEP)
        location: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": _uri(path)}}}
        if member:
            location["logicalLocations"] = [{"name": member, "kind": "member"}]
        results.append(
            {
                "ruleId": f.rule,
                "ruleIndex": index[f.rule],
                "level": _LEVEL[f.severity],
                "message": {"text": f.message},
                "locations": [location],
                "properties": {"severity": f.severity.label, "evidence": dict(f.evidence)},
            }
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "trainguard",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "results": results,
                "properties": {"engine": report.engine, "caveats": list(report.caveats)},
            }
        ],
    }


def render_sarif(report: Report) -> str:
    return json.dumps(sarif_document(report), indent=2, default=str) + "\n"
