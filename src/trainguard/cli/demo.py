"""``trainguard demo``: the whole product on this machine, in a few minutes, no GPU."""

from __future__ import annotations

import argparse
import sys
import time

HELP = (
    "the incident replayed on this machine: guarded training, a poisoned checkpoint, its "
    "blast radius from the ledger, drills, an HTML report and the dashboard"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help=HELP, description=HELP)
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="trainguard-demo",
        help="the demo's folder: checkpoints, ledger.db, reports (default: ./trainguard-demo; "
        "an earlier demo there is replaced)",
    )
    parser.add_argument(
        "--drills",
        metavar="NAMES",
        help="comma-separated drills to run (default: the demo's selection; 'none' for none; "
        "see trainguard drill --list)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from trainguard.demo import DEMO_DRILLS, run_demo

    started = time.monotonic()
    drills: tuple[str, ...] = DEMO_DRILLS
    if args.drills is not None:
        drills = tuple(n.strip() for n in args.drills.split(",") if n.strip() not in ("", "none"))

    def progress(index: int, total: int, title: str) -> None:
        elapsed = time.monotonic() - started
        print(f"[{index + 1}/{total} {elapsed:5.0f}s] {title} ...", file=sys.stderr, flush=True)

    result = run_demo(args.out, progress=progress, drills=drills)
    if args.json:
        doc = {
            "ok": result.ok,
            "out_dir": str(result.out_dir),
            "ledger": result.ledger_url,
            "steps": [{"title": s.title, "ok": s.ok, "detail": s.detail} for s in result.steps],
            "drills": result.drills,
            "blast_radius_totals": result.blast["totals"] if result.blast else None,
            "html": str(result.html) if result.html else None,
        }
        print(json.dumps(doc, indent=2))
    print("", file=sys.stderr)
    for s in result.steps:
        print(f"  {'ok  ' if s.ok else 'FAIL'}  {s.title}\n        {s.detail}", file=sys.stderr)
    elapsed = time.monotonic() - started
    verdict = "every step behaved as trainguard promises" if result.ok else "SOME STEPS FAILED"
    print(f"\ndemo finished in {elapsed:.0f} s: {verdict}.", file=sys.stderr)
    if result.html is not None:
        print(f"report:    {result.html}", file=sys.stderr)
    print(f"ledger:    {result.ledger_url}", file=sys.stderr)
    print(f"dashboard: {result.dashboard_command()}", file=sys.stderr)
    return 0 if result.ok else 1
