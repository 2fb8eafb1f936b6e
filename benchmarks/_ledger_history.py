"""A synthetic year of a 10,000-GPU cluster, as ledger records (deterministic per seed).

At scale 1: about 200,000 runs and 2,000,000 artifacts over 365 days, on 1,250
hosts of 8 GPUs, by 400 users. Run mix (share of runs):

* pretraining, 0.5%: 256-4096 GPUs, 50-600 h, resumed in segments (each segment
  loads the previous segment's last checkpoint: long chains), a checkpoint
  every few hours;
* fine-tuning, 30%: 8-128 GPUs, 2-60 h, starting from a popular checkpoint
  (Zipf over recent pretraining and fine-tuning outputs: large fan-out), 10% of
  them continuing another fine-tune (chains);
* evaluation, 45%: 1-8 GPUs, 0.2-3 h, loading one recent checkpoint, writing
  one result;
* other (sweeps, debugging), 24.5%: 1-32 GPUs, 1-24 h, a few checkpoints.

Every run reads a dataset manifest and runs on the environment baseline of its
week. Every host gets a weekly preflight. The incident is planted: user
``mallory`` swaps a popular checkpoint for a sabotaged one on day 200, which
runs then load for two months, and host ``gpu-0421`` runs an edited torch from
day 150 until a clean preflight two weeks later. :class:`History` keeps the
indicators the benchmark asks about.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from trainguard.ledger.records import Artifact, Edge, PreflightResult, Record, Run

DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class History:
    """The indicators planted in (or picked from) the generated history."""

    sabotaged_checkpoint: str = ""
    popular_checkpoint: str = ""
    env_baseline: str = ""
    tampered_file: str = ""
    insider: str = "mallory"
    busy_host: str = ""
    runs: int = 0
    artifacts: int = 0
    entries: int = 0
    use_counts: dict[str, int] = field(default_factory=dict)


def generate(
    scale: float = 1.0, seed: int = 20240501, history: History | None = None
) -> Iterator[Record]:
    """Yield the records of the synthetic year, in append order."""
    h = history if history is not None else History()
    rng = random.Random(seed)
    n_runs = max(200, int(200_000 * scale))
    hosts = [f"gpu-{i:04d}" for i in range(max(16, int(1250 * min(1.0, scale * 4))))]
    users = [f"user{i:03d}" for i in range(400)] + ["mallory"]
    user_weights = [1 / (i + 1) ** 0.8 for i in range(400)] + [0.02]
    cum_users = list(_accumulate(user_weights))
    envs = [_digest(f"env-baseline-week-{w}") for w in range(53)]
    datasets = [_digest(f"dataset-manifest-{i}") for i in range(max(50, int(2000 * scale)))]
    tampered = _digest("site-packages/torch/nn/functional.py (edited)")
    h.tampered_file, h.env_baseline = tampered, envs[30]
    h.busy_host = hosts[421 % len(hosts)]
    starts = sorted(T0 + int(rng.random() * 365 * DAY) for _ in range(n_runs))
    pending: list[
        tuple[int, str, str]
    ] = []  # (available at, digest, family) for produced checkpoints
    pool: list[str] = []  # available checkpoints, newest last
    featured: list[str] = []  # base checkpoints most runs start from, newest last
    pretrain_last: dict[int, str] = {}
    next_preflight = T0
    sabotage_at, swap_until = T0 + 200 * DAY, T0 + 260 * DAY
    tamper_at, tamper_until = T0 + 150 * DAY, T0 + 164 * DAY
    ckpt_id = 0

    for w, env in enumerate(envs):
        yield Artifact(env, "env_baseline", T0 + w * 7 * DAY, 4096, f"env-week-{w}.json")
    for i, d in enumerate(datasets):
        yield Artifact(d, "dataset_manifest", T0, 1 << 20, f"dataset-{i}.json")
    sabotaged = ""
    for r, start in enumerate(starts):
        while next_preflight <= start:  # weekly preflight of every host (spread over the week)
            day = (next_preflight - T0) // DAY
            for i, host in enumerate(hosts):
                if i % 7 != day % 7:
                    continue
                bad = host == h.busy_host and tamper_at <= next_preflight < tamper_until
                yield PreflightResult(
                    host,
                    next_preflight,
                    not bad,
                    1 if bad else 0,
                    env_baseline=envs[min(day // 7, 52)],
                    files=(("site-packages/torch/nn/functional.py", tampered),) if bad else (),
                )
            next_preflight += DAY
        while pending and pending[0][0] <= start:
            _, digest, family_tag = heapq.heappop(pending)
            pool.append(digest)
            if family_tag == "featured":
                featured.append(digest)
        run_id = f"run-{r:07d}"
        u = rng.random()
        user = users[bisect.bisect(cum_users, rng.random() * cum_users[-1])]
        if not sabotaged and start >= sabotage_at and featured:
            user = "mallory"  # the planted incident: the first run on day 200
        used: list[tuple[str, str]] = [(rng.choice(datasets), "dataset_manifest")]
        if u < 0.005:
            family = rng.randrange(max(1, int(60 * scale) + 1))
            gpus = rng.choice((256, 512, 1024, 2048, 4096))
            hours = rng.uniform(50, 600) * min(1.0, 0.3 + scale)
            interval = rng.uniform(4, 12)
            if family in pretrain_last:
                used.append((pretrain_last[family], "checkpoint"))
        elif u < 0.305:
            gpus, hours, interval = (
                rng.choice((8, 16, 32, 64, 128)),
                rng.uniform(2, 60),
                rng.uniform(0.5, 2),
            )
            base = _pick(rng, pool, featured, 0.6, 200)
            if base:
                used.append((base, "checkpoint"))
            family = -1
        elif u < 0.755:
            gpus, hours, interval = rng.choice((1, 2, 4, 8)), rng.uniform(0.2, 3), 0.0
            base = _pick(rng, pool, featured, 0.2, 50)
            if base:
                used.append((base, "checkpoint"))
            family = -2
        else:
            gpus, hours, interval = (
                rng.choice((1, 2, 4, 8, 16, 32)),
                rng.uniform(1, 24),
                rng.uniform(1, 4),
            )
            family = -3
        if user == "mallory" and start >= sabotage_at and not sabotaged and featured:
            # The insider loads the newest featured base checkpoint and writes a
            # sabotaged copy, which then stands in for it in the shared pool.
            popular = featured[-1]
            used = [(popular, "checkpoint")]
            sabotaged = _digest(f"sabotaged-{r}")
            h.sabotaged_checkpoint, h.popular_checkpoint = sabotaged, popular
            featured[-1] = sabotaged
            interval, hours, gpus = 0.0, 0.5, 1
        if sabotaged and start >= swap_until and h.sabotaged_checkpoint in featured:
            featured[featured.index(sabotaged)] = h.popular_checkpoint  # noticed and reverted
        n_hosts = max(1, math.ceil(gpus / 8))
        first = rng.randrange(len(hosts))
        run_hosts = tuple(hosts[(first + k) % len(hosts)] for k in range(min(n_hosts, len(hosts))))
        if interval == 0.0 and family == -2 and rng.random() < 0.05:
            run_hosts = (h.busy_host,)
        end = start + int(hours * 3600)
        week = min((start - T0) // (7 * DAY), 52)
        env = envs[week if rng.random() < 0.9 else max(0, week - 1)]
        yield Run(
            run_id,
            user=user,
            hosts=run_hosts,
            world_size=gpus,
            accelerator_type="H100" if r % 5 else "A100",
            accelerator_count=gpus,
            started_at=start,
            ended_at=end,
            job=f"family-{family}" if family >= 0 else None,
            command=f"torchrun --nproc-per-node={min(gpus, 8)} train.py --config cfg-{r % 997}.yaml",
            env_baseline=env,
            config_hash=_digest(f"cfg-{r % 997}"),
            seeds={"torch": r},
        )
        for digest, kind in used:
            h.use_counts[digest] = h.use_counts.get(digest, 0) + 1
            yield Edge(run_id, "used", digest, kind, start)
        if (
            user == "mallory"
            and sabotaged
            and h.sabotaged_checkpoint == sabotaged
            and used[0][0] == h.popular_checkpoint
            and not any(e[0] == sabotaged for e in pending)
        ):
            yield Edge(
                run_id, "produced", sabotaged, "checkpoint", start + 600, 1 << 30, "ckpt/final.pt"
            )
            h.artifacts += 1
            h.runs += 1
            continue
        n_ckpts = 1 if interval == 0.0 else max(1, min(200, int(hours / interval)))
        for k in range(n_ckpts):
            ckpt_id += 1
            digest = _digest(f"ckpt-{ckpt_id}")
            at = start + int((k + 1) * (end - start) / n_ckpts)
            yield Edge(
                run_id,
                "produced",
                digest,
                "eval_result" if interval == 0.0 else "checkpoint",
                at,
                (1 << 30) if interval else 4096,
                f"{run_id}/step-{k + 1}.pt",
            )
            if interval and (k == n_ckpts - 1 or rng.random() < 0.05):
                final = k == n_ckpts - 1
                tag = "featured" if final and (family >= 0 or rng.random() < 0.03) else "pool"
                heapq.heappush(pending, (at, digest, tag))
        if family >= 0 and n_ckpts:
            pretrain_last[family] = _digest(f"ckpt-{ckpt_id}")
        h.runs += 1
        h.artifacts += n_ckpts


def _accumulate(weights: list[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _pick(
    rng: random.Random, pool: list[str], featured: list[str], p_featured: float, recency: float
) -> str | None:
    """A checkpoint: a featured base (Zipf over recency: a few get most uses) or a recent one."""
    if featured and rng.random() < p_featured:
        rank = min(len(featured), int(rng.paretovariate(1.1))) - 1
        return featured[len(featured) - 1 - rank]
    if not pool:
        return None
    return pool[len(pool) - 1 - min(len(pool) - 1, int(rng.expovariate(1 / recency)))]
