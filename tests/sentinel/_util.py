"""Helpers for sentinel tests: a tiny model, a training loop with an attack hook, a 2-rank runner.

Everything is made in code; nothing is loaded from disk or a hub.
"""

from __future__ import annotations

import os
import socket
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import trainguard
from trainguard.sentinel import Alarm, Sentinel

Attack = Callable[[int, torch.nn.Module, torch.optim.Optimizer], None]


class TinyNet(torch.nn.Module):
    """Two linear layers with dropout (so the RNG is used every step)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, width)
        self.drop = torch.nn.Dropout(0.1)
        self.fc2 = torch.nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def tiny_model(seed: int = 0, width: int = 16) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(width)


def batch(step: int, rank: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + step)
    x = torch.randn(size, 8, generator=g)
    y = torch.randint(0, 4, (size,), generator=g)
    return x, y


def make_optimizer(model: torch.nn.Module, name: str = "adamw", **kw: Any) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), **({"lr": 0.05, "momentum": 0.9} | kw))
    if name == "adam":
        return torch.optim.Adam(model.parameters(), **({"lr": 1e-3} | kw))
    return torch.optim.AdamW(model.parameters(), **({"lr": 1e-3, "weight_decay": 0.01} | kw))


#: Checks tested in their own modules (test_stragglers, test_audit, test_scale).
OTHER_CHECKS = ("stragglers", "audit", "scale")


def quiet(*, env: bool = False, others: bool = False, **kw: Any) -> dict[str, Any]:
    """protect() options for tests: a private spool, no console, read back every step.

    The environment's deep census (about a second per sentinel) is off unless ``env``,
    and the checks with test modules of their own are off unless ``others``; the tests
    of clean runs with default settings turn both on.
    """
    opts: dict[str, Any] = {
        "spool_dir": tempfile.mkdtemp(prefix="tg-spool-"),
        "console": False,
        "log_every": 1,
    }
    checks = dict(kw.pop("checks", {}))
    if not others:
        for name in OTHER_CHECKS:
            checks.setdefault(name, False)
    if not env:
        census = checks.get("census", {})
        census = {"action": census} if isinstance(census, str) else dict(census)
        checks["census"] = {"env_every": 0, **census}
    opts["checks"] = checks
    opts.update(kw)
    return opts


def train(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sentinel: Sentinel,
    steps: int,
    *,
    attack: Attack | None = None,
    rank: int = 0,
    scheduler: Any = None,
    start: int = 0,
) -> list[torch.Tensor]:
    """A plain loop; ``attack(step, model, opt)`` runs after ``step`` steps completed.

    Returns each step's (detached) loss."""
    losses = []
    for step in range(start, start + steps):
        if attack is not None:
            attack(step, model, opt)
        x, y = batch(step, rank)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        sentinel.observe(loss=loss)
        losses.append(loss.detach())
        loss.backward()
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()
    return losses


def by_check(alarms: list[Alarm]) -> dict[str, list[Alarm]]:
    out: dict[str, list[Alarm]] = {}
    for a in alarms:
        out.setdefault(a.check, []).append(a)
    return out


# -- multi-process ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...], out: Any
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out.put((rank, fn(rank, world, *args), None))
    except BaseException:
        out.put((rank, None, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def run_ranks(
    fn: Callable[..., Any], *args: Any, world: int = 2, timeout: float = 240.0
) -> list[Any]:
    """Run ``fn(rank, world, *args)`` on ``world`` gloo ranks (127.0.0.1); return results by rank.

    ``fn`` must be a module-level function (it is pickled to spawned processes) and
    its return value plain data.
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, world, port, fn, args, out)) for r in range(world)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors = []
    for _ in range(world):
        rank, value, err = out.get(timeout=timeout)
        results[rank] = value
        if err:
            errors.append(f"rank {rank}:\n{err}")
    for p in procs:
        p.join(timeout=30)
    if errors:
        raise AssertionError("\n".join(errors))
    return [results[r] for r in range(world)]


def alarm_rows(alarms: list[Alarm]) -> list[dict[str, Any]]:
    """Alarms as plain dicts (to cross process boundaries)."""
    return [a.to_dict() for a in alarms]


__all__ = [
    "TinyNet",
    "alarm_rows",
    "batch",
    "by_check",
    "free_port",
    "make_optimizer",
    "quiet",
    "run_ranks",
    "tiny_model",
    "train",
    "trainguard",
]
