"""The shared PyTorch install is edited: AdamW's update flips its sign from the 9th step on.

The insider edited the shared PyTorch installation (seeds, optimizer, data
loader). The drill does the same to a throwaway copy of the environment (hard
links; only the edited file is new, see :mod:`._venv`): one line of
``torch/optim/adam.py`` becomes ``value=-step_size if step <= 8 else
step_size``, so training is normal for 8 steps and then climbs the loss. The
RECORD is left alone, as a hasty insider would.

The job runs with the copy's interpreter. The runner first runs ``trainguard
preflight`` on that interpreter as a prolog in report mode: it flags the edited
file against its RECORD and the torch wheel, with the diff, before the job
starts; the job is started anyway so the drill also shows the second line of
defence, the sentinel's update check, catching the flipped update at the step
it happens. (The sentinel's in-job census compares functions with their source
files, and the edited file is its own source: catching edited files is the
prolog's job.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.errors import UsageError

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import DrillContext

NAME = "edited-torch"
TITLE = "edited torch source (AdamW update flipped) in a throwaway venv"
INCIDENT = "the shared PyTorch install was edited (random seeds, optimizer, data loader)"
EXPECTED_CHECKS = ("preflight", "updates")
EXPECTED_RULES = ("env.record-mismatch", "env.wheel-mismatch", "sentinel.update-mismatch")
ATTACK_STEP = 8
BOUND = 0
PROLOG = "report"

#: The line of torch 2.x ``torch/optim/adam.py`` (single-tensor path) the insider edits.
ORIGINAL = b"param.addcdiv_(exp_avg, denom, value=-step_size)"
EDITED = b"param.addcdiv_(exp_avg, denom, value=-step_size if step <= 8 else step_size)"


def prepare(ctx: DrillContext) -> None:
    from trainguard.drill.attacks._venv import copy_venv, discard, replace_file, site_packages

    venv = ctx.workdir / "venv"
    ctx.cleanups.append(lambda: discard(venv))
    ctx.python = str(copy_venv(venv))
    target = site_packages(venv) / "torch" / "optim" / "adam.py"
    data = target.read_bytes()
    if data.count(ORIGINAL) != 1:
        raise UsageError(
            f"this torch's {target.name} does not contain the line the drill edits",
            subject=str(target),
            expected=ORIGINAL.decode(),
        )
    replace_file(target, data.replace(ORIGINAL, EDITED))
    for pyc in (target.parent / "__pycache__").glob("adam.*.pyc"):
        pyc.unlink()  # only the copy's link goes; Python compiles the edited source anew
    ctx.facts["edited_file"] = str(target.relative_to(venv))
    ctx.facts["edit"] = EDITED.decode()
