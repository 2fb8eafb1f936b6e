"""The one vocabulary of results shared by every trainguard engine.

An engine that *reports* (``scan``, ``env verify``, ``preflight``...) returns a
:class:`Report`: the :class:`Finding` objects it raised, the subjects it
:class:`Checked`, what it :class:`Skipped` and why, and the caveats that say what
a clean result does *not* prove. Formatters (text, JSON, SARIF) consume only
these types, so a new engine adds findings, not a new output format.

Every finding names a :class:`Rule`. Rules are declared once, at import time,
by the module that raises them and are kept in :data:`RULES` so that SARIF
output and documentation can describe them.

Example:
    >>> from trainguard.findings import Report, Rule, Severity
    >>> DEMO = Rule("demo.example", Severity.HIGH, "An example rule", "Why it matters.")
    >>> report = Report(engine="demo")
    >>> report.add(DEMO.finding("file.bin", "example finding", offset=12))
    >>> report.exit_code(Severity.MEDIUM)
    1
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MEMBER_SEP",
    "RULES",
    "Checked",
    "Finding",
    "Report",
    "Rule",
    "Severity",
    "Skipped",
]


#: Separates a container from a member inside it in a subject (``model.pt::archive/data.pkl``).
MEMBER_SEP = "::"


class Severity(enum.IntEnum):
    """How bad a finding is. Ordered: ``Severity.HIGH > Severity.LOW``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse a severity name case-insensitively (``"high"`` -> ``Severity.HIGH``)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r}; expected one of {names}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Rule:
    """A kind of finding: a stable id, a default severity and a human explanation.

    Constructing a rule registers it in :data:`RULES`; ids must be unique.
    """

    id: str
    severity: Severity
    title: str
    help: str = ""

    def __post_init__(self) -> None:
        existing = RULES.get(self.id)
        if existing is not None and existing != self:
            raise ValueError(f"rule id {self.id!r} declared twice with different content")
        RULES[self.id] = self

    def finding(
        self,
        subject: str,
        message: str,
        *,
        severity: Severity | None = None,
        **evidence: Any,
    ) -> Finding:
        """Make a finding of this rule about ``subject``.

        ``severity`` overrides the rule's default when the context makes it
        worse or milder; ``evidence`` holds JSON-compatible facts backing it.
        """
        return Finding(
            rule=self.id,
            severity=self.severity if severity is None else severity,
            subject=subject,
            message=message,
            evidence=dict(evidence),
        )


#: Every rule declared so far, by id.
RULES: dict[str, Rule] = {}


@dataclass(frozen=True)
class Finding:
    """One thing an engine found, with the evidence that backs it."""

    rule: str
    severity: Severity
    subject: str
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.label,
            "subject": self.subject,
            "message": self.message,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Rebuild a finding from :meth:`to_dict` output, validating it."""
        try:
            rule, subject, message = data["rule"], data["subject"], data["message"]
            severity = Severity.parse(str(data["severity"]))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"malformed finding record: {exc}") from exc
        evidence = data.get("evidence") or {}
        if not all(isinstance(v, str) for v in (rule, subject, message)) or not isinstance(
            evidence, Mapping
        ):
            raise ValueError("malformed finding record: wrong field types")
        return cls(rule, severity, subject, message, dict(evidence))


@dataclass(frozen=True)
class Skipped:
    """A subject an engine did not examine, and why (never silently)."""

    subject: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "reason": self.reason}


@dataclass(frozen=True)
class Checked:
    """A subject an engine examined, with what it took it to be."""

    subject: str
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "kind": self.kind, "detail": dict(self.detail)}


@dataclass
class Report:
    """The result of one engine run (or several, merged)."""

    engine: str
    findings: list[Finding] = field(default_factory=list)
    checked: list[Checked] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: What a clean result of this engine does not prove.
    caveats: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def at_least(self, threshold: Severity) -> list[Finding]:
        """The findings at or above ``threshold``."""
        return [f for f in self.findings if f.severity >= threshold]

    def exit_code(self, threshold: Severity) -> int:
        """0 when no finding reaches ``threshold``, else 1 (errors exit 2 elsewhere)."""
        return 1 if self.at_least(threshold) else 0

    def merge(self, other: Report) -> None:
        """Fold ``other`` into this report (used by ``preflight``)."""
        self.findings.extend(other.findings)
        self.checked.extend(other.checked)
        self.skipped.extend(other.skipped)
        for caveat in other.caveats:
            if caveat not in self.caveats:
                self.caveats.append(caveat)
        for key, value in other.stats.items():
            self.stats[f"{other.engine}.{key}" if key in self.stats else key] = value

    def sorted_findings(self) -> list[Finding]:
        """Findings worst first, then by subject, for stable output."""
        return sorted(self.findings, key=lambda f: (-f.severity, f.subject, f.rule, f.message))

    def to_dict(self) -> dict[str, Any]:
        counts = {s.label: 0 for s in Severity}
        for f in self.findings:
            counts[f.severity.label] += 1
        return {
            "engine": self.engine,
            "summary": {
                "checked": len(self.checked),
                "skipped": len(self.skipped),
                "findings": len(self.findings),
                "by_severity": counts,
                "max_severity": self.max_severity.label if self.max_severity is not None else None,
            },
            "findings": [f.to_dict() for f in self.sorted_findings()],
            "checked": [c.to_dict() for c in self.checked],
            "skipped": [s.to_dict() for s in self.skipped],
            "caveats": list(self.caveats),
            "stats": dict(self.stats),
        }
