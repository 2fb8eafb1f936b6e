"""Each page and API route over a ledger made in code: the content is right and escaped."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.dashboard._util import (
    HOSTILE,
    HOSTILE_NAME,
    HostileLedger,
    Markup,
    build_hostile_ledger,
    fetch,
    serving,
)
from trainguard.dashboard import DashboardConfig, DashboardServer
from trainguard.dashboard._metrics import MAX_POINTS, MAX_RANK_LINES
from trainguard.ledger import Ledger, Run, StepMetrics

ALL = [
    "/",
    "/run?id=train-a",
    "/run?id=train-b",
    "/lineage",
    "/lineage?subject=train-a",
    "/blast",
    "/blast?run=train-a",
    "/verify",
    "/api/runs",
    "/api/run/metrics?id=train-a",
    "/api/lineage?subject=train-a",
    "/api/blast?run=train-a",
    "/api/verification",
]


def _page(server: DashboardServer, path: str, status: int = 200) -> Markup:
    reply = fetch(server, path)
    assert reply.status == status, reply.text[:500]
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    return Markup(reply.text)


def _json(server: DashboardServer, path: str, status: int = 200) -> dict[str, Any]:
    reply = fetch(server, path)
    assert reply.status == status, reply.text[:500]
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    data = json.loads(reply.body)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("path", ALL)
def test_hostile_strings_never_reach_the_markup(hostile_server: DashboardServer, path: str) -> None:
    reply = fetch(hostile_server, path)
    assert reply.status == 200
    for raw in (HOSTILE, HOSTILE_NAME, "<script>", "<img"):
        assert raw not in reply.text, (path, raw)
    if path.startswith("/api/"):
        return
    markup = Markup(reply.text)
    assert not [t for t, _ in markup.tags if t == "img"]
    assert all(
        (attrs.get("src") or "").startswith("/static/") for t, attrs in markup.tags if t == "script"
    )


def test_hostile_strings_are_shown_as_text(hostile_server: DashboardServer) -> None:
    page = _page(hostile_server, "/run?id=train-a")
    # the command, the alarm message, the evidence (tensors, stack) and the file path
    assert f"torchrun train.py --name '{HOSTILE}'" in page.visible
    assert f"changed outside optimizer.step(): {HOSTILE}" in page.visible
    assert 'File "/opt/evil/hook.py", line 3, in <module>' in page.visible
    assert f"/shared/ckpt/{HOSTILE}/{HOSTILE_NAME}.pt" in page.visible
    api = fetch(hostile_server, "/api/run/metrics?id=train-a")
    assert "\\u003cscript\\u003e" in api.text
    assert json.loads(api.body)["alarms"][0]["message"].endswith(HOSTILE)


def test_runs_list_shows_status_and_alarms(
    hostile_server: DashboardServer, hostile: HostileLedger
) -> None:
    page = _page(hostile_server, "/")
    assert f"{hostile.url} · 30 entries · read-only" in page.visible
    rows = {
        attrs["data-run"]: attrs for tag, attrs in page.tags if tag == "tr" and "data-run" in attrs
    }
    assert list(rows) == ["eval-c", "train-b", "train-a"]  # newest first (ties: latest entry)
    text = page.visible
    assert "train-a failed 3 alarms · worst critical ana gpu-001, gpu-002 2 × H100" in text
    assert "train-b ended none bob gpu-003 8 × H100" in text
    assert "16.000" in text  # train-b: 8 accelerators x 2 h
    data = _json(hostile_server, "/api/runs")
    by_id = {r["run_id"]: r for r in data["runs"]}
    assert by_id["train-a"]["alarms"] == 3  # records: rank 0's relayed copy included
    assert by_id["train-a"]["alarm_severities"] == {"critical": 2, "medium": 1}
    assert by_id["train-a"]["status"] == "failed"
    assert by_id["eval-c"]["alarms"] == 0


def test_run_page_has_facts_alarms_with_evidence_and_artifacts(
    hostile_server: DashboardServer, hostile: HostileLedger
) -> None:
    page = _page(hostile_server, "/run?id=train-a")
    text = page.visible
    assert "Run train-a failed" in text
    assert "Alarms (3)" in text
    assert "#1 critical sentinel.weights-edited step 7 rank 1 host gpu-002" in text
    # Rank 0's relayed copy is folded into #1, not shown as a third alarm.
    assert "Also recorded, relayed, by rank 0." in text
    assert "1 of these are copies relayed by other ranks" in text
    assert "#2 medium ledger.unknown-provenance" in text
    assert "#3 " not in text
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert {
        "alarm-1",
        "alarm-2",
        "charts",
        "chart-loss",
        "chart-grad_norm",
        "chart-step_time",
    } <= ids
    charts = next(attrs for tag, attrs in page.tags if attrs.get("id") == "charts")
    assert charts["data-api"] == "/api/run/metrics?id=train-a"
    assert f"produced checkpoint /shared/ckpt/{HOSTILE}/{HOSTILE_NAME}.pt" in text
    links = {attrs.get("href") for tag, attrs in page.tags if tag == "a"}
    assert f"/lineage?subject={quote(hostile.ckpt_a, safe='')}" in links
    assert f"/blast?artifact={quote(hostile.ckpt_a, safe='')}" in links
    scripts = [attrs["src"] for tag, attrs in page.tags if tag == "script"]
    assert scripts == ["/static/vendor/chart.umd.min.js", "/static/run.js"]


def test_metrics_api_gives_the_series_and_marks_the_alarms(hostile_server: DashboardServer) -> None:
    data = _json(hostile_server, "/api/run/metrics?id=train-a")
    loss = data["charts"]["loss"]
    assert [s["label"] for s in loss["series"]] == ["rank 0"]
    points = loss["series"][0]["points"]
    assert [p[0] for p in points] == list(range(0, 20, 2))
    assert points[3] == [6, pytest.approx(4.0 - 0.6)]
    assert points[-1] == [18, None]  # the NaN is a gap in the line...
    assert data["nonfinite"] == [
        {"metric": "loss", "rank": rank, "step": 18, "value": "nan"} for rank in (0, 1)
    ]
    steps = data["charts"]["step_time"]["series"]
    assert [s["label"] for s in steps] == ["rank 0", "rank 1"]
    assert steps[1]["points"][0] == [0, pytest.approx(0.5)]
    # the weights alarm (step 7, rank 1) sits on each chart at the last logged step before it
    assert loss["markers"] == [{"x": 7, "y": pytest.approx(4.0 - 0.6), "alarm": 1}]
    assert data["charts"]["step_time"]["markers"] == [{"x": 7, "y": pytest.approx(0.5), "alarm": 1}]
    assert [a["rule"] for a in data["alarms"]] == [
        "sentinel.weights-edited",
        "ledger.unknown-provenance",
    ]
    assert _json(hostile_server, "/api/run/metrics?id=nobody", 404) == {"error": "no such run"}


def test_run_without_metrics_says_so(hostile_server: DashboardServer) -> None:
    page = _page(hostile_server, "/run?id=train-b")
    assert "This run recorded no step metrics" in page.visible
    assert not [t for t, _ in page.tags if t == "script"]
    assert "No alarm was recorded for this run." in page.visible


def test_unknown_run_is_404(hostile_server: DashboardServer) -> None:
    page = _page(hostile_server, f"/run?id={quote(HOSTILE)}", 404)
    assert f"The ledger records no run named {HOSTILE}." in page.visible


def test_lineage_of_a_checkpoint(hostile_server: DashboardServer, hostile: HostileLedger) -> None:
    page = _page(hostile_server, f"/lineage?subject={hostile.ckpt_a}")
    graph = next(attrs for tag, attrs in page.tags if attrs.get("id") == "graph")
    assert graph["data-api"] == f"/api/lineage?subject={quote(hostile.ckpt_a, safe='')}"
    text = page.visible
    assert f"train-a produced {HOSTILE_NAME}.pt [{hostile.ckpt_a[7:19]}]" in text
    assert "train-b produced b.pt" in text
    data = _json(hostile_server, f"/api/lineage?subject={hostile.ckpt_a}")
    assert data["root"] == hostile.ckpt_a
    assert {(e["from"], e["relation"], e["to"]) for e in data["edges"]} == {
        ("train-a", "produced", hostile.ckpt_a),
        (hostile.ckpt_a, "used", "train-b"),
        ("train-b", "produced", hostile.ckpt_b),
    }
    assert {n["id"]: n["type"] for n in data["nodes"]}["train-b"] == "run"


def test_lineage_index_lists_recent_artifacts_and_refuses_nonsense(
    hostile_server: DashboardServer, hostile: HostileLedger
) -> None:
    page = _page(hostile_server, "/lineage")
    hrefs = {attrs.get("href") for tag, attrs in page.tags if tag == "a"}
    assert f"/lineage?subject={quote(hostile.ckpt_b, safe='')}" in hrefs
    bad = _page(hostile_server, f"/lineage?subject={quote(HOSTILE)}", 400)
    assert "is neither a content digest nor a recorded run id" in bad.visible


def test_blast_radius_page_from_an_artifact(
    hostile_server: DashboardServer, hostile: HostileLedger
) -> None:
    page = _page(hostile_server, f"/blast?artifact={hostile.ckpt_a}")
    cards = {
        attrs.get("id") for _, attrs in page.tags if "card" in (attrs.get("class") or "").split()
    }
    assert cards >= {"affected-runs", "affected-gpu-hours", "clean-runs"}
    text = page.visible
    report = _json(hostile_server, f"/api/blast?artifact={hostile.ckpt_a}")
    assert report["totals"]["affected_runs"] == 1
    assert report["totals"]["affected_gpu_hours"] == 16.0  # train-b: 8 H100 for 2 h
    assert [r["run_id"] for r in report["affected_runs"]] == ["train-b"]
    assert "1 affected runs 16.0 affected GPU-hours 48.0 affected cost (USD)" in text
    assert f"{report['totals']['clean_runs']} clean runs" in text
    assert "eval-c" in text  # listed as clean, with why
    assert "used no recorded inputs" in text


def test_blast_radius_of_a_user_and_bad_input(hostile_server: DashboardServer) -> None:
    report = _json(hostile_server, "/api/blast?user=ana")
    assert [r["run_id"] for r in report["affected_runs"]] == ["train-a", "train-b"]
    assert _page(hostile_server, "/blast").visible.count("affected runs") == 0  # empty form
    bad = _page(hostile_server, f"/blast?artifact={quote(HOSTILE)}", 400)
    assert f"'{HOSTILE}' is not a content digest" in bad.visible
    assert (
        "cannot read time" in _page(hostile_server, "/blast?user=ana&since=yesterday", 400).visible
    )
    assert _json(hostile_server, "/api/blast", 400) == {"error": "give at least one indicator"}


def test_verification_page_reports_head_and_result(
    hostile_server: DashboardServer, hostile: HostileLedger
) -> None:
    with Ledger.open(hostile.url) as ledger:
        head = ledger.head()
        signed = ledger.latest_signed_head()
    assert signed is not None
    page = _page(hostile_server, "/verify")
    text = page.visible
    assert f"entries {head.size} Merkle root {head.root.hex()}" in text
    assert f"latest signed head size {signed.size}" in text and signed.key_id in text
    assert f"Verified OK: {head.size} entries" in text
    assert "checked against the trusted keys" in text
    status = _json(hostile_server, "/api/verification")
    assert status["state"] == "ok" and status["last"]["root"] == head.root.hex()
    assert status["last"]["signatures_checked"] is True


def test_a_tampered_ledger_fails_verification_on_the_page(tmp_path: Path) -> None:
    built = build_hostile_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    with sqlite3.connect(tmp_path / "ledger.db") as db:  # an insider edits an alert in place
        (data,) = db.execute("SELECT data FROM entries WHERE kind = 'alert' LIMIT 1").fetchone()
        db.execute(
            "UPDATE entries SET data = ? WHERE data = ?",
            (bytes(data).replace(b"critical", b"low"), data),
        )
    config = DashboardConfig(
        ledger=built.url, port=0, trusted_keys=(built.public_key,), verify_jobs=1
    )
    with serving(config) as server:
        assert server.app.verifier.wait(60)
        page = _page(server, "/verify")
        assert "Verification FAILED" in page.visible
        assert "does not match" in page.visible
        assert _json(server, "/api/verification")["state"] == "failed"
        # and the run page refuses to show the edited alarm as if it were sound
        assert "integrity" in _page(server, "/run?id=train-a", 500).visible


def test_many_ranks_and_long_runs_are_summarised(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    world = MAX_RANK_LINES + 4
    steps = MAX_POINTS + 500
    with Ledger.open(url, create=True) as ledger:
        ledger.append(
            [
                Run(
                    "big",
                    user="ana",
                    hosts=("gpu-001",),
                    world_size=world,
                    accelerator_type="H100",
                    accelerator_count=world,
                    started_at=0,
                )
            ]
        )
        ledger.append(
            [
                StepMetrics.of("big", s, r, s, {"step_time": 1.0 + (r == 7) * 2.0 + (r == 3)})
                for s in range(0, steps, 100)
                for r in range(world)
            ]
        )
        ledger.append(
            [StepMetrics.of("big", s, 0, s, {"loss": 1.0 / (s + 1)}) for s in range(steps)]
        )
    with serving(DashboardConfig(ledger=url, port=0, verify_jobs=1)) as server:
        data = _json(server, "/api/run/metrics?id=big")
    lines = {s["label"]: s for s in data["charts"]["step_time"]["series"]}
    assert list(lines)[:3] == ["median over ranks", "max over ranks", "rank 7 (slow)"]
    assert "rank 3 (slow)" in lines
    assert lines["max over ranks"]["points"][0] == [0, 3.0]
    assert lines["median over ranks"]["points"][0] == [0, 1.0]
    loss = data["charts"]["loss"]["series"][0]["points"]
    assert len(loss) <= MAX_POINTS + 1
    assert loss[0] == [0, 1.0] and loss[-1][0] == steps - 1  # first and last kept
    assert all(not math.isnan(p[1]) for p in loss)


@pytest.mark.postgres
def test_a_postgres_ledger_through_a_role_that_can_only_read() -> None:
    import secrets

    import psycopg

    from tests.ledger.conftest import PG_DSN, drop_schema, pg_url

    url, schema = pg_url()
    role = "tg_reader_" + secrets.token_hex(4)
    built = build_hostile_ledger(url)
    try:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
            conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        reader = url.replace("://postgres@", f"://{role}@", 1)
        assert reader != url
        config = DashboardConfig(
            ledger=reader, port=0, trusted_keys=(built.public_key,), verify_jobs=1
        )
        with serving(config) as server:
            assert server.app.verifier.wait(60)
            assert "train-a failed 3 alarms" in _page(server, "/").visible
            assert "Alarms (3)" in _page(server, "/run?id=train-a").visible
            report = _json(server, f"/api/blast?artifact={built.ckpt_a}")
            assert report["totals"]["affected_gpu_hours"] == 16.0
            assert "Verified OK" in _page(server, "/verify").visible
    finally:
        drop_schema(schema)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_relayed_copy_without_its_original_is_shown() -> None:
    # The detecting rank died before writing its own record: the copy is the only one.
    from trainguard.dashboard._data import fold_relayed
    from trainguard.ledger import Alert

    def alert(step: int, rank: int, reporter: int, check: str = "stragglers") -> Alert:
        evidence = {"rank": rank, "reporter": reporter, "check": check}
        return Alert("r", f"sentinel.{check}", "high", "m", 1, step=step, evidence=evidence)

    alerts = [
        (10, alert(5, 1, 0)),  # rank 1's detection, relayed by rank 0; rank 1 never wrote it
        (11, alert(9, 2, 2)),  # rank 2's own detection
        (12, alert(9, 2, 0)),  # relayed by rank 0
        (13, alert(9, 2, 1)),  # relayed by rank 1
        (14, alert(9, 2, 0, check="replicas")),  # another check: not a copy of rank 2's
    ]
    shown = fold_relayed(alerts)
    assert [(leaf, by) for leaf, _a, by in shown] == [(10, ()), (11, (0, 1)), (14, ())]
