"""A self-contained HTML page for a blast-radius report. Every value is escaped.

Rendered from the report's JSON form, so a saved report renders the same
page. No scripts, no external resources: it opens from an air-gapped disk.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["render_blast_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:75rem;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d5dd}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #d0d5dd;border-radius:6px;padding:.6rem 1rem}
.card b{display:block;font-size:1.3rem}.bad b{color:#b42318}.ok b{color:#067647}
table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border-bottom:1px solid #eaecf0;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f9fafb}code{font:12px ui-monospace,monospace;word-break:break-all}
.caveat{background:#fffaeb;border-left:3px solid #dc6803;padding:.4rem .8rem;margin:.3rem 0}
details{margin:.2rem 0}summary{cursor:pointer}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _entries(ids: Iterable[int]) -> str:
    return " ".join(f'<a href="#entry-{int(i)}">#{int(i)}</a>' for i in ids)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _card(label: str, value: object, cls: str = "") -> str:
    return f'<div class="card {cls}"><b>{_e(value)}</b>{_e(label)}</div>'


def render_blast_html(report: Mapping[str, Any]) -> str:
    """The page for a report in the JSON form of :class:`~trainguard.ledger.blast.BlastRadius`."""
    t = report["totals"]
    cur = report["prices"]["currency"]
    ev = report["evidence"]
    sth = ev.get("signed_tree_head")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>trainguard blast radius</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Blast radius</h1>",
        f"<p>Indicator: <b>{_e(report['indicator_text'])}</b><br>As of {_e(report['as_of'])}; "
        f"answered from {_e(report['answered_from'])}.</p>",
        '<div class="cards">',
        _card("affected runs", t["affected_runs"], "bad"),
        _card("affected GPU-hours", t["affected_gpu_hours"], "bad"),
        _card(f"affected cost ({cur})", t["affected_cost"], "bad"),
        _card("clean runs", t["clean_runs"], "ok"),
        _card("clean GPU-hours", t["clean_gpu_hours"], "ok"),
        _card("runs in the ledger", t["runs"]),
        "</div>",
    ]
    for caveat in report["caveats"]:
        parts.append(f'<div class="caveat">{_e(caveat)}</div>')
    parts.append("<h2>Affected runs</h2>")
    parts.append(
        _table(
            ["run", "user", "accelerators", "GPU-hours", f"cost ({cur})", "why", "entries"],
            (
                (
                    f"<code>{_e(r['run_id'])}</code>" + (" (ongoing)" if r["ongoing"] else ""),
                    _e(r["user"]),
                    f"{_e(r['accelerator_count'])} × {_e(r['accelerator_type'])}",
                    _e(r["gpu_hours"]),
                    _e(r["cost"]),
                    "<br>".join(_e(b["text"]) for b in r["because"]),
                    _entries(
                        sorted({*r["entries"], *(e for b in r["because"] for e in b["entries"])})
                    ),
                )
                for r in report["affected_runs"]
            ),
        )
    )
    parts.append("<h2>Affected artifacts</h2>")
    parts.append(
        _table(
            ["digest", "depth", "produced by", "used by runs", "entries"],
            (
                (
                    f"<code>{_e(a['digest'])}</code>",
                    _e(a["depth"]),
                    _e(", ".join(a["produced_by"])),
                    _e(a["used_by_runs"]),
                    _entries(a["entries"]),
                )
                for a in report["affected_artifacts"]
            ),
        )
    )
    parts.append(
        f"<h2>Provably clean runs (showing {len(report['clean_runs'])} of {t['clean_runs']})</h2>"
    )
    parts.append(
        _table(
            ["run", "user", "GPU-hours", "why clean", "entries"],
            (
                (
                    f"<code>{_e(c['run_id'])}</code>",
                    _e(c["user"]),
                    _e(c["gpu_hours"]),
                    _e(c["why_clean"]),
                    _entries(c["entries"]),
                )
                for c in report["clean_runs"]
            ),
        )
    )
    parts.append("<h2>Evidence</h2>")
    head = ev["tree_head"]
    parts.append(
        f"<p>Tree head: size {_e(head['size'])}, root <code>{_e(head['root'])}</code>.<br>"
        + (
            f"Signed tree head: size {_e(sth['size'])}, key {_e(sth['key_id'])}, origin "
            f"<code>{_e(sth['origin'])}</code>, root <code>{_e(sth['root'])}</code>."
            if sth
            else "No signed tree head."
        )
        + " Re-check offline with <code>trainguard ledger check-report REPORT.json "
        "--public-key KEY.pub</code>.</p>"
    )
    for index, item in sorted(ev["entries"].items(), key=lambda kv: int(kv[0])):
        parts.append(
            f'<details id="entry-{int(index)}"><summary>entry #{_e(index)}</summary>'
            f"<pre><code>{_e(item['data'])}</code></pre></details>"
        )
    batch = ev["batch_proof"]
    parts.append(
        f"<details><summary>batch inclusion proof of the {len(ev['entries'])} entries above "
        f"in tree size {_e(head['size'])}: {len(batch)} hashes</summary><ol>"
        + "".join(f"<li><code>{_e(h)}</code></li>" for h in batch)
        + "</ol></details>"
    )
    parts.append("</body></html>\n")
    return "".join(parts)
