"""Every dashboard page in a real browser over the ledger of a real ``trainguard demo`` run.

The demo fills its SQLite ledger with a guarded pre-training run, colleagues' fine-tunes
that spread a poisoned checkpoint, and 2-rank drill jobs under the sentinel (their
per-rank metrics and alarms). Screenshots go to the test artifacts folder as
``demo-*.png``; any console error, page error, dialog or request to another host fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.dashboard._browser import Browser, Tab, api, browser, non_blank, open_tab
from trainguard.dashboard import DashboardConfig, DashboardServer
from trainguard.demo import DemoResult
from trainguard.ledger import PublicKey, digest_file

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.distributed]

__all__ = ["browser"]  # the shared fixture, used by the tests below


@pytest.fixture(scope="module")
def demo_key(demo_result: DemoResult) -> PublicKey:
    return PublicKey.from_file(demo_result.out_dir / "keys" / "demo-ledger.pub")


@pytest.fixture(scope="module")
def server(demo_result: DemoResult, demo_key: PublicKey) -> Iterator[DashboardServer]:
    config = DashboardConfig(
        ledger=demo_result.ledger_url, port=0, trusted_keys=(demo_key,), verify_jobs=1
    )
    server = DashboardServer(config)
    server.start()
    assert server.app.verifier.wait(120), "the initial verification did not finish"
    yield server
    server.stop()


@pytest.fixture
def tab(browser: Browser, server: DashboardServer) -> Iterator[Tab]:
    yield from open_tab(browser, server.port)


def _drill_run(demo_result: DemoResult, name: str) -> str:
    (run_id,) = [d["run_id"] for d in demo_result.drills if d["name"] == name]
    return str(run_id)


def _poisoned(demo_result: DemoResult) -> str:
    return digest_file(demo_result.out_dir / "shared" / "base-model.pt")[0]


def test_runs_page_lists_every_demo_run_with_its_alarms(tab: Tab, demo_result: DemoResult) -> None:
    tab.open("/")
    for run_id in ("pretrain-1", "ft-chat-1", "ft-code-1", "ft-chat-2", "ft-clean-1"):
        assert tab.text(f'tr[data-run="{run_id}"]').startswith(f"{run_id} completed")
    assert "none" in tab.text('tr[data-run="pretrain-1"]')  # the clean run raised nothing
    assert "1 alarm" in tab.text('tr[data-run="ft-chat-1"]')  # unknown provenance
    for drill in demo_result.drills:
        row = tab.text(f'tr[data-run="{drill["run_id"]}"]')
        assert "alarm" in row and "none" not in row.split(" ")[2:3], row
    tab.shot("demo-runs")


def test_drill_run_page_charts_both_ranks_and_marks_the_alarm(
    tab: Tab, demo_result: DemoResult
) -> None:
    run_id = _drill_run(demo_result, "weights-thread")
    tab.open(f"/run?id={quote(run_id)}")
    tab.page.wait_for_selector('#charts[data-rendered="true"]')
    data = api(tab, f"/api/run/metrics?id={quote(run_id)}")
    for key in ("loss", "grad_norm", "step_time"):
        assert tab.page.get_attribute(f"#chart-{key}", "data-rendered") == "true"
        assert non_blank(tab, f"#chart-{key}") > 2000, key
    ranks = {s["rank"] for s in data["charts"]["step_time"]["series"]}
    assert ranks == {0, 1}  # a 2-rank job: one step-time line per rank
    assert int(tab.page.get_attribute("#chart-loss", "data-markers") or 0) >= 1
    alarms = tab.text("#alarms ~ article.alarm >> nth=0")
    assert "sentinel.weights-edited" in alarms
    tab.shot("demo-run-weights-thread")


def test_lineage_of_the_poisoned_checkpoint(tab: Tab, demo_result: DemoResult) -> None:
    poisoned = _poisoned(demo_result)
    tab.open(f"/lineage?subject={quote(poisoned)}")
    tab.page.wait_for_selector('#graph[data-rendered="true"]')
    assert non_blank(tab, "#graph canvas >> nth=-1") > 500
    edges = tab.text("#lineage-edges")
    for run_id in ("ft-chat-1", "ft-code-1", "ft-chat-2"):
        assert run_id in edges
    assert "ft-clean-1" not in edges
    tab.shot("demo-lineage")


def test_blast_radius_page_matches_the_demo(tab: Tab, demo_result: DemoResult) -> None:
    assert demo_result.blast is not None
    tab.open("/blast")
    tab.page.fill('input[name="artifact"]', _poisoned(demo_result))
    tab.page.click('button[type="submit"]')
    tab.page.wait_for_selector("#blast-result")
    assert tab.text("#affected-runs") == "3 affected runs"
    table = tab.text("#affected-runs-table tbody")
    for run_id in ("ft-chat-1", "ft-code-1", "ft-chat-2"):
        assert run_id in table
    expected = demo_result.blast["totals"]["affected_gpu_hours"]
    assert tab.text("#affected-gpu-hours") == f"{expected} affected GPU-hours"
    tab.shot("demo-blast-radius")


def test_verification_against_the_demo_key(
    tab: Tab, demo_result: DemoResult, demo_key: PublicKey
) -> None:
    tab.open("/verify")
    size = api(tab, "/api/verification")["tree_head"]["size"]
    assert tab.text("#verification-state").startswith(f"Verified OK: {size} entries")
    assert "checked against the trusted keys" in tab.text("#verification")
    assert demo_key.key_id in tab.text("#tree-head")
    tab.shot("demo-verification")
