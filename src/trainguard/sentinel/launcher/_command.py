"""Turn the user's command (after ``--``) into what the supervisor actually starts.

Three shapes:

* ``torchrun ARGS SCRIPT ...`` or ``python -m torch.distributed.run ARGS SCRIPT ...``:
  torchrun's own parser finds the script; torchrun then runs inside
  ``python -m trainguard.sentinel.launcher._agent`` (torch.distributed.run
  used programmatically, so every worker's exit status is recorded) and each
  worker starts through the rank bootstrap file (``.../launcher/_rank.py SCRIPT ...``).
* ``python [OPTS] SCRIPT ...`` / ``python -m MODULE ...``: one rank, started
  through the rank bootstrap by the same interpreter with the same options.
* anything else (a shell script, ``torchrun --no-python``, ``python -c``): run
  unchanged; ranks that call ``trainguard.protect`` still heartbeat through the
  environment, but exit statuses and in-rank signal attribution are unavailable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainguard.errors import UsageError

__all__ = ["AGENT_MODULE", "RANK_SCRIPT", "LaunchPlan", "plan_command"]

AGENT_MODULE = "trainguard.sentinel.launcher._agent"
#: Ranks start by running this file: as a script it can block signals before
#: ``trainguard.sentinel`` (and torch, which starts threads) is imported.
RANK_SCRIPT = str(Path(__file__).resolve().with_name("_rank.py"))

#: Python options that take a value (the value may be glued on: ``-Wignore``).
_VALUE_OPTIONS = frozenset("WX")
_LONG_VALUE_OPTIONS = frozenset({"--check-hash-based-pycs"})


@dataclass(frozen=True)
class LaunchPlan:
    """What to start and what it runs."""

    #: ``torchrun``, ``python`` or ``generic``.
    mode: str
    #: The argv the supervisor executes.
    argv: tuple[str, ...]
    #: The training script's path, when there is one (for the static scale check).
    script: str | None = None
    #: The training module, for ``-m`` launches.
    module: str | None = None
    #: Why the command runs unwrapped (``generic`` mode only).
    note: str | None = None


def _is_python(arg0: str) -> bool:
    name = os.path.basename(arg0)
    return arg0 == sys.executable or (
        (name.startswith("python") and name[6:].replace(".", "").isdigit()) or name == "python"
    )


def _split_python(argv: Sequence[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """Split ``python OPTS TARGET ARGS``: (options, script, module, args); generic if neither."""
    options: list[str] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            options.append(arg)
            if arg in _LONG_VALUE_OPTIONS and i + 1 < len(argv):
                options.append(argv[i + 1])
                i += 1
            i += 1
            continue
        cluster = arg[1:]
        for j, char in enumerate(cluster):
            rest = cluster[j + 1 :]
            if char in "mc":
                value = rest or (argv[i + 1] if i + 1 < len(argv) else "")
                consumed = 1 if rest else 2
                if char == "c":
                    return options, None, None, []
                if cluster[:j]:
                    options.append("-" + cluster[:j])
                return options, None, value, list(argv[i + consumed :])
            if char in _VALUE_OPTIONS:
                if not rest:
                    options.extend([arg, argv[i + 1]] if i + 1 < len(argv) else [arg])
                    i += 1
                else:
                    options.append(arg)
                break
        else:
            options.append(arg)
        i += 1
    if i >= len(argv) or argv[i] == "-":
        return options, None, None, []
    return options, argv[i], None, list(argv[i + 1 :])


def _plan_torchrun(python: str, torchrun_args: Sequence[str]) -> LaunchPlan:
    from torch.distributed.run import get_args_parser

    try:
        parsed = get_args_parser().parse_args(list(torchrun_args))
    except SystemExit as exc:
        raise UsageError(
            "torchrun could not parse the command after --",
            subject=" ".join(torchrun_args),
            hint="check the torchrun arguments: `torchrun --help`",
        ) from exc
    if parsed.no_python:
        return LaunchPlan(
            "generic",
            (python, "-m", "torch.distributed.run", *torchrun_args),
            note="torchrun --no-python runs an executable, which cannot be wrapped",
        )
    script_args = list(parsed.training_script_args)
    pos = len(torchrun_args) - len(script_args) - 1
    if pos < 0 or torchrun_args[pos] != parsed.training_script:
        raise UsageError(
            "could not locate the training script in the torchrun arguments",
            subject=" ".join(torchrun_args),
        )
    # The bootstrap is a file, so torchrun must not run it with `python -m`.
    head = [arg for arg in torchrun_args[:pos] if arg not in ("-m", "--module")]
    target = parsed.training_script
    if parsed.module:
        wrapped = [*head, RANK_SCRIPT, "-m", target, *script_args]
        return LaunchPlan("torchrun", (python, "-m", AGENT_MODULE, *wrapped), module=target)
    wrapped = [*head, RANK_SCRIPT, target, *script_args]
    return LaunchPlan("torchrun", (python, "-m", AGENT_MODULE, *wrapped), script=target)


def plan_command(argv: Sequence[str], *, inject: bool = True) -> LaunchPlan:
    """Decide how to start ``argv`` (the words after ``--``).

    With ``inject=False`` the command always runs unchanged (generic mode).
    """
    if not argv:
        raise UsageError("no command to run", hint="trainguard run -- torchrun ... train.py")
    argv = list(argv)
    if not inject:
        return LaunchPlan("generic", tuple(argv), note="--no-inject")
    if os.path.basename(argv[0]) == "torchrun":
        return _plan_torchrun(sys.executable, argv[1:])
    if not _is_python(argv[0]):
        return LaunchPlan("generic", tuple(argv), note=f"{argv[0]} is neither torchrun nor python")
    options, script, module, args = _split_python(argv)
    if module in ("torch.distributed.run", "torch.distributed.launch"):
        if module == "torch.distributed.launch":
            return LaunchPlan(
                "generic", tuple(argv), note="torch.distributed.launch is deprecated; use torchrun"
            )
        return _plan_torchrun(argv[0], args)
    if module is not None:
        return LaunchPlan(
            "python", (argv[0], *options, RANK_SCRIPT, "-m", module, *args), module=module
        )
    if script is None:
        return LaunchPlan("generic", tuple(argv), note="python -c / stdin cannot be wrapped")
    return LaunchPlan("python", (argv[0], *options, RANK_SCRIPT, script, *args), script=script)
