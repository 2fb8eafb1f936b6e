"""``trainguard convert SRC DST``: a scanned, weights-only PyTorch checkpoint to safetensors."""

from __future__ import annotations

import argparse
import json
import sys

from trainguard.cli._output import fail_on
from trainguard.errors import UnsafeArtifactError
from trainguard.findings import Report
from trainguard.report import render

HELP = "convert a PyTorch checkpoint to safetensors after scanning it (weights-only load)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "convert",
        help=HELP,
        description=HELP + ". The checkpoint is read once; the bytes scanned are the bytes loaded. "
        "Exit 0 converted, 1 refused (findings or non-tensor objects), 2 error.",
    )
    parser.add_argument("src", metavar="SRC", help="checkpoint to convert (torch.save output)")
    parser.add_argument("dst", metavar="DST", help="safetensors file to write")
    parser.add_argument(
        "--fail-on",
        metavar="SEVERITY",
        default="medium",
        help="refuse when a finding is at or above SEVERITY (info, low, medium, high, critical; default medium)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    parser.add_argument(
        "--json",
        action="store_true",
        help="write the result (or the refusing report) as JSON to stdout",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainguard.scan.convert import convert_to_safetensors

    threshold = fail_on(args)
    try:
        result = convert_to_safetensors(args.src, args.dst, threshold=threshold, force=args.force)
    except UnsafeArtifactError as exc:
        report = exc.report if isinstance(exc.report, Report) else None
        if report is not None and args.json:
            sys.stdout.write(render(report, "json"))
        if report is not None and report.at_least(threshold):  # else torch refused, not the scan
            sys.stderr.write(render(report, "text", verbose=getattr(args, "verbose", False)))
        print(exc.diagnostics(), file=sys.stderr)
        return exc.exit_code
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    mib = result.size / (1 << 20)
    notes = []
    if result.aliases:
        notes.append(f"{len(result.aliases)} tied aliases dropped (listed in metadata)")
    if result.extra:
        notes.append(f"{len(result.extra)} non-tensor values kept in metadata")
    print(
        f"converted {result.source} -> {result.destination}: {result.tensors} tensors, {mib:.1f} MiB"
        + (f"; {'; '.join(notes)}" if notes else ""),
        file=sys.stderr,
    )
    print(f"  source sha256 {result.source_sha256}", file=sys.stderr)
    return 0
