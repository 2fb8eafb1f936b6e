"""``trainguard scan PATH...``: static analysis of model artifacts."""

from __future__ import annotations

import argparse

from trainguard.cli._output import add_output_options, emit

HELP = "scan model artifacts (files, directories, HF model folders) without executing them"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("scan", help=HELP, description=HELP)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to scan")
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainguard.scan import scan_paths

    if args.quiet:  # no progress line either: nothing to import or draw
        return emit(scan_paths(args.paths), args)
    from trainguard.cli._progress import Progress

    progress = Progress("scanning")
    try:
        report = scan_paths(args.paths, progress=progress)
    finally:
        progress.done()
    return emit(report, args)
