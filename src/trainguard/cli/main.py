"""Entry point: one parser, one error handler."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from trainguard import __version__
from trainguard.errors import TrainguardError

#: Sub-command modules under ``trainguard.cli``, each with ``register(subparsers)``
#: adding the sub-command of the module's name; order is --help order.
COMMANDS = (
    "demo",
    "scan",
    "convert",
    "env",
    "code",
    "preflight",
    "ledger",
    "run",
    "drill",
    "dashboard",
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser, with every sub-command."""
    return _build(COMMANDS)[0]


def _build(
    commands: Sequence[str],
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
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
    for name in commands:
        importlib.import_module(f"trainguard.cli.{name}").register(sub)
    # Accept -v after the sub-command too; SUPPRESS keeps the top-level value
    # when the sub-command's flag is absent.
    for child in sub.choices.values():
        child.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
    return parser, sub


def _parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for ``argv``: only the sub-command it names, when it plainly names one.

    Every command is one process (a Slurm prolog scans each checkpoint), so a
    command does not pay for importing and registering all the others.
    Sub-parsers are independent, so the parse is the same; anything else
    (``--help``, ``--version``, a mistyped command) gets the full parser.
    """
    for word in argv:
        if word in ("-v", "--verbose"):
            continue
        if word in COMMANDS:
            parser, sub = _build((word,))
            if word in sub.choices:
                return parser
        break
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    parser = _parser_for(args_list)
    args = parser.parse_args(args_list)
    try:
        code: int = args.func(args)
        return code
    except TrainguardError as exc:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(exc.diagnostics(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
