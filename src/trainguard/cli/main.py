"""Entry point: one parser, one error handler."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from trainguard import __version__
from trainguard.cli import code, convert, demo, env, ledger, preflight, scan
from trainguard.errors import TrainguardError

#: Sub-command modules, each with ``register(subparsers)``; order is --help order.
COMMANDS = (demo, scan, convert, env, code, preflight, ledger)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainguard",
        description="Keep ML training on shared GPU clusters honest.",
        epilog="Exit codes: 0 clean, 1 findings at or above --fail-on (or failed verification), 2 error.",
    )
    parser.add_argument("--version", action="version", version=f"trainguard {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="full evidence, caveats and tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    # Accept -v after the sub-command too; SUPPRESS keeps the top-level value
    # when the sub-command's flag is absent.
    for child in sub.choices.values():
        child.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except TrainguardError as exc:
        if args.verbose:
            traceback.print_exc()
        print(exc.diagnostics(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
