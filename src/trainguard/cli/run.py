"""``trainguard run [OPTIONS] -- COMMAND...``: supervise a training job.

Examples::

    trainguard run -- torchrun --nproc-per-node 2 train.py --epochs 3
    trainguard run --heartbeat-timeout 30 --spool /scratch/alarms -- python train.py
    trainguard run --canary-world-size 512 -- torchrun --nproc-per-node 2 train.py

Exit status: the job's own (128+N when a signal N ended it); 1 when the job
succeeded but alarms were raised; in canary mode 0 (no alarm), 1 (alarms) or 2
(the canary never reached its steps); 2 for a usage error.
"""

from __future__ import annotations

import argparse

from trainguard.errors import UsageError

HELP = "run a training job under supervision: dead, stopped or silent ranks and who signalled them"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        help=HELP,
        description=HELP,
        epilog="Put the job's command after `--`: torchrun ..., python -m torch.distributed.run ..., "
        "python script.py, or any command (then run unwrapped).",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds without a heartbeat before a rank is reported silent (default 60)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between a rank's heartbeats (default 1)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds without a new training step before a live rank is reported stalled (default 0: off)",
    )
    parser.add_argument(
        "--spool",
        metavar="DIR",
        help="alarm spool directory, shared with the ranks' sentinels "
        "(default $TRAINGUARD_SPOOL_DIR or ./.trainguard/alarms)",
    )
    parser.add_argument("--job-dir", metavar="DIR", help="keep the heartbeat/event directory here")
    parser.add_argument(
        "--canary-world-size",
        type=int,
        default=0,
        metavar="N",
        help="canary mode: the job code sees world size N while few processes run",
    )
    parser.add_argument(
        "--canary-steps",
        type=int,
        default=20,
        metavar="K",
        help="canary mode: stop the job after K optimizer steps on every rank (default 20)",
    )
    parser.add_argument(
        "--canary-timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="canary mode: give up after S seconds (default 900)",
    )
    parser.add_argument(
        "--no-inject",
        action="store_true",
        help="run the command unchanged (no rank bootstrap: heartbeats only from protect())",
    )
    parser.add_argument(
        "--no-rank-signals",
        action="store_true",
        help="do not attribute signals inside ranks (they keep the default signal mask)",
    )
    parser.add_argument(
        "--no-scale-check",
        action="store_true",
        help="skip the static scale-trigger analysis of the training script",
    )
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="also record the launcher's alarms (dead, silent or signalled ranks) as alerts "
        "of the run in this ledger (sqlite:///PATH or postgresql://...)",
    )
    parser.add_argument(
        "--run-id",
        metavar="ID",
        help="the run's id in the ledger, exported to the ranks as TRAINGUARD_RUN_ID "
        "(default: $TRAINGUARD_RUN_ID, else generated)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the job")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainguard.sentinel.launcher import RunOptions, Supervisor

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError(
            "no command after --",
            hint="trainguard run -- torchrun --nproc-per-node 2 train.py",
        )
    options = RunOptions(
        command=tuple(command),
        heartbeat_timeout=args.heartbeat_timeout,
        heartbeat_interval=args.heartbeat_interval,
        stall_timeout=args.stall_timeout,
        spool_dir=args.spool,
        job_dir=args.job_dir,
        canary_world_size=args.canary_world_size,
        canary_steps=args.canary_steps,
        canary_timeout=args.canary_timeout,
        inject=not args.no_inject,
        rank_signals=not args.no_rank_signals,
        scale_check=not args.no_scale_check,
        ledger=args.ledger,
        run_id=args.run_id,
    )
    return Supervisor(options).run().exit_code
