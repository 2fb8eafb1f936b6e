"""DDP and FSDP2 on two gloo ranks (CPU): clean runs stay quiet, a tampered replica is named."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.sentinel._util import alarm_rows, make_optimizer, quiet, run_ranks, tiny_model, train

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _count_collectives() -> list[int]:
    """Count the sentinel's all_reduce calls without touching torch.distributed itself
    (replacing ``torch.distributed.all_reduce`` would, rightly, be a census alarm)."""
    import types

    import torch.distributed as dist

    from trainguard.sentinel import _flags

    calls = [0]

    def all_reduce(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return dist.all_reduce(*args, **kwargs)

    _flags.dist = types.SimpleNamespace(all_reduce=all_reduce, ReduceOp=dist.ReduceOp)  # type: ignore[assignment]
    return calls


def ddp_job(rank: int, world: int, steps: int, attack_rank: int, defaults: bool) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from trainguard.sentinel import protect

    model = DDP(tiny_model())
    opt = make_optimizer(model)
    opts = quiet(env=True, others=True, log_every=50) if defaults else quiet()
    sentinel = protect(model, opt, **opts)
    calls = _count_collectives()  # counted from here: the sentinel's collectives per step

    def attack(step: int, m: Any, o: Any) -> None:
        if step == 5 and rank == attack_rank:
            with torch.no_grad():
                m.module.fc1.weight[2, 3] += 0.25

    train(model, opt, sentinel, steps, attack=attack, rank=rank)
    alarms = sentinel.alarms
    sentinel.close()
    return {"alarms": alarm_rows(alarms), "all_reduce": calls[0], "skipped": dict(sentinel.skipped)}


def test_ddp_clean_run_is_quiet_with_one_collective_per_step() -> None:
    steps = 200
    results = run_ranks(ddp_job, steps, -1, True)
    for r in results:
        # Timing checks (stragglers) are judged by their own tests: on a shared, overloaded
        # CI machine a 200-step run is not a clean timing environment.
        assert [a for a in r["alarms"] if a["check"] != "stragglers"] == []
        assert "replicas" not in r["skipped"]
        assert r["all_reduce"] == steps  # one collective per step, whatever the checks


def test_ddp_one_replica_edited_names_the_rank() -> None:
    results = run_ranks(ddp_job, 8, 1, False)
    for rank, r in enumerate(results):
        weights = [a for a in r["alarms"] if a["check"] == "weights"]
        replicas = [a for a in r["alarms"] if a["check"] == "replicas"]
        assert weights and weights[0]["rank"] == 1 and weights[0]["step"] == 5
        assert replicas and all(a["rank"] == 1 and a["step"] == 5 for a in replicas), replicas
        if rank == 1:
            assert weights[0]["evidence"]["tensors"] == [
                "fc1.weight"
            ]  # the edited rank has the evidence
        else:
            assert weights[0]["reporter"] == 0  # rank 0 learnt of it through the step's vote


def ddp_grad_flip_job(rank: int, world: int) -> list[dict[str, Any]]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from trainguard.sentinel import protect

    model = DDP(tiny_model(width=64))
    opt = make_optimizer(model, "sgd")
    sentinel = protect(model, opt, **quiet())

    def attack(step: int, m: Any, o: Any) -> None:
        if step == 6:
            original = o.step

            def step_fn(*a: Any, **k: Any) -> Any:
                for p in m.parameters():
                    p.grad.neg_()
                return original(*a, **k)

            o.step = step_fn

    train(model, opt, sentinel, 9, attack=attack, rank=rank)
    alarms = sentinel.alarms
    sentinel.close()
    return alarm_rows(alarms)


def test_ddp_gradients_flipped_after_allreduce() -> None:
    for alarms in run_ranks(ddp_grad_flip_job):
        flips = [a for a in alarms if a["rule"] == "sentinel.grads-rewritten"]
        assert flips and flips[0]["step"] == 6


def fsdp_job(rank: int, world: int, steps: int, attack_rank: int) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from trainguard.sentinel import protect

    mesh = init_device_mesh("cpu", (world,))
    model = tiny_model(width=32)
    fully_shard(model.fc1, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = make_optimizer(model)
    sentinel = protect(model, opt, **quiet(env=True, log_every=25))

    def attack(step: int, m: Any, o: Any) -> None:
        if step == 5 and rank == attack_rank:
            with torch.no_grad():
                m.fc2.weight._local_tensor[0, 0] += 0.5  # this rank's shard only

    train(model, opt, sentinel, steps, attack=attack, rank=rank)
    alarms = sentinel.alarms
    sentinel.close()
    return {"alarms": alarm_rows(alarms), "skipped": dict(sentinel.skipped)}


def test_fsdp2_clean_and_tampered_shard() -> None:
    for r in run_ranks(fsdp_job, 100, -1):
        assert r["alarms"] == []
        assert r["skipped"]["replicas"] == "no replicated parameters (fully sharded)"
    for rank, r in enumerate(run_ranks(fsdp_job, 8, 1)):
        (alarm,) = [a for a in r["alarms"] if a["check"] == "weights"]
        assert alarm["rank"] == 1 and alarm["step"] == 5
        if rank == 1:
            assert alarm["evidence"]["tensors"] == ["fc2.weight"]
