"""``trainguard preflight``: the job prolog (scan + env verify + code verify, one report)."""

from __future__ import annotations

import argparse

from trainguard.cli._output import add_output_options, emit
from trainguard.cli._progress import Progress
from trainguard.cli.code import add_code_options
from trainguard.cli.env import add_env_options, env_config

HELP = "job prolog: scan the job's checkpoints, verify the environment and the training code"
DESCRIPTION = (
    HELP + ". Exit 0 lets the job start; 1 (findings at or above --fail-on) or 2 (error) "
    "should stop it. Usable from a Slurm prolog, a Kubernetes init container or a torchrun "
    "wrapper (see docs/preflight.md)."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("preflight", help=HELP, description=DESCRIPTION)
    parser.add_argument(
        "--scan",
        metavar="PATH",
        action="append",
        default=[],
        help="a checkpoint, model folder or data file the job loads (repeatable)",
    )
    parser.add_argument(
        "--baseline", metavar="FILE", help="re-check the environment against this baseline"
    )
    parser.add_argument(
        "--repo",
        metavar="DIR",
        default=".",
        help="the training repository (default: the current folder)",
    )
    parser.add_argument("--no-env", action="store_true", help="skip the environment check")
    parser.add_argument("--no-code", action="store_true", help="skip the training-code check")
    add_env_options(parser)
    add_code_options(parser)
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainguard.env.code import CodeConfig
    from trainguard.env.preflight import PreflightConfig, preflight

    config = PreflightConfig(
        scan_paths=tuple(args.scan),
        env=None if args.no_env else env_config(args, baseline=args.baseline),
        code=None
        if args.no_code
        else CodeConfig(
            repo=args.repo,
            import_paths=tuple(args.import_path),
            check_bytecode=not args.no_bytecode,
        ),
    )
    progress = Progress("preflight", enabled=not args.quiet)
    try:
        report = preflight(config, progress=progress)
    finally:
        progress.done()
    return emit(report, args)
