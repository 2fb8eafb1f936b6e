"""Every dashboard page in a real browser (Debian's Chromium, headless, driven by Playwright)
over a ledger filled by real guarded training runs.

Each test fails on a console error, an uncaught page error, a JavaScript dialog (an escaping
bug running ``alert(1)``) or a request to any host but the dashboard's, and leaves a
screenshot in the test artifacts folder (``$TRAINGUARD_TEST_ARTIFACTS/screenshots``, else
``tests/artifacts/screenshots``). The browser is never downloaded: a missing
``/usr/bin/chromium`` (``apt-get install chromium chromium-driver``) skips these tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.dashboard._browser import Browser, Tab, browser, open_tab
from tests.dashboard._browser import api as _api
from tests.dashboard._browser import non_blank as _non_blank
from tests.dashboard._util import HOSTILE, HOSTILE_NAME
from tests.dashboard.conftest import DemoLedger
from trainguard.dashboard import DashboardServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser"]  # the shared fixture, used by the tests below


@pytest.fixture
def tab(browser: Browser, demo_server: DashboardServer) -> Iterator[Tab]:
    yield from open_tab(browser, demo_server.port)


def test_runs_page(tab: Tab, demo_ledger: DemoLedger) -> None:
    tab.open("/")
    rows = {run_id: tab.text(f'tr[data-run="{run_id}"]') for run_id in demo_ledger.runs.values()}
    assert rows["pretrain-tiny"].startswith("pretrain-tiny completed 1 alarm · worst critical ana")
    assert rows["finetune-tiny"].startswith("finetune-tiny completed 2 alarms · worst high ana")
    assert rows["baseline-tiny"].startswith("baseline-tiny completed none ana")
    tab.shot("runs")
    tab.page.click('a[href="/run?id=pretrain-tiny"] >> nth=0')
    tab.page.wait_for_url("**/run?id=pretrain-tiny")


def test_run_page_charts_alarms_and_evidence(tab: Tab, demo_ledger: DemoLedger) -> None:
    tab.open("/run?id=pretrain-tiny")
    tab.page.wait_for_selector('#charts[data-rendered="true"]')
    logged = len(demo_ledger.metric_steps["pretrain-tiny"])
    for key in ("loss", "grad_norm", "step_time"):
        canvas = f"#chart-{key}"
        assert tab.page.get_attribute(canvas, "data-rendered") == "true"
        assert _non_blank(tab, canvas) > 2000, key
        points = tab.page.evaluate(
            f"Chart.getChart(document.querySelector('{canvas}')).data.datasets[0].data.length"
        )
        assert points == logged, key
    # the weights alarm (step 25) is marked on the loss chart
    assert tab.page.get_attribute("#chart-loss", "data-markers") == "1"
    alarm = tab.text("#alarm-1")
    assert "critical sentinel.weights-edited step 25 rank 0" in alarm
    assert "changed outside optimizer.step(): 0.weight" in alarm
    assert "caught before a forward" in alarm and "tensors 0.weight" in alarm
    # user-controlled strings are text on the page, not markup
    assert f"python train.py --note '{HOSTILE}'" in tab.text("#run-facts")
    assert demo_ledger.paths["mid"] in tab.text("#edges")
    assert tab.page.locator("#edges script, #run-facts script").count() == 0
    tab.shot("run-pretrain")
    # clicking the marker leads to the alarm's evidence
    x, y = tab.page.evaluate(
        """() => { const c = Chart.getChart(document.querySelector('#chart-loss'));
                    const i = c.data.datasets.findIndex(d => d.label === 'alarms');
                    const p = c.getDatasetMeta(i).data[0]; return [p.x, p.y]; }"""
    )
    tab.page.locator("#chart-loss").click(position={"x": x, "y": y})
    tab.page.wait_for_url("**#alarm-1")


def test_run_page_of_the_derived_run(tab: Tab, demo_ledger: DemoLedger) -> None:
    tab.open("/run?id=finetune-tiny")
    tab.page.wait_for_selector('#charts[data-rendered="true"]')
    alarms = tab.text("#alarms ~ article.alarm >> nth=0") + tab.text("article.alarm >> nth=1")
    for rule in demo_ledger.alarm_rules["finetune-tiny"]:
        assert rule in alarms
    # the reseed alarm carries the stack of the call, down to the training loop
    assert "torch.manual_seed(1234" in alarms and "conftest.py" in alarms
    # the unknown-provenance alarm names the file, hostile name and all, as text
    assert f"{demo_ledger.paths['unknown']}, which no recorded run produced" in alarms
    assert HOSTILE_NAME in tab.text("#edges")
    assert tab.page.locator("img").count() == 0
    tab.shot("run-finetune")


def test_lineage_graph(tab: Tab, demo_ledger: DemoLedger) -> None:
    final = demo_ledger.digests["final"]
    tab.open(f"/lineage?subject={quote(final)}")
    tab.page.wait_for_selector('#graph[data-rendered="true"]')
    graph = _api(tab, f"/api/lineage?subject={quote(final)}")
    assert tab.page.get_attribute("#graph", "data-nodes") == str(len(graph["nodes"])) == "4"
    assert tab.page.get_attribute("#graph", "data-edges") == str(len(graph["edges"])) == "3"
    assert _non_blank(tab, "#graph canvas >> nth=-1") > 500
    edges = tab.text("#lineage-edges")
    assert "pretrain-tiny produced pretrain-final.pt" in edges
    assert "finetune-tiny produced finetune-final.pt" in edges
    tab.shot("lineage")


def test_blast_radius_from_the_form(tab: Tab, demo_ledger: DemoLedger) -> None:
    final = demo_ledger.digests["final"]
    tab.open("/blast")
    tab.page.fill('input[name="artifact"]', final)
    tab.page.click('button[type="submit"]')
    tab.page.wait_for_selector("#blast-result")
    report = _api(tab, f"/api/blast?artifact={quote(final)}")
    totals = report["totals"]
    assert totals["affected_runs"] == 1 and totals["runs"] == 3
    assert tab.text("#affected-runs") == "1 affected runs"
    assert tab.text("#affected-gpu-hours") == f"{totals['affected_gpu_hours']} affected GPU-hours"
    assert tab.text("#clean-runs") == f"{totals['clean_runs']} clean runs"
    assert tab.text("#affected-artifacts") == "2 affected artifacts"
    assert tab.text("#affected-runs-table tbody").startswith("finetune-tiny ana 1 × cpu")
    assert demo_ledger.digests["finetuned"] in tab.text("#affected-artifacts-table")
    tab.shot("blast-radius")


def test_verification_status(tab: Tab, demo_ledger: DemoLedger) -> None:
    tab.open("/verify")
    status = _api(tab, "/api/verification")
    size = status["tree_head"]["size"]
    assert tab.text("#verification-state").startswith(f"Verified OK: {size} entries")
    assert f"entries {size} Merkle root {status['tree_head']['root']}" in tab.text("#tree-head")
    assert f"latest signed head size {size}" in tab.text("#tree-head")
    assert "checked against the trusted keys" in tab.text("#verification")
    assert demo_ledger.public_key.key_id in tab.text("#tree-head")
    tab.shot("verification")
