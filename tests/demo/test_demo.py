"""The demo runs end to end on real jobs and a real ledger, and every step reports what
really happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainguard.cli.main import main
from trainguard.demo import DEMO_DRILLS, DemoResult, run_demo
from trainguard.errors import UsageError
from trainguard.ledger import Alert, Ledger, StepMetrics, verify_ledger


@pytest.mark.slow
@pytest.mark.distributed
def test_demo_end_to_end(demo_result: DemoResult) -> None:
    result = demo_result
    assert result.ok, [s for s in result.steps if not s.ok]
    out = result.out_dir
    assert not (out / "PAYLOAD-RAN").exists()
    scan = result.reports["scan"]
    assert any(
        f.rule == "pickle.dangerous-global" and "base-model.pt" in f.subject for f in scan.findings
    )
    assert (out / "scan-report.sarif").exists()
    assert (out / "checkpoints" / "pretrain-step40.safetensors").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_demo_blast_radius_is_the_poisoned_checkpoints_descendants(
    demo_result: DemoResult,
) -> None:
    blast = demo_result.blast
    assert blast is not None
    affected = {r["run_id"]: r for r in blast["affected_runs"]}
    # Loaded the poisoned copy directly, and fine-tuned from a derived checkpoint.
    assert sorted(affected) == ["ft-chat-1", "ft-chat-2", "ft-code-1"]
    assert affected["ft-chat-2"]["depth"] > affected["ft-chat-1"]["depth"]
    derived = [a for a in blast["affected_artifacts"] if a["depth"] > 0]
    assert sorted(Path(a["name"]).name for a in derived) == [
        "ft-chat-1.pt",
        "ft-chat-2.pt",
        "ft-code-1.pt",
    ]
    assert sorted(r for a in derived for r in a["produced_by"]) == [
        "ft-chat-1",
        "ft-chat-2",
        "ft-code-1",
    ]
    assert blast["totals"]["clean_runs"] == 2
    assert blast["totals"]["affected_gpu_hours"] > 0


@pytest.mark.slow
@pytest.mark.distributed
def test_demo_ledger_holds_runs_metrics_alarms_and_verifies(demo_result: DemoResult) -> None:
    with Ledger.open(demo_result.ledger_url) as ledger:
        records = [e.record for e in ledger.entries(0, ledger.size())]
        verify_ledger(ledger)
    metrics = [r for r in records if isinstance(r, StepMetrics)]
    assert {m.run_id for m in metrics} >= {"pretrain-1"}
    assert any("loss" in m.values for m in metrics if m.run_id == "pretrain-1")
    alerts = [r for r in records if isinstance(r, Alert)]
    # The colleagues' jobs loaded a file no recorded run produced; the drills raised alarms.
    assert any(a.rule == "ledger.unknown-provenance" and a.run_id == "ft-chat-1" for a in alerts)
    assert {d["name"] for d in demo_result.drills} == set(DEMO_DRILLS)
    assert all(d["ok"] for d in demo_result.drills), demo_result.drills
    assert len({a.run_id for a in alerts if a.rule.startswith("sentinel.")}) >= len(DEMO_DRILLS) - 1


@pytest.mark.slow
@pytest.mark.distributed
def test_demo_html_report_names_the_findings(demo_result: DemoResult) -> None:
    assert demo_result.html is not None
    page = demo_result.html.read_text(encoding="utf-8")
    assert "every step behaved as trainguard promises" in page
    assert "ft-chat-1" in page and "blast-radius.html" in page
    assert demo_result.dashboard_command() in page
    assert "<script" not in page


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    keep = tmp_path / "thesis.tex"
    keep.write_text("precious", encoding="utf-8")
    with pytest.raises(UsageError, match="not made by trainguard demo"):
        run_demo(tmp_path)
    assert keep.read_text(encoding="utf-8") == "precious"
    assert main(["demo", "--out", str(tmp_path), "--drills", "none"]) == 2
