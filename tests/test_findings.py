"""The shared findings vocabulary and error hierarchy."""

from __future__ import annotations

import pytest

from trainguard.errors import IntegrityError, LimitExceeded, TrainguardError, UnsafeArtifactError
from trainguard.findings import RULES, Finding, Report, Rule, Severity, Skipped

RULE_A = Rule("test.rule-a", Severity.HIGH, "Rule A", "Why A matters.")
RULE_B = Rule("test.rule-b", Severity.LOW, "Rule B")


def test_severity_order_and_parse() -> None:
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
    assert Severity.parse(" High ") is Severity.HIGH
    with pytest.raises(ValueError, match="unknown severity"):
        Severity.parse("severe")


def test_rule_registers_once() -> None:
    assert RULES["test.rule-a"] is RULE_A
    Rule("test.rule-a", Severity.HIGH, "Rule A", "Why A matters.")  # identical: fine
    with pytest.raises(ValueError, match="declared twice"):
        Rule("test.rule-a", Severity.LOW, "Other")


def test_rule_finding_defaults_and_override() -> None:
    f = RULE_A.finding("x.pt", "bad", offset=3)
    assert (f.rule, f.severity, f.subject, f.evidence) == (
        "test.rule-a",
        Severity.HIGH,
        "x.pt",
        {"offset": 3},
    )
    assert RULE_A.finding("x", "m", severity=Severity.CRITICAL).severity is Severity.CRITICAL


def test_report_exit_code_threshold() -> None:
    report = Report(engine="t")
    assert report.exit_code(Severity.INFO) == 0
    report.add(RULE_B.finding("a", "low"))
    assert report.exit_code(Severity.MEDIUM) == 0
    assert report.exit_code(Severity.LOW) == 1
    report.add(RULE_A.finding("b", "high"))
    assert report.max_severity is Severity.HIGH
    assert [f.rule for f in report.sorted_findings()] == ["test.rule-a", "test.rule-b"]


def test_report_merge_and_dict() -> None:
    a = Report(engine="scan", caveats=["c1"])
    a.add(RULE_A.finding("a", "m"))
    b = Report(engine="env", caveats=["c1", "c2"], stats={"files": 2})
    b.skipped.append(Skipped("s", "why"))
    a.merge(b)
    d = a.to_dict()
    assert d["summary"]["findings"] == 1
    assert d["summary"]["by_severity"]["high"] == 1
    assert d["caveats"] == ["c1", "c2"]
    assert d["skipped"] == [{"subject": "s", "reason": "why"}]
    assert d["stats"] == {"files": 2}


def test_finding_round_trip_and_validation() -> None:
    f = RULE_A.finding("a", "m", k=[1, 2])
    assert Finding.from_dict(f.to_dict()) == f
    with pytest.raises(ValueError):
        Finding.from_dict({"rule": "x", "subject": "s", "message": "m", "severity": "bogus"})
    with pytest.raises(ValueError):
        Finding.from_dict({"rule": 1, "subject": "s", "message": "m", "severity": "low"})


def test_error_diagnostics_and_exit_codes() -> None:
    err = TrainguardError("broke", subject="f", expected="e", found="g", hint="h")
    text = err.diagnostics()
    for part in ("error: broke", "subject:  f", "expected: e", "found:    g", "hint:     h"):
        assert part in text
    assert err.exit_code == 2
    assert IntegrityError("x").exit_code == 1
    assert isinstance(UnsafeArtifactError("x", report=None), IntegrityError)
    lim = LimitExceeded("nesting_depth", 9, 8)
    assert lim.limit == "nesting_depth" and "9 > 8" in lim.message
