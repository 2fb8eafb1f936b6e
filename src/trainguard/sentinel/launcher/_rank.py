"""Rank bootstrap: ``python .../launcher/_rank.py SCRIPT|-m MODULE [ARGS]``.

``trainguard run`` starts every rank by running this *file* (not ``-m``: as a
module it would first import ``trainguard.sentinel``, hence torch, whose import
starts threads). Before anything else it blocks the attributed signals, so
every thread the job creates inherits the mask and only trainguard's waiter
thread accepts them (see ``_ranksignals``). Then, in this order:

1. in-rank signal attribution (``_ranksignals``), unless ``TRAINGUARD_RANK_SIGNALS=0``;
2. the heartbeat thread (``_heartbeat``);
3. in canary mode, the world-size patch (``_canary``) and a step counter.

Then it runs the script exactly as ``python SCRIPT ARGS`` would (``sys.argv``,
``sys.path[0]`` and ``__main__`` as usual) or the module as ``python -m``.
"""

from __future__ import annotations

import os
import signal
import sys

#: The signals ``_ranksignals.ATTRIBUTED`` accepts, spelled out here because they
#: must be blocked before any trainguard (or torch) import; a test keeps them equal.
EARLY_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
)

if __name__ == "__main__" and os.environ.get("TRAINGUARD_RANK_SIGNALS", "1") != "0":
    signal.pthread_sigmask(signal.SIG_BLOCK, EARLY_SIGNALS)

import runpy  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

from trainguard.sentinel.launcher import _heartbeat, _ranksignals  # noqa: E402
from trainguard.sentinel.launcher._canary import install_canary  # noqa: E402
from trainguard.sentinel.launcher._jobdir import (  # noqa: E402
    ENV_CANARY_WORLD_SIZE,
    ENV_RANK_SIGNALS,
    JobDir,
)

__all__ = ["EARLY_SIGNALS", "bootstrap", "main"]


def _count_steps() -> None:
    """Count optimizer steps into the heartbeat (canary mode: the supervisor stops at N)."""
    try:
        from torch.optim.optimizer import register_optimizer_step_post_hook
    except ImportError:
        return
    counts: dict[int, int] = {}

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        counts[id(optimizer)] = counts.get(id(optimizer), 0) + 1
        _heartbeat.note_step(max(counts.values()))

    register_optimizer_step_post_hook(hook)


def bootstrap() -> None:
    """Install the in-rank pieces configured by the environment (idempotent)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        rank = 0
    job = JobDir.from_env()
    if os.environ.get(ENV_RANK_SIGNALS, "1") != "0":
        _ranksignals.install(rank=rank, job=job)
    _heartbeat.start_from_env()
    canary = os.environ.get(ENV_CANARY_WORLD_SIZE)
    if canary:
        install_canary(int(canary))
        _count_steps()


def main(argv: Sequence[str] | None = None) -> None:
    """Bootstrap, then run the target as ``python`` would."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0] == "-m" and len(args) < 2):
        sys.exit("usage: python .../trainguard/sentinel/launcher/_rank.py SCRIPT|-m MODULE [ARGS]")
    bootstrap()
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        sys.path[0] = os.getcwd()  # as `python -m`: the working directory first
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return
    script = args[0]
    sys.argv = [script, *args[1:]]
    # `python SCRIPT` puts the script's directory first on sys.path, not the cwd.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
