"""Overhead of the trainguard sentinel on a small GPT trained on CPU (1 and 2 gloo ranks).

Every mode trains the same model for blocks of ``--steps`` optimizer steps; modes are
interleaved block by block (``--reps`` rounds) so that drifting machine load hits
all of them alike, and the median step time of each mode is compared:

* ``off``: no sentinel;
* ``all``: every check at its default settings (what ``protect(model, opt)`` runs);
* ``core``: the sentinel with every check disabled (hooks, flag board, the collective);
* one mode per check: that check alone (its cost is its time minus ``core``'s).

Set-up (``protect()``, including the environment census it runs at step 0) happens
before each timed block, after ``--warmup`` untimed steps. Run it with
``make bench-sentinel`` or ``python benchmarks/sentinel_overhead.py --ranks 1 2``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

# The drills' model (moved there from this file) and the text shipped with the package.
from trainguard.drill._model import GPT, batches, corpus

PHASES = ("on_forward", "before_step", "after_reduce", "after_step", "_capture")


def instrument(sentinel: Any, costs: dict[str, float]) -> None:
    """Time every check's phases in this thread (CPU time): a direct attribution of cost,
    far less noisy than differences between runs. Also the flag board's collective."""

    def wrap(obj: Any, name: str, label: str) -> None:
        inner = getattr(obj, name)

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.thread_time()
            try:
                return inner(*a, **k)
            finally:
                costs[label] = costs.get(label, 0.0) + time.thread_time() - t0

        setattr(obj, name, timed)

    for check in sentinel.checks:
        for phase in PHASES:
            if phase in type(check).__dict__:
                wrap(check, phase, check.name)
    if any(c.name == "updates" for c in sentinel.checks):
        # The gradient-capture hooks hold the bound method: re-point them through the wrapper.
        updates = next(c for c in sentinel.checks if c.name == "updates")
        old = {h.id for h in updates._handles}
        for handle in updates._handles:
            handle.remove()
        sentinel.ctx.own_hooks[:] = [h for h in sentinel.ctx.own_hooks if h[2] not in old]
        updates._handles = [
            p.register_post_accumulate_grad_hook(lambda p, i=i: updates._capture(i, p))
            for i, p in enumerate(sentinel.ctx.params)
        ]
        sentinel.ctx.own_hooks.extend(
            ("post_accumulate_grad", p, h.id)
            for p, h in zip(sentinel.ctx.params, updates._handles, strict=True)
        )
    wrap(sentinel.board, "reduce", "(collective)")


def modes(check_names: list[str], per_check: bool) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {"off": None, "all": {}}
    out["core"] = {"checks": {n: False for n in check_names}}
    for name in check_names if per_check else []:
        out[name] = {"checks": {n: n == name for n in check_names}}
    return out


def run(rank: int, world: int, args: argparse.Namespace, out: Any) -> None:
    torch.set_num_threads(args.threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    import trainguard
    from trainguard.sentinel.checks import available_checks

    torch.manual_seed(0)
    model: nn.Module = GPT(args.layers, args.d, args.heads, args.ctx)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    data = batches(corpus(), args.batch, args.ctx, seed=rank)
    names = [c.name for c in available_checks()[0]]
    plan = modes(names, args.per_check)
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in plan}
    blocks: dict[str, list[float]] = {m: [] for m in plan}  # per round: median CPU time
    costs: dict[str, float] = {}
    attributed_steps = 0
    alarms: dict[str, int] = {m: 0 for m in plan}
    spool = tempfile.mkdtemp(prefix="tg-bench-")

    def steps(n: int, sentinel: Any) -> list[tuple[float, float]]:
        out_times = []
        for _ in range(n):
            x, y = next(data)
            t0, c0 = time.perf_counter(), time.process_time()
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            if sentinel is not None:
                sentinel.observe(loss=loss)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            out_times.append((time.perf_counter() - t0, time.process_time() - c0))
        return out_times

    steps(args.warmup, None)
    for _ in range(args.reps):
        for mode, options in plan.items():
            sentinel = None
            if options is not None:
                sentinel = trainguard.protect(model, opt, spool_dir=spool, console=False, **options)
            steps(args.warmup, sentinel)  # untimed: includes step 0's environment census
            block = steps(args.steps, sentinel)
            times[mode].extend(block)
            blocks[mode].append(statistics.median(t[1] for t in block))
            if mode == "all":
                instrument(sentinel, costs)  # a separate, attributed block (not in the medians)
                steps(args.steps, sentinel)
                attributed_steps += args.steps
            if sentinel is not None:
                alarms[mode] += len(sentinel.alarms)
                sentinel.close()
    n_params = sum(p.numel() for p in model.parameters())
    wall = {m: statistics.median(t[0] for t in v) for m, v in times.items()}
    cpu = {m: statistics.median(t[1] for t in v) for m, v in times.items()}
    attribution = {k: v / max(attributed_steps, 1) for k, v in costs.items()}
    # Rounds pair each mode's block with the "off" block of the same round: a paired ratio
    # per round cancels load that drifts over minutes, which medians over all rounds do not.
    paired = [a / o for a, o in zip(blocks["all"], blocks["off"], strict=True)]
    attribution["(paired ratio)"] = statistics.median(paired)
    out.put((rank, wall, cpu, alarms, n_params, names, attribution))
    if world > 1:
        dist.destroy_process_group()


