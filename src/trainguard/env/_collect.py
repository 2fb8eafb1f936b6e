"""Findings capped per rule: a tampered environment can produce thousands of one kind."""

from __future__ import annotations

from collections import defaultdict

from trainguard.findings import Finding, Report, Rule

__all__ = ["Collector"]


class Collector:
    """Adds findings to a report, listing at most ``cap`` per rule and summarizing the rest."""

    def __init__(self, report: Report, cap: int) -> None:
        self.report = report
        self.cap = cap
        self._counts: dict[str, int] = defaultdict(int)
        self._rules: dict[str, Rule] = {}

    def add(self, finding: Finding, rule: Rule) -> None:
        self._counts[rule.id] += 1
        self._rules[rule.id] = rule
        if self._counts[rule.id] <= self.cap:
            self.report.add(finding)

    def close(self) -> None:
        for rule_id, count in self._counts.items():
            if count > self.cap:
                rule = self._rules[rule_id]
                self.report.add(
                    rule.finding(
                        "(environment)",
                        f"{count - self.cap} more {rule.id} findings not listed",
                        count=count,
                    )
                )
