"""``trainguard env verify`` and ``trainguard env snapshot``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trainguard.cli._output import add_output_options, emit, fail_on
from trainguard.cli._progress import Progress
from trainguard.errors import UsageError

if TYPE_CHECKING:
    from trainguard.env import EnvConfig

HELP = "verify the Python environment against RECORDs, wheels or a baseline"
VERIFY_HELP = (
    "check every installed file against its RECORD (and its wheel), unowned files, .pth "
    "hooks, sitecustomize, bytecode and load-changing variables; with --baseline, a "
    "stat-only re-check"
)
SNAPSHOT_HELP = "verify the environment, then write a baseline of every file (sha256 + stat facts)"


def add_env_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by env verify, env snapshot and preflight."""
    group = parser.add_argument_group("environment")
    group.add_argument(
        "--python",
        metavar="PATH",
        help="verify this interpreter's environment (started with -I -S) instead of this one",
    )
    group.add_argument(
        "--wheels",
        metavar="DIR",
        action="append",
        default=[],
        help="folder of the wheels the environment was installed from (repeatable)",
    )
    group.add_argument(
        "--no-auto-wheels",
        action="store_true",
        help="do not use the local find-links folders of pip's own configuration",
    )
    group.add_argument(
        "--pip-cache",
        metavar="DIR",
        nargs="?",
        const="",
        help="also search pip's cache for wheels (default: pip's cache folder)",
    )
    group.add_argument(
        "--lock", metavar="FILE", help="requirements file with --hash=sha256: pins for the wheels"
    )
    group.add_argument(
        "--deep-pyc",
        action="store_true",
        help="recompile every live .pyc's source and compare code objects (slow)",
    )
    group.add_argument(
        "--allow-sha256",
        metavar="HEX",
        action="append",
        default=[],
        help="accept a reviewed .pth, sitecustomize or unowned file by its SHA-256 (repeatable)",
    )
    group.add_argument(
        "--allow-env",
        metavar="NAME[=VALUE]",
        action="append",
        default=[],
        help="accept a load-changing environment variable (repeatable)",
    )
    group.add_argument("--workers", type=int, metavar="N", help="hashing threads (default: CPUs)")


def _pip_cache_dir(value: str | None) -> str | None:
    if value is None:
        return None
    if value:
        return value
    env = os.environ.get("PIP_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "pip")


def env_config(args: argparse.Namespace, *, baseline: str | None = None) -> EnvConfig:
    """Build an :class:`~trainguard.env.EnvConfig` from parsed options."""
    from trainguard.env import EnvConfig

    for value in args.allow_sha256:
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
            raise UsageError(f"--allow-sha256 {value!r} is not a SHA-256 hex digest", subject=value)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1", subject=str(args.workers))
    return EnvConfig(
        python=args.python,
        baseline=baseline,
        wheels=tuple(args.wheels),
        auto_wheels=not args.no_auto_wheels,
        pip_cache=_pip_cache_dir(args.pip_cache),
        lock=args.lock,
        deep_pyc=args.deep_pyc,
        workers=args.workers,
        allowed_sha256=frozenset(v.lower() for v in args.allow_sha256),
        allowed_env=frozenset(args.allow_env),
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("env", help=HELP, description=HELP)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    verify = verbs.add_parser("verify", help=VERIFY_HELP, description=VERIFY_HELP)
    verify.add_argument(
        "--baseline", metavar="FILE", help="re-check against this baseline (fast, stat-based)"
    )
    add_env_options(verify)
    add_output_options(verify)
    _accept_verbose(verify)
    verify.set_defaults(func=run_verify)

    snap = verbs.add_parser("snapshot", help=SNAPSHOT_HELP, description=SNAPSHOT_HELP)
    snap.add_argument("baseline", metavar="BASELINE", help="the baseline file to write")
    snap.add_argument(
        "--with-sources",
        action="store_true",
        help="also store the .py sources (BASELINE.sources.zip) so later diffs show what changed",
    )
    snap.add_argument(
        "--include-stdlib",
        action="store_true",
        help="also record the standard library (it has no RECORD)",
    )
    snap.add_argument(
        "--force",
        action="store_true",
        help="write the baseline even when the verification has findings at or above --fail-on",
    )
    add_env_options(snap)
    add_output_options(snap)
    _accept_verbose(snap)
    snap.set_defaults(func=run_snapshot)


def run_verify(args: argparse.Namespace) -> int:
    from trainguard.env import verify_environment

    config = env_config(args, baseline=args.baseline)
    progress = Progress("hashing", enabled=not args.quiet)
    try:
        report = verify_environment(config, progress=lambda i, n, p: progress(i, n, Path(p)))
    finally:
        progress.done()
    return emit(report, args)


def run_snapshot(args: argparse.Namespace) -> int:
    from trainguard.env import snapshot_environment

    config = env_config(args)
    target = Path(args.baseline)
    if target.is_dir():
        raise UsageError(f"{target} is a folder", subject=str(target), hint="name a file to write")
    progress = Progress("hashing", enabled=not args.quiet)
    try:
        baseline, report = snapshot_environment(
            config,
            include_stdlib=args.include_stdlib,
            sources_archive=f"{target}.sources.zip" if args.with_sources else None,
            progress=lambda i, n, p: progress(i, n, Path(p)),
        )
    finally:
        progress.done()
    blocking = report.at_least(fail_on(args))
    if blocking and not args.force:
        code = emit(report, args)
        print(
            f"baseline NOT written: {len(blocking)} findings at or above --fail-on "
            "(a baseline must describe a verified environment; --force overrides)",
            file=sys.stderr,
        )
        return code
    baseline.save(target)
    report.stats["baseline"] = str(target)
    report.stats["baseline_sha256"] = baseline.digest()
    code = emit(report, args)
    if not args.quiet:
        print(
            f"baseline written: {target} ({baseline.file_count} files, sha256 {baseline.digest()})",
            file=sys.stderr,
        )
    return 0 if args.force else code


def _accept_verbose(parser: argparse.ArgumentParser) -> None:
    # main() adds a hidden -v to first-level sub-commands; verbs sit one level deeper.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
