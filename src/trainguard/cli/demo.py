"""``trainguard demo``: the whole product on this machine, in a few minutes, no GPU."""

from __future__ import annotations

import argparse
import sys
import time

HELP = "train a tiny model, poison a checkpoint like the insider did, and watch trainguard catch it"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help=HELP, description=HELP)
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="trainguard-demo",
        help="where checkpoints and reports go (default: ./trainguard-demo)",
    )
    parser.add_argument("--json", action="store_true", help="print the step results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from trainguard.demo import run_demo

    started = time.monotonic()

    def progress(index: int, total: int, title: str) -> None:
        print(f"[{index + 1}/{total}] {title} ...", file=sys.stderr, flush=True)

    result = run_demo(args.out, progress=progress)
    if args.json:
        doc = {
            "ok": result.ok,
            "out_dir": str(result.out_dir),
            "steps": [{"title": s.title, "ok": s.ok, "detail": s.detail} for s in result.steps],
        }
        print(json.dumps(doc, indent=2))
    print("", file=sys.stderr)
    for s in result.steps:
        print(f"  {'ok  ' if s.ok else 'FAIL'}  {s.title}\n        {s.detail}", file=sys.stderr)
    elapsed = time.monotonic() - started
    verdict = "every step behaved as trainguard promises" if result.ok else "SOME STEPS FAILED"
    print(f"\ndemo finished in {elapsed:.1f} s: {verdict}.", file=sys.stderr)
    print(f"reports: {result.out_dir}/scan-report.json, scan-report.sarif", file=sys.stderr)
    print(f"next: trainguard scan {result.out_dir}/checkpoints", file=sys.stderr)
    return 0 if result.ok else 1
