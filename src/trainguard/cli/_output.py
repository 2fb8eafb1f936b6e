"""Shared output options and report emission for report-producing commands."""

from __future__ import annotations

import argparse
import os
import sys

from trainguard.errors import UsageError
from trainguard.findings import Report, Severity


def add_output_options(parser: argparse.ArgumentParser, *, default_fail_on: str = "medium") -> None:
    """``--json``, ``--sarif``, ``--output FILE``, ``--fail-on SEVERITY``, ``--quiet``."""
    group = parser.add_argument_group("output")
    fmt = group.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="write the JSON report to stdout")
    fmt.add_argument("--sarif", action="store_true", help="write a SARIF 2.1.0 log to stdout")
    group.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the machine report (JSON, or SARIF with --sarif) to FILE instead of stdout",
    )
    group.add_argument(
        "--fail-on",
        metavar="SEVERITY",
        default=default_fail_on,
        help=f"exit 1 when a finding is at or above SEVERITY (info, low, medium, high, critical; default {default_fail_on})",
    )
    group.add_argument(
        "--quiet", "-q", action="store_true", help="no human report or progress on stderr"
    )


def fail_on(args: argparse.Namespace) -> Severity:
    try:
        return Severity.parse(args.fail_on)
    except ValueError as exc:
        raise UsageError(str(exc), subject="--fail-on") from exc


def _color(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


def emit(report: Report, args: argparse.Namespace) -> int:
    """Write ``report`` where the options say and return the exit code."""
    # Each formatter loads on first use: `scan -q` in a prolog renders nothing.
    from trainguard.report import render

    threshold = fail_on(args)
    machine = "sarif" if args.sarif else ("json" if (args.json or args.output) else None)
    if machine is not None:
        text = render(report, machine)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
    if not args.quiet:
        sys.stderr.write(
            render(
                report, "text", color=_color(sys.stderr), verbose=getattr(args, "verbose", False)
            )
        )
    return report.exit_code(threshold)
