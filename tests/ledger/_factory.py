"""Small record builders for ledger tests."""

from __future__ import annotations

import hashlib

from trainguard.ledger.records import Edge, Run, RunEnd

T0 = 1_714_000_000


def digest(name: str) -> str:
    """A deterministic content digest standing for the file ``name``."""
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def run(
    run_id: str,
    *,
    user: str = "ana",
    hosts: tuple[str, ...] = ("gpu-001",),
    gpus: int = 8,
    start: int = T0,
    hours: float | None = 1.0,
    env: str | None = None,
    accel: str = "H100",
) -> Run:
    return Run(
        run_id,
        user=user,
        hosts=hosts,
        world_size=gpus,
        accelerator_type=accel,
        accelerator_count=gpus,
        started_at=start,
        ended_at=None if hours is None else start + int(hours * 3600),
        env_baseline=env,
        command=f"torchrun train.py --run {run_id}",
    )


def used(run_id: str, name: str, *, at: int = T0, kind: str = "checkpoint") -> Edge:
    return Edge(run_id, "used", digest(name), kind, at, name=name)


def produced(run_id: str, name: str, *, at: int = T0, kind: str = "checkpoint") -> Edge:
    return Edge(run_id, "produced", digest(name), kind, at, size=1000, name=name)


def end(run_id: str, at: int, status: str = "completed") -> RunEnd:
    return RunEnd(run_id, at, status)
