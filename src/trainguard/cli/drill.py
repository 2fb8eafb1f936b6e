"""``trainguard drill [NAME...]``: replay the incident's attacks on real jobs and see them caught.

Examples::

    trainguard drill --list
    trainguard drill                                  # every drill, about three minutes on 2 CPUs
    trainguard drill signflip-patch kill-rank --keep  # two drills, keep their files
    trainguard drill --json > drills.json

Exit status: 0 every drill went as promised (caught within its bound, no payload
ran, the clean control raised nothing); 1 some drill did not; 2 a usage error or
a drill that could not run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from trainguard.drill import DrillResult

HELP = "run real small training jobs with the incident's attacks injected (harmless payloads)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "drill",
        help=HELP,
        description=HELP,
        epilog="Exit codes: 0 every drill caught as promised, 1 a drill went undetected "
        "(or a payload ran, or the clean control raised an alarm), 2 error.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="drills to run (default: all; see --list)"
    )
    parser.add_argument("--list", action="store_true", help="list the drills and exit")
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="where the drills' jobs, spools and logs go (default: a temporary directory)",
    )
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="record the drill runs in this ledger (default: a SQLite ledger in the work directory)",
    )
    parser.add_argument("--json", action="store_true", help="write the results as JSON to stdout")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary work directory (with its logs)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainguard.drill import DRILLS
    from trainguard.drill.attacks import drills, get

    selected = [get(n) for n in args.names] if args.names else list(drills())
    if args.list:
        _list(selected, as_json=args.json)
        return 0
    from trainguard.drill import run_drills

    workdir = args.workdir or tempfile.mkdtemp(prefix="trainguard-drill-")
    started = time.monotonic()
    print(
        f"trainguard drill: {len(selected)} of {len(DRILLS)} drill(s), each a 2-rank job "
        f"under `trainguard run`; work directory {workdir}",
        file=sys.stderr,
        flush=True,
    )
    try:
        results = run_drills(
            [d.name for d in selected],
            workdir=workdir,
            ledger_url=args.ledger,
            progress=_progress(sys.stderr),
        )
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        doc = {"ok": all(r.ok for r in results), "results": [r.to_dict() for r in results]}
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=repr) + "\n")
    sys.stderr.write("\n" + summary_table(results) + "\n")
    bad = [r.name for r in results if not r.ok]
    elapsed = time.monotonic() - started
    verdict = (
        "every drill was caught as promised" if not bad else f"NOT AS PROMISED: {', '.join(bad)}"
    )
    print(f"\ndrills finished in {elapsed:.0f} s: {verdict}.", file=sys.stderr)
    if args.workdir is not None or args.keep:
        print(f"job logs, spools and the ledger: {workdir}", file=sys.stderr)
    return exit_code(results)


def exit_code(results: list[DrillResult]) -> int:
    """2 when a drill could not run, 1 when one did not go as promised, else 0."""
    if any(r.error for r in results):
        return 2
    return 0 if all(r.ok for r in results) else 1


def _list(selected: list[Any], *, as_json: bool) -> None:
    if as_json:
        rows = [
            {
                "name": d.name,
                "title": d.title,
                "incident": d.incident,
                "expected_checks": list(d.expected_checks),
                "bound": None if d.control else d.bound,
            }
            for d in selected
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    width = max(len(d.name) for d in selected)
    for d in selected:
        checks = ", ".join(d.expected_checks) or "(nothing may fire)"
        sys.stdout.write(f"{d.name:<{width}}  {d.title}\n{'':<{width}}  caught by: {checks}\n")


def _progress(stream: TextIO) -> Any:
    def show(index: int, total: int, name: str, result: DrillResult | None) -> None:
        if result is None:
            stream.write(f"[{index + 1}/{total}] {name} ...\n")
        else:
            stream.write(f"        {_verdict(result)} ({result.seconds:.1f} s)\n")
        stream.flush()

    return show


def _verdict(r: DrillResult) -> str:
    if r.error:
        return "ERROR: " + r.error.splitlines()[0][:160]
    if r.control:
        return "clean: no alarm" if not r.detected else f"FALSE ALARM from {', '.join(r.checks)}"
    if not r.detected:
        return "NOT DETECTED"
    head = f"caught by {', '.join(r.checks)} after {r.steps_to_detection} step(s)"
    if r.marker_fired:
        head += "; BUT THE PAYLOAD RAN"
    elif not r.ok:
        head += f"; outside its bound of {r.bound} step(s)"
    return head


def summary_table(results: list[DrillResult]) -> str:
    """The human summary: one row per drill (drill, detected, check, steps, evidence)."""
    header = ("drill", "detected", "check", "steps", "evidence")
    rows = [header]
    for r in results:
        if r.error:
            detected, evidence = "error", r.error.splitlines()[0]
        elif r.control:
            detected = "no alarm" if not r.detected else "FALSE ALARM"
            evidence = str(r.evidence.get("message", "-")) if r.detected else "-"
        else:
            detected = ("yes" if r.ok else "YES, BUT") if r.detected else "NO"
            evidence = str(r.evidence.get("message", "-"))
            if r.marker_fired:
                evidence = "payload ran! " + evidence
        steps = "-" if r.steps_to_detection is None else str(r.steps_to_detection)
        rows.append((r.name, detected, ", ".join(r.checks) or "-", steps, _cut(evidence, 70)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
            + "  "
            + row[4]
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 8)
    return "\n".join(lines)


#: A directory part of an absolute path (the table shows file names only).
_DIRS = re.compile(r"(?<![\w.])/(?:[^\s/:`'\"]+/)+")


def _cut(text: str, width: int) -> str:
    text = _DIRS.sub("", " ".join(text.split()))
    return text if len(text) <= width else text[: width - 3] + "..."
