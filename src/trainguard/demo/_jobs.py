"""The demo's training jobs: a guarded pre-training run and colleagues' fine-tunes.

Each job is a process of its own, as on a cluster: the pre-training run
(``python -m trainguard.demo._jobs``) trains under ``trainguard.protect`` inside
a ledger :class:`~trainguard.ledger.RunRecorder`, so the ledger holds its run,
its checkpoint, the sentinel's per-step metrics and any alarm (the sentinel's
scale check reads the code loaded in the process: a host process full of other
code, a test runner's say, is not a clean job). The colleagues' fine-tunes
(:mod:`._colleague`) run in throwaway processes because they load a checkpoint
the unsafe way, as the incident's victims did.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainguard.drill._train import ModelConfig

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL",
    "ColleagueJob",
    "build_model",
    "main",
    "pretrain",
    "run_colleague",
    "run_pretrain",
]


#: The demo's tiny GPT is the drills' model: a few seconds of CPU for a few dozen steps.
MODEL = ModelConfig


def build_model() -> torch.nn.Module:
    """A fresh tiny GPT of the demo's size."""
    from trainguard.drill._model import GPT

    return GPT(MODEL.layers, MODEL.d, MODEL.heads, MODEL.ctx)


def pretrain(ledger_url: str, checkpoint: Path, *, steps: int, run_id: str, user: str) -> str:
    """Train under the sentinel, recorded in the ledger; returns the checkpoint's digest.

    Raises:
        IntegrityError: the sentinel raised an alarm on this clean run (it must not).
    """
    import torch
    import torch.nn.functional as F

    from trainguard.drill._model import batches, corpus
    from trainguard.errors import IntegrityError
    from trainguard.ledger import RunRecorder, save
    from trainguard.sentinel import protect

    torch.manual_seed(0)
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    data = batches(corpus(), MODEL.batch, MODEL.ctx, seed=0)
    spool = checkpoint.parent.parent / "alarms"
    with RunRecorder.start(
        ledger_url, run_id=run_id, user=user, accelerator_type="cpu", command="trainguard demo"
    ):
        with protect(model, opt, log_every=2, spool_dir=str(spool), console=False) as sentinel:
            for _ in range(steps):
                x, y = next(data)
                loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
                sentinel.observe(loss=loss)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                opt.zero_grad(set_to_none=True)
            alarms = sentinel.alarms
        if alarms:
            raise IntegrityError(
                "the sentinel raised alarms on the demo's clean pre-training run",
                found="; ".join(a.line() for a in alarms[:3]),
            )
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        digest: str = save(
            {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": steps},
            checkpoint,
        )
    return digest


def run_pretrain(ledger_url: str, checkpoint: Path, *, steps: int, run_id: str, user: str) -> None:
    """:func:`pretrain` in a process of its own.

    Raises:
        subprocess.CalledProcessError: the job failed or the sentinel raised an alarm
            (its output is in the exception).
    """
    cmd = [sys.executable, "-m", "trainguard.demo._jobs", "--ledger", ledger_url]
    cmd += ["--checkpoint", str(checkpoint), "--steps", str(steps)]
    cmd += ["--run-id", run_id, "--user", user]
    subprocess.run(cmd, env=_job_env(), check=True, capture_output=True, text=True, timeout=600)


def _job_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRAINGUARD_RUN_ID", None)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainguard.demo._jobs``: the pre-training job; exit 1 on an alarm."""
    from trainguard.errors import IntegrityError

    p = argparse.ArgumentParser(prog="python -m trainguard.demo._jobs")
    p.add_argument("--ledger", required=True)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--run-id", required=True)
    p.add_argument("--user", required=True)
    args = p.parse_args(argv)
    try:
        pretrain(args.ledger, args.checkpoint, steps=args.steps, run_id=args.run_id, user=args.user)
    except IntegrityError as exc:
        print(f"{exc.message}: {exc.found}", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class ColleagueJob:
    """One fine-tune: who ran it, what it loaded, what it wrote."""

    run_id: str
    user: str
    load: Path
    out: Path


def run_colleague(ledger_url: str, job: ColleagueJob, *, steps: int = 6) -> None:
    """Run one colleague's fine-tune in a throwaway process.

    Raises:
        subprocess.CalledProcessError: the job failed (its output is in the exception).
    """
    env = _job_env()
    cmd = [
        sys.executable,
        "-m",
        "trainguard.demo._colleague",
        "--ledger",
        ledger_url,
        "--run-id",
        job.run_id,
        "--user",
        job.user,
        "--load",
        str(job.load),
        "--out",
        str(job.out),
        "--steps",
        str(steps),
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=300)


if __name__ == "__main__":
    raise SystemExit(main())
