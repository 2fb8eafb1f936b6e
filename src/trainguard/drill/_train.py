"""The drills' training job: a tiny GPT on the shipped text, DDP over gloo, protected.

Started by the drill runner under ``trainguard run`` and torchrun, one process
per rank::

    trainguard run -- torchrun --nproc-per-node 2 -m trainguard.drill._train \\
        --attack rng-reseed --workdir /tmp/drill/rng-reseed --ledger sqlite:///.../ledger.db

It trains the way a careful colleague would: ``trainguard.protect`` on the DDP
model and AdamW (with its LR scheduler), the loss given to the sentinel, the
run recorded in the ledger (strict: content of unknown provenance is refused),
checkpoints written with ``trainguard.save`` and read back with
``trainguard.load`` (scanned bytes, weights only). The attack named by
``--attack`` is injected at the start of every step (:mod:`.attacks`); the
clean control injects nothing.

Detections the job makes itself (a refused checkpoint) and the facts the runner
needs (the step an attack took effect) go to ``WORKDIR/events/rank{R}.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ModelConfig", "main"]


class ModelConfig:
    """The drill model and data: small enough for a few seconds of CPU per drill."""

    layers = 2
    d = 64
    heads = 2
    ctx = 64
    batch = 8
    lr = 3e-3
    warmup = 8


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainguard.drill._train", description=__doc__)
    p.add_argument("--attack", required=True, help="drill name (control: no attack)")
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--steps", type=int, help="optimizer steps (default: the drill's)")
    p.add_argument("--attack-step", type=int, help="step at which the attack starts")
    p.add_argument("--ledger", help="ledger URL to record the run in")
    p.add_argument("--init-from", type=Path, help="initialise from this checkpoint")
    p.add_argument("--save-step", type=int, help="step after which rank 0 saves a checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, help="sequences per step (default: the model config's)")
    return p


def _init_distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group("gloo")
        # Called from trainguard, so a canary run's reported world size does not apply here.
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; returns the process exit status."""
    args = _parser().parse_args(argv)
    import torch
    import torch.distributed as dist

    from trainguard.drill.attacks import get
    from trainguard.drill.attacks._base import JobContext

    drill = get(args.attack)
    steps = args.steps or drill.steps
    torch.set_num_threads(1)
    rank, world = _init_distributed()
    job = JobContext(
        rank=rank,
        world=world,
        workdir=args.workdir,
        steps=steps,
        attack_step=drill.attack_step if args.attack_step is None else args.attack_step,
    )
    job.event("started", pid=os.getpid(), python=sys.executable, torch=torch.__version__)
    try:
        with contextlib.ExitStack() as stack:
            if args.ledger:
                from trainguard.ledger import RunRecorder

                job.recorder = stack.enter_context(
                    RunRecorder.start(
                        args.ledger,
                        strict=True,
                        command=f"drill {drill.name}: " + " ".join(sys.argv)[:3000],
                        accelerator_type="cpu",
                        # The real size: in a canary run WORLD_SIZE in the environment is
                        # the reported one.
                        world_size=world,
                        accelerator_count=world,
                    )
                )
            _train(job, drill, args, steps)
    except BaseException as exc:
        job.event("error", error=repr(exc)[:2000])
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _train(job: Any, drill: Any, args: argparse.Namespace, steps: int) -> None:
    import torch
    import torch.nn.functional as F

    from trainguard.drill._model import GPT, batches, corpus
    from trainguard.sentinel import protect

    cfg = ModelConfig
    torch.manual_seed(args.seed)
    net = GPT(cfg.layers, cfg.d, cfg.heads, cfg.ctx)
    model: torch.nn.Module = net
    if job.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    data = batches(corpus(), args.batch or cfg.batch, cfg.ctx, seed=1000 + job.rank)

    sentinel = protect(model, opt, scheduler=sched, log_every=5)
    job.sentinel = sentinel
    job.event("protected", skipped=dict(sentinel.skipped))
    if args.init_from is not None:
        _init_from(job, net, args.init_from)
    save_step = steps // 3 if args.save_step is None else args.save_step
    ckpt = args.workdir / "checkpoints" / f"step-{save_step}.pt"
    try:
        for step in range(steps):
            started = time.perf_counter()
            drill.inject(job, model, opt, step)
            x, y = next(data)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            sentinel.observe(loss=loss)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if step == save_step:
                _save(job, net, ckpt)
            elif step == save_step + 1:
                _verify_load(job, ckpt, step)
            job.step_times.append(time.perf_counter() - started)
    finally:
        sentinel.close()  # flushes alarms still on the device, also when the job fails
    job.event(
        "done", steps=steps, loss=float(loss.detach()), alarms=len(sentinel.alarms),
        skipped=dict(sentinel.skipped), median_step_s=statistics.median(job.step_times),
    )  # fmt: skip


def _init_from(job: Any, net: Any, path: Path) -> None:
    """Initialise from a colleague's checkpoint, loaded the careful way (scan, weights only)."""
    from trainguard.errors import IntegrityError
    from trainguard.ledger import load

    try:
        state = load(path, map_location="cpu")
    except IntegrityError as exc:
        _refused(job, exc, path, step=0)
        return
    with job.sentinel.sanctioned(f"initialise from {path}"):
        net.load_state_dict(state)


def _save(job: Any, net: Any, path: Path) -> None:
    """Rank 0 writes a checkpoint (recorded in the ledger as produced by this run)."""
    import torch.distributed as dist

    from trainguard.ledger import save

    if job.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        job.state["saved_digest"] = save(net.state_dict(), path)
    if dist.is_initialized():
        dist.barrier()  # the file is complete before any rank reads it back


def _verify_load(job: Any, path: Path, step: int) -> None:
    """Every rank reads the checkpoint back as an evaluation job would: scanned, and, with a
    ledger, refused unless this run (or a registered source) produced these exact bytes."""
    from trainguard.errors import IntegrityError
    from trainguard.ledger import digest_file, load

    try:
        load(path, map_location="cpu")
    except IntegrityError as exc:
        _refused(job, exc, path, step=step)
        return
    saved = job.state.get("saved_digest")
    if job.recorder is None and saved is not None:
        found = digest_file(path)[0]
        if found != saved:
            job.alarm(
                "ledger", "drill.checkpoint-changed", step,
                f"{path.name} changed on disk between save and load",
                evidence={"path": str(path), "saved_digest": saved, "loaded_digest": found},
            )  # fmt: skip


def _refused(job: Any, exc: Exception, path: Path, *, step: int) -> None:
    from trainguard.errors import UnsafeArtifactError
    from trainguard.ledger import digest_file

    if isinstance(exc, UnsafeArtifactError):
        report = exc.report
        findings = report.sorted_findings() if hasattr(report, "sorted_findings") else []
        top = findings[0] if findings else None
        job.alarm(
            "scan", top.rule if top else "scan.refused", step,
            f"trainguard.load refused {path.name}: {top.message if top else exc}",
            severity=top.severity.label if top else "critical",
            evidence={"path": str(path), "findings": [f.rule for f in findings[:5]],
                      "subject": top.subject if top else str(path)},
        )  # fmt: skip
        return
    digest = digest_file(path)[0] if path.is_file() else None
    job.alarm(
        "ledger", "ledger.unknown-provenance", step,
        f"trainguard.load refused {path.name}: no recorded run produced these bytes",
        severity="medium",
        evidence={"path": str(path), "loaded_digest": digest,
                  "saved_digest": job.state.get("saved_digest")},
        to_ledger=False,  # the strict recorder has appended its own alert
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
