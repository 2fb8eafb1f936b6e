"""``trainguard code verify [REPO]``: the training repository against its git commit."""

from __future__ import annotations

import argparse

from trainguard.cli._output import add_output_options, emit

HELP = "verify the training code against its git commit"
VERIFY_HELP = (
    "report modified, deleted, untracked and ignored-but-importable files of the repository, "
    "bytecode that does not match its source, the commit and a digest of the changes; "
    "git is only used through read-only plumbing (no hooks, filters or fsmonitor run)"
)


def add_code_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by code verify and preflight."""
    group = parser.add_argument_group("code")
    group.add_argument(
        "--import-path",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder of the repository the job imports from (repeatable; sys.path and "
        "PYTHONPATH entries are included)",
    )
    group.add_argument(
        "--no-bytecode", action="store_true", help="do not compare __pycache__ files with sources"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("code", help=HELP, description=HELP)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    verify = verbs.add_parser("verify", help=VERIFY_HELP, description=VERIFY_HELP)
    verify.add_argument(
        "repo", nargs="?", default=".", metavar="REPO", help="a path in the repository (default: .)"
    )
    add_code_options(verify)
    add_output_options(verify)
    _accept_verbose(verify)
    verify.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from trainguard.env.code import CodeConfig, verify_code

    config = CodeConfig(
        repo=args.repo,
        import_paths=tuple(args.import_path),
        check_bytecode=not args.no_bytecode,
    )
    return emit(verify_code(config), args)


def _accept_verbose(parser: argparse.ArgumentParser) -> None:
    # main() adds a hidden -v to first-level sub-commands; verbs sit one level deeper.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
