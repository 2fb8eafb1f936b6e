"""Text, JSON and SARIF renderings of a report."""

from __future__ import annotations

import json

import pytest

from trainguard.findings import Checked, Report, Rule, Severity
from trainguard.report import render

R_CRIT = Rule("test.fmt-critical", Severity.CRITICAL, "Critical thing", "Long help.")
R_LOW = Rule("test.fmt-low", Severity.LOW, "Low thing")


@pytest.fixture
def report() -> Report:
    r = Report(
        engine="scan", caveats=["not proof of intent"], stats={"bytes": 2048, "seconds": 0.5}
    )
    r.add(R_LOW.finding("dir/b.bin", "odd"))
    r.add(R_CRIT.finding("dir/a.pt::archive/data.pkl", "calls os.system", offset=12))
    r.checked.extend(
        [Checked("dir/a.pt", "torch_zip"), Checked("dir/b.bin", "x"), Checked("dir/c", "y")]
    )
    return r


def test_text_lists_worst_first_and_summarises(report: Report) -> None:
    text = render(report, "text")
    assert text.index("CRITICAL") < text.index("LOW")
    assert "calls os.system" in text and "offset=12" in text
    assert "checked 3 (2.0 KB) in 0.50 s; 2 findings (1 critical, 1 low)" in text
    assert "1 clean, 0 skipped." in text
    assert "\033[" not in text
    assert "\033[" in render(report, "text", color=True)
    assert "not proof of intent" in render(report, "text", verbose=True)


def test_json_document(report: Report) -> None:
    doc = json.loads(render(report, "json"))
    assert doc["tool"] == "trainguard" and doc["schema_version"] == 1
    assert doc["summary"]["max_severity"] == "critical"
    assert doc["findings"][0]["evidence"] == {"offset": 12}


def test_sarif_structure(report: Report) -> None:
    doc = json.loads(render(report, "sarif"))
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == ["test.fmt-critical", "test.fmt-low"]
    assert rules[0]["properties"]["security-severity"] == "9.5"
    first = run["results"][0]
    assert first["ruleId"] == "test.fmt-critical"
    assert rules[first["ruleIndex"]]["id"] == first["ruleId"]
    assert first["level"] == "error"
    loc = first["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "dir/a.pt"
    assert loc["logicalLocations"][0]["name"] == "archive/data.pkl"
    assert run["results"][1]["level"] == "note"


def test_unknown_format_rejected(report: Report) -> None:
    with pytest.raises(ValueError, match="unknown output format"):
        render(report, "xml")


def test_clean_count_only_when_every_finding_is_attributed() -> None:
    r = Report(engine="env")
    r.checked.extend([Checked("dist-a", "distribution"), Checked("dist-b", "distribution")])
    r.add(R_LOW.finding("/site-packages/a/x.py", "odd"))
    # the finding names a file, not a checked subject: no "clean" claim is made
    assert "clean" not in render(r, "text")
    r2 = Report(engine="scan")
    r2.checked.extend([Checked("d", "folder"), Checked("e.pt", "torch_zip")])
    r2.add(R_LOW.finding("d/sub/f.bin", "odd"))
    assert "1 clean, 0 skipped." in render(r2, "text")