def report(
    world: int,
    wall: dict[str, float],
    cpu: dict[str, float],
    alarms: dict[str, int],
    n_params: int,
    names: list[str],
    attribution: dict[str, float],
    args: argparse.Namespace,
) -> None:
    tokens = args.batch * args.ctx
    print(
        f"\n== {world} rank(s), gloo/CPU, {n_params / 1e6:.2f} M parameters, {tokens} tokens/step/rank, "
        f"{args.threads} thread(s)/rank, median of {args.reps} x {args.steps} steps per mode =="
    )
    # CPU time of the rank's process is what the sentinel adds; wall time also carries the
    # load of everything else on the machine (and, with 2 ranks, the wait for the peer).
    for label, med in (("process CPU time", cpu), ("wall time", wall)):
        off = med["off"]
        ratio = med["all"] / off
        print(f"-- {label}")
        print(f"   no sentinel:         {off * 1e3:8.2f} ms/step")
        print(
            f"   all checks, default: {med['all'] * 1e3:8.2f} ms/step   ratio {ratio:.4f}  "
            f"overhead {100 * (ratio - 1):+.2f}%  (target <= 3% on CPU)"
        )
        core = med["core"]
        print(
            f"   core only:           {core * 1e3:8.2f} ms/step   overhead {100 * (core / off - 1):+.2f}%"
        )
        if args.per_check:
            print("   per check (its time alone minus core):")
            for name in names:
                cost = med[name] - core
                print(f"     {name:<12} {cost * 1e3:+8.3f} ms/step  {100 * cost / off:+6.2f}%")
    paired = attribution.pop("(paired ratio)")
    print(
        f"-- process CPU time, all checks vs none, paired per round (median of {args.reps}): "
        f"ratio {paired:.4f}  overhead {100 * (paired - 1):+.2f}%"
    )
    print("-- CPU time inside each check's phases, all checks on (attributed directly):")
    total = 0.0
    for name, cost in sorted(attribution.items(), key=lambda kv: -kv[1]):
        total += cost
        print(f"     {name:<12} {cost * 1e3:8.3f} ms/step  {100 * cost / cpu['off']:6.2f}%")
    print(f"     {'(sum)':<12} {total * 1e3:8.3f} ms/step  {100 * total / cpu['off']:6.2f}%")
    noisy = {m: n for m, n in alarms.items() if n}
    print("alarms raised during the benchmark:", noisy or "none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=128)
    # 32 x 128 = 4,096 tokens per step and rank: still 4x fewer than nanoGPT's smallest
    # (character-level) configuration trains with. The sentinel's cost is per parameter
    # and per step, so fewer tokens per step raise the ratio: --batch 8 shows it.
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per mode per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-per-check", dest="per_check", action="store_false", help="only off/all/core (faster)"
    )
    args = parser.parse_args()
    for world in args.ranks:
        args.port = 29500 + (os.getpid() % 1000)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=run, args=(r, world, args, out)) for r in range(world)]
        for p in procs:
            p.start()
        results = sorted(out.get(timeout=7200) for _ in procs)
        for p in procs:
            p.join()
        _, wall, cpu, alarms, n_params, names, attribution = results[0]
        report(world, wall, cpu, alarms, n_params, names, attribution, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
