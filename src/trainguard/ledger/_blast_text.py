"""The human (stderr) form of a blast-radius report, from its JSON form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render_blast_text"]


def _ids(entries: list[int], limit: int = 6) -> str:
    shown = ", ".join(f"#{e}" for e in entries[:limit])
    return shown + (f", +{len(entries) - limit}" if len(entries) > limit else "")


def render_blast_text(report: Mapping[str, Any], *, limit: int = 25) -> str:
    """A summary, the affected runs and artifacts (first ``limit``), clean runs and caveats."""
    t, cur = report["totals"], report["prices"]["currency"]
    head = report["evidence"]["tree_head"]
    sth = report["evidence"].get("signed_tree_head")
    lines = [
        f"blast radius of {report['indicator_text']}",
        f"  as of {report['as_of']}; ledger size {head['size']}; answered from {report['answered_from']}",
        f"  signed tree head: size {sth['size']} by key {sth['key_id']}"
        if sth
        else "  no signed tree head",
        "",
        f"AFFECTED  {t['affected_runs']} runs, {t['affected_gpu_hours']:.1f} GPU-hours, "
        f"{t['affected_cost']:,.2f} {cur}; {len(report['affected_artifacts'])} artifacts",
        f"CLEAN     {t['clean_runs']} runs, {t['clean_gpu_hours']:.1f} GPU-hours, "
        f"{t['clean_cost']:,.2f} {cur}",
        f"TOTAL     {t['runs']} runs, {t['gpu_hours']:.1f} GPU-hours in the ledger",
    ]
    for kind, info in t["affected_by_accelerator"].items():
        lines.append(
            f"          {kind}: {info['runs']} affected runs, {info['gpu_hours']:.1f} GPU-hours"
        )
    if report["sources"]:
        lines += ["", "sources of the indicated content:"]
        for s in report["sources"]:
            who = s.get("produced_by") or f"registered as {s.get('registered_as')}"
            lines.append(f"  {s['digest']} <- {who} ({_ids(s['entries'])})")
    if report["affected_runs"]:
        lines += ["", "affected runs (depth: hops from the indicator):"]
        for r in report["affected_runs"][:limit]:
            ongoing = " ongoing" if r["ongoing"] else ""
            lines.append(
                f"  [{r['depth']}] {r['run_id']}  {r['user']}  {r['accelerator_count']}x"
                f"{r['accelerator_type']}  {r['gpu_hours']:.1f} GPU-h{ongoing}"
            )
            for b in r["because"]:
                lines.append(f"        because {b['text']} ({_ids(b['entries'])})")
        if len(report["affected_runs"]) > limit:
            lines.append(
                f"  ... and {len(report['affected_runs']) - limit} more (see --json / --html)"
            )
    if report["affected_artifacts"]:
        lines += ["", "affected artifacts:"]
        for a in report["affected_artifacts"][:limit]:
            lines.append(
                f"  [{a['depth']}] {a['digest']}  from {', '.join(a['produced_by']) or '-'}"
            )
        if len(report["affected_artifacts"]) > limit:
            lines.append(f"  ... and {len(report['affected_artifacts']) - limit} more")
    if report["clean_runs"]:
        lines += ["", f"provably clean (showing {len(report['clean_runs'])} of {t['clean_runs']}):"]
        for c in report["clean_runs"][:limit]:
            lines.append(f"  {c['run_id']}: {c['why_clean']} ({_ids(c['entries'])})")
    if report["caveats"]:
        lines += ["", "caveats:"]
        lines += [f"  - {c}" for c in report["caveats"]]
    lines.append(
        f"\nevery claim cites ledger entries; {len(report['evidence']['entries'])} entries with "
        "inclusion proofs are in the JSON report (check it with `trainguard ledger check-report`)"
    )
    return "\n".join(lines) + "\n"
