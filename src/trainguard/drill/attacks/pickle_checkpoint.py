"""A colleague's job initialises from a checkpoint the insider poisoned.

The checkpoint holds every tensor of a real model of the drill's shape plus a
hidden entry whose unpickling runs ``builtins.exec`` (the harmless payload only
creates a marker file). The job loads it the careful way, ``trainguard.load``
(scan the bytes, then ``torch.load(weights_only=True)`` of the same bytes), so
the scan refuses it and nothing runs. ``judge`` then proves the file is live:
a naive ``torch.load(weights_only=False)`` in a throwaway interpreter runs the
payload and creates the marker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import DrillContext, Outcome

NAME = "pickle-checkpoint"
TITLE = "malicious pickle checkpoint loaded by a colleague's job"
INCIDENT = (
    "malicious pickle checkpoints loaded through PyTorch / Hugging Face loaders ran the "
    "insider's code in colleagues' jobs"
)
EXPECTED_CHECKS = ("scan",)
ATTACK_STEP = 0
BOUND = 0
PAYLOAD = True


def prepare(ctx: DrillContext) -> None:
    import torch

    from trainguard.drill._model import GPT
    from trainguard.drill._train import ModelConfig as cfg
    from trainguard.drill.payloads import write_poisoned_checkpoint

    ctx.marker = ctx.workdir / "marker-pickle-payload-ran"
    path = ctx.workdir / "shared" / "warm-start-step500.pt"
    path.parent.mkdir(parents=True)
    torch.manual_seed(1)
    state = GPT(cfg.layers, cfg.d, cfg.heads, cfg.ctx).state_dict()
    write_poisoned_checkpoint(state, path, marker=ctx.marker)
    ctx.job_args += ["--init-from", str(path)]
    ctx.facts["checkpoint"] = str(path)


def judge(ctx: DrillContext, outcome: Outcome) -> None:
    from trainguard.drill.payloads import loads_in_subprocess

    assert ctx.marker is not None
    path = ctx.facts["checkpoint"]
    # After the job (whose marker state the runner has recorded): the same file, loaded
    # the old way in a throwaway interpreter, does run its payload.
    loaded = loads_in_subprocess(path, weights_only=False)
    outcome.evidence["naive_torch_load_runs_payload"] = loaded and ctx.marker.exists()
