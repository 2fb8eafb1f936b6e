"""A backdoor ``.pth`` start-up hook in the environment the job's interpreter uses.

Lines of a ``.pth`` file in site-packages that start with ``import`` are executed
by every interpreter start, before any training code (the incident's "login
backdoor" style of persistence). The drill drops one into a throwaway copy of
the environment (:mod:`._venv`); its harmless payload creates a marker file.

The runner runs ``trainguard preflight`` on the job's interpreter as a blocking
prolog: it reports the executable ``.pth`` line (the hook is inspected without
being run: the interpreter is queried with ``-I -S``), and the job is not
started, so the payload never runs. ``judge`` proves it is live by starting the
copied interpreter once in a throwaway process (``python -c pass``).
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import DrillContext, Outcome

NAME = "pth-backdoor"
TITLE = "backdoor .pth start-up hook in the job's environment"
INCIDENT = "a backdoor gave the insider persistent code execution in colleagues' environments"
EXPECTED_CHECKS = ("preflight",)
EXPECTED_RULES = ("env.pth-exec", "env.startup-hook")
ATTACK_STEP = 0
BOUND = 0
PROLOG = "block"
PAYLOAD = True

HOOK_NAME = "zz_cluster_tuning.pth"


def prepare(ctx: DrillContext) -> None:
    from trainguard.drill.attacks._venv import copy_venv, discard, site_packages

    venv = ctx.workdir / "venv"
    ctx.cleanups.append(lambda: discard(venv))
    ctx.python = str(copy_venv(venv))
    ctx.marker = ctx.workdir / "marker-pth-payload-ran"
    hook = site_packages(venv) / HOOK_NAME
    hook.write_text(f"import os; open({str(ctx.marker)!r}, 'w').close()\n", encoding="utf-8")
    ctx.facts["hook"] = str(hook.relative_to(venv))


def judge(ctx: DrillContext, outcome: Outcome) -> None:
    assert ctx.marker is not None
    proc = subprocess.run([ctx.python, "-c", "pass"], capture_output=True, timeout=120, check=False)
    outcome.evidence["payload_runs_at_interpreter_start"] = (
        proc.returncode == 0 and ctx.marker.exists()
    )
