"""The demo's HTML report: one self-contained page, every value escaped, no scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from trainguard.ledger._html import _CSS, _card, _e
from trainguard.ledger._html import _table as _raw_table

if TYPE_CHECKING:
    from trainguard.demo._run import DemoResult

__all__ = ["render_demo_html"]

#: Scan findings listed on the page (the JSON and SARIF reports hold them all).
MAX_FINDINGS = 20


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The blast-radius page's table, every cell escaped here."""
    return _raw_table(headers, ([_e(cell) for cell in row] for row in rows))


def _evidence(evidence: Any) -> str:
    text = json.dumps(evidence, sort_keys=True, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def render_demo_html(result: DemoResult) -> str:
    """The report page of one demo run."""
    verdict = "every step behaved as trainguard promises" if result.ok else "SOME STEPS FAILED"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>trainguard demo report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>trainguard demo</h1>",
        f"<p><b>{_e(verdict)}</b>. Ledger: <code>{_e(result.ledger_url)}</code>. "
        f"Open the dashboard on it: <code>{_e(result.dashboard_command())}</code></p>",
        "<h2>Steps</h2>",
        _table(
            ("", "step", "what happened"),
            (("ok" if s.ok else "FAIL", s.title, s.detail) for s in result.steps),
        ),
    ]
    if result.blast is not None:
        t = result.blast["totals"]
        cur = result.blast["prices"]["currency"]
        parts += [
            "<h2>Blast radius of the poisoned checkpoint</h2>",
            '<div class="cards">',
            _card("affected runs", t["affected_runs"], "bad"),
            _card(
                "derived checkpoints",
                sum(1 for a in result.blast["affected_artifacts"] if a["depth"] > 0),
                "bad",
            ),
            _card("affected accelerator-hours", t["affected_gpu_hours"], "bad"),
            _card(f"affected cost ({cur})", t["affected_cost"], "bad"),
            _card("provably clean runs", t["clean_runs"], "ok"),
            "</div>",
            _table(
                ("affected run", "user", "why"),
                (
                    (
                        r["run_id"],
                        r.get("user", ""),
                        "; ".join(str(x["text"]) for x in r["because"]),
                    )
                    for r in result.blast["affected_runs"]
                ),
            ),
            "<p>Full report with the entries and their proofs: "
            '<a href="blast-radius.html">blast-radius.html</a> '
            '(<a href="blast-radius.json">JSON</a>; re-check offline with '
            "<code>trainguard ledger check-report blast-radius.json</code>).</p>",
        ]
    if result.drills:
        parts += [
            "<h2>Drills</h2>",
            _table(
                ("drill", "result", "caught by", "steps to detection", "evidence"),
                (
                    (
                        d["name"],
                        "caught" if d["ok"] else "NOT CAUGHT",
                        ", ".join(d["checks"]) or "-",
                        "-" if d["steps_to_detection"] is None else d["steps_to_detection"],
                        _evidence(d["evidence"]),
                    )
                    for d in result.drills
                ),
            ),
        ]
    scan = result.reports.get("scan")
    if scan is not None:
        findings = scan.sorted_findings()
        parts += [
            f"<h2>Scan findings ({len(findings)})</h2>",
            _table(
                ("severity", "rule", "subject", "message"),
                ((f.severity.label, f.rule, f.subject, f.message) for f in findings[:MAX_FINDINGS]),
            ),
            '<p>All of them: <a href="scan-report.json">scan-report.json</a>, '
            '<a href="scan-report.sarif">scan-report.sarif</a>.</p>',
        ]
    parts.append("</body></html>")
    return "".join(parts)
