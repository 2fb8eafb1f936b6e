"""Check 2, update verification: the optimizer applied the update it was supposed to.

Every step, ``k`` coordinates of every parameter tensor are drawn at fresh random
positions from a generator seeded from ``os.urandom`` (re-keyed every
``rekey_every`` steps; the generator lives in a closure, not on any object the
job sees). Before the step, the parameters, gradients and optimizer state at those
coordinates are gathered; after it, the parameters are gathered again and
compared with a float64 reference of the optimizer (:mod:`._optim_ref`: SGD with
momentum/dampening/Nesterov/weight decay/maximize, Adam and AdamW with amsgrad,
foreach and fused alike) run with the hyper-parameters in ``param_groups`` at the
pre-step hook. Per tensor::

    score = || relu(|p_after - p_ref| - rounding) || / || p_ref - p_before ||

A sign flip scores 2, a skipped update 1, an update scaled by ``c`` ``|c - 1|``;
rounding of a correct step scores ~1e-7. Above ``tolerance`` the alarm names the
tensor, the score and the apparent scale (-1 = flipped, 0 = skipped).

Three more signals share the check:

* learning rate behind the scheduler's back (slot 1): before the step, each
  group's ``lr`` must equal the scheduler's last learning rate (schedulers passed
  to ``protect`` or found attached to the optimizer);
* gradient window (slot 2): the sampled gradients are also captured when
  backward accumulates them (a post-accumulate-grad hook); a rewrite between
  backward and the step that flips signs is an alarm (exact sign agreement in one
  process; under DDP, where averaging follows the hook, a strongly negative
  correlation);
* unknown optimizers (slot 3): the update must on average point downhill: an
  exponential average of ``cos(update, gradient)`` above 0.3 is an alarm.

Limits: ``k`` coordinates per tensor catch any change that touches a large
fraction of a tensor's update within one step; an attack on a handful of
coordinates is found only with probability ``~ k * touched / numel`` per step.
Anyone running arbitrary code in the process can in principle read the sampling
generator (through ``gc`` and closures); the point is that an attack must then
target trainguard specifically, and the census watches the sentinel's hooks.

Options: ``k`` (256), ``tolerance`` (0.05), ``rekey_every`` (100),
``grad_window`` (True), ``check_lr`` (True).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Sequence
from typing import Any

import torch

from trainguard.findings import Rule, Severity
from trainguard.sentinel._fingerprint import fresh_key
from trainguard.sentinel.checks import _optim_ref as ref
from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip
from trainguard.sentinel.config import CheckConfig

__all__ = ["CHECK", "GRADS_REWRITTEN", "LR_TAMPERED", "UPDATE_MISMATCH", "UpdatesCheck"]

UPDATE_MISMATCH = Rule(
    "sentinel.update-mismatch",
    Severity.CRITICAL,
    "The optimizer step did not apply the expected update",
    "At secretly sampled coordinates the parameters after optimizer.step() differ from a "
    "reference implementation of the optimizer run on the same gradients, state and "
    "hyper-parameters: the update was flipped, scaled, skipped or redirected (a patched "
    "step, a hook, a replaced kernel).",
)
LR_TAMPERED = Rule(
    "sentinel.lr-tampered",
    Severity.HIGH,
    "A learning rate was changed behind the scheduler's back",
    "A param_group's lr differs from what its LR scheduler last set. Something other than "
    "the scheduler rewrote it between steps.",
)
GRADS_REWRITTEN = Rule(
    "sentinel.grads-rewritten",
    Severity.CRITICAL,
    "Gradients were rewritten between backward and the optimizer step",
    "The gradients the optimizer is about to use disagree in sign with the gradients "
    "backward produced at secretly sampled coordinates. Something flipped or replaced them "
    "after backward (a patched step, a hook, a thread).",
)
NOT_DESCENDING = Rule(
    "sentinel.update-ascent",
    Severity.HIGH,
    "Updates point uphill",
    "For an optimizer without a reference implementation, the update is checked to point "
    "against the gradient on average; it has pointed along it for several steps.",
)

_SLOT_RULES = (UPDATE_MISMATCH, LR_TAMPERED, GRADS_REWRITTEN, NOT_DESCENDING)


def _sampler(numels: torch.Tensor, k: int, rekey_every: int) -> Callable[[int], torch.Tensor]:
    """The secret coordinate sampler. The generator and its key exist only in this closure."""
    gen = torch.Generator(device=numels.device)
    gen.manual_seed(fresh_key())

    def draw(step: int) -> torch.Tensor:
        if step % rekey_every == 0:
            gen.manual_seed(fresh_key())  # a fresh key from the OS: host-side, no device sync
        raw = torch.randint(0, 2**62, (numels.numel(), k), generator=gen, device=numels.device)
        return raw % numels[:, None]

    return draw


def _schedulers_of(optimizer: torch.optim.Optimizer) -> list[Any]:
    """LR schedulers attached to ``optimizer`` (found once through the garbage collector)."""
    base = torch.optim.lr_scheduler.LRScheduler
    # type(o), not isinstance: some objects (deprecated module proxies) warn on __class__ access.
    return [
        o
        for o in gc.get_objects()
        if issubclass(type(o), base) and getattr(o, "optimizer", None) is optimizer
    ]


class UpdatesCheck(Check):
    name = "updates"
    rule = UPDATE_MISMATCH
    defaults = CheckConfig(
        options={
            "k": 256,
            "tolerance": 0.05,
            "rekey_every": 100,
            "grad_window": True,
            "check_lr": True,
        }
    )
    slots = 4
    decides_after_step = True

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        super().__init__(ctx, config)
        self.k = config.integer("k", minimum=1)
        self.tol = config.number("tolerance", minimum=1e-9)
        rekey = config.integer("rekey_every", minimum=1)
        self.check_lr = config.flag("check_lr")
        self.kind = ref.kind_of(ctx.optimizer)
        dev = ctx.device
        n = len(ctx.params)
        group_of = {
            id(p): gi for gi, g in enumerate(ctx.optimizer.param_groups) for p in g["params"]
        }
        self.row_group = torch.tensor([group_of[id(p)] for p in ctx.params], device=dev)
        local = ctx.local_tensors()
        numels = torch.tensor([max(t.numel(), 1) for t in local], dtype=torch.int64, device=dev)
        self.empty = [t.numel() == 0 for t in local]
        self.weight = (numels.clamp_max(self.k).to(torch.float64) / self.k) * torch.tensor(
            [not e for e in self.empty], dtype=torch.float64, device=dev
        )
        self.eps = torch.tensor(
            [[torch.finfo(t.dtype).eps] for t in local], dtype=torch.float64, device=dev
        )
        self._draw = _sampler(numels, self.k, rekey)
        self._new_coordinates(0)
        self.first = torch.full((n,), -1, dtype=torch.int64, device=dev)
        self.score = torch.zeros(n, dtype=torch.float64, device=dev)
        self.scale = torch.zeros(n, dtype=torch.float64, device=dev)
        self.gw_first = torch.full((n,), -1, dtype=torch.int64, device=dev)
        self.gw_value = torch.zeros(n, dtype=torch.float64, device=dev)
        self.ema = torch.zeros((), dtype=torch.float64, device=dev)
        self.ema_steps = 0
        self.pre: dict[str, Any] | None = None
        self._lr_reported: set[tuple[int, float]] = set()
        self._sched_key: object = None
        self._found: list[Any] = []
        self.exact_grads = ctx.world == 1
        # Gradients at the sampled coordinates as backward left them (None: not captured).
        self.captured: list[torch.Tensor | None] = [None] * n
        self._nan_row = torch.full((self.k,), float("nan"), device=dev)
        self._zero_row = torch.zeros(self.k, device=dev)
        self._handles = []
        if config.flag("grad_window") and not ctx.is_dtensor:
            for i, p in enumerate(ctx.params):
                h = p.register_post_accumulate_grad_hook(functools.partial(self._capture, i))  # type: ignore[no-untyped-call]
                self._handles.append(h)
                ctx.own_hooks.append(("post_accumulate_grad", p, h.id))

    def _new_coordinates(self, step: int) -> None:
        self.idx = self._draw(step)
        self.rows = self.idx.unbind(0)

    # -- gathering ----------------------------------------------------------------------------
    def _capture(self, i: int, p: torch.Tensor) -> None:
        if p.grad is not None:
            self.captured[i] = torch.take(p.grad.detach(), self.rows[i])

    def _gather(self, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        parts = [
            self._zero_row if t is None or self.empty[i] else torch.take(t, self.rows[i])
            for i, t in enumerate(tensors)
        ]
        return torch.stack(parts).to(torch.float64)  # stack promotes mixed dtypes exactly

    def _local(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        return getattr(t, "_local_tensor", t).detach()

    def _hp(self) -> torch.Tensor:
        rows = [ref.hyperparameters(self.kind, g) for g in self.ctx.optimizer.param_groups]
        if all(not isinstance(v, torch.Tensor) for r in rows for v in r):
            table = torch.tensor(rows, dtype=torch.float64, device=self.ctx.device)
        else:
            table = torch.stack(
                [
                    torch.stack(
                        [torch.as_tensor(v, dtype=torch.float64).to(self.ctx.device) for v in r]
                    )
                    for r in rows
                ]
            )
        return table[self.row_group]

    # -- phases -------------------------------------------------------------------------------
    def before_step(self, state: StepState) -> None:
        if self.check_lr:
            self._check_lr(state)
        params, opt = self.ctx.params, self.ctx.optimizer
        grads = [self._local(p.grad) for p in params]
        pre: dict[str, Any] = {
            "p": self._gather([self._local(p) for p in params]),
            "g": self._gather(grads),
            "has_grad": torch.tensor([g is not None for g in grads], device=self.ctx.device)[
                :, None
            ],
        }
        scale = state.step_kwargs.get("grad_scale")
        if isinstance(scale, torch.Tensor):
            pre["g"] = pre["g"] / scale.to(pre["g"].device, torch.float64)
        pre["found_inf"] = state.step_kwargs.get("found_inf")
        states = [opt.state.get(p) or {} for p in params]
        if self.kind == "adam":
            pre["m"] = self._gather([self._local(s.get("exp_avg")) for s in states])
            pre["v"] = self._gather([self._local(s.get("exp_avg_sq")) for s in states])
            if any(g.get("amsgrad") for g in opt.param_groups):
                pre["vmax"] = self._gather([self._local(s.get("max_exp_avg_sq")) for s in states])
            else:
                pre["vmax"] = torch.zeros_like(pre["v"])
            steps = [s.get("step", 0.0) for s in states]
            if all(not isinstance(s, torch.Tensor) or s.device.type == "cpu" for s in steps):
                # CPU scalars: reading them is not a device sync.
                host = [float(s) for s in steps]
                pre["step"] = torch.tensor(host, dtype=torch.float64, device=self.ctx.device)[
                    :, None
                ]
            else:
                pre["step"] = torch.stack(
                    [torch.as_tensor(s).to(self.ctx.device, torch.float64) for s in steps]
                )[:, None]
        elif self.kind == "sgd":
            bufs = [self._local(s.get("momentum_buffer")) for s in states]
            pre["buf"] = self._gather(bufs)
            pre["has_buf"] = torch.tensor([b is not None for b in bufs], device=self.ctx.device)[
                :, None
            ]
        if self.kind != "unknown":
            pre["hp"] = self._hp()
        else:
            maximize = [bool(g.get("maximize", False)) for g in opt.param_groups]
            pre["maximize"] = any(maximize)
        self.pre = pre
        if self._handles:
            self._grad_window(state, pre["g"])

    def _grad_window(self, state: StepState, g: torch.Tensor) -> None:
        bwd = torch.stack(
            [self._nan_row if c is None else c.to(self._nan_row.dtype) for c in self.captured]
        ).to(torch.float64)
        valid = torch.isfinite(bwd) & (bwd != 0) & (g != 0)
        agree = torch.sign(bwd) * torch.sign(g) * valid
        count = valid.sum(dim=1).clamp_min(1)
        if self.exact_grads:
            disagree = (agree < 0).sum(dim=1) / count  # fraction of flipped signs per tensor
            bad = disagree > 0.25
            value = disagree
        else:
            # Averaging across ranks blurs a single tensor, so judge all of them together, each
            # weighted by how many distinct coordinates it has (a 4-element bias sampled 256
            # times is 4 observations, not 256).
            per_row = agree.sum(dim=1) / count
            corr = (per_row * self.weight).sum() / self.weight.sum()
            bad = (corr < -0.3) & (valid.sum(dim=1) > 0)
            value = corr.expand_as(count).to(torch.float64)
        fresh = bad & (self.gw_first < 0)
        self.gw_first = torch.where(
            fresh, torch.full_like(self.gw_first, state.step), self.gw_first
        )
        self.gw_value = torch.where(fresh, value.to(torch.float64), self.gw_value)
        state.trip(self, bad.any(), slot=2)

    def after_step(self, state: StepState) -> None:
        pre, self.pre = self.pre, None
        if pre is not None:
            after = self._gather([self._local(p) for p in self.ctx.params])
            if self.kind == "unknown":
                self._descent(state, pre, after)
            else:
                self._verify(state, pre, after)
        self.captured = [None] * len(self.captured)
        self._new_coordinates(state.step + 1)

    def _verify(self, state: StepState, pre: dict[str, Any], after: torch.Tensor) -> None:
        p0, hp = pre["p"], pre["hp"]
        if self.kind == "adam":
            expected = ref.adam(p0, pre["g"], pre["m"], pre["v"], pre["vmax"], pre["step"], hp)
        else:
            expected = ref.sgd(p0, pre["g"], pre["buf"], pre["has_buf"], hp)
        expected = torch.where(pre["has_grad"], expected, p0)
        found_inf = pre["found_inf"]
        if isinstance(found_inf, torch.Tensor):
            expected = torch.where(found_inf.to(p0.device).reshape(()) > 0, p0, expected)
        d_ref, d_act = expected - p0, after - p0
        rounding = 4 * self.eps * torch.maximum(p0.abs(), expected.abs()) + 1e-6 * d_ref.abs()
        excess = ((after - expected).abs() - rounding).clamp_min(0)
        ref_norm = torch.linalg.vector_norm(d_ref, dim=1)
        score = torch.linalg.vector_norm(excess, dim=1) / ref_norm.clamp_min(1e-300)
        score = torch.where(torch.isnan(score), torch.full_like(score, float("inf")), score)
        scale = (d_act * d_ref).sum(dim=1) / (ref_norm**2).clamp_min(1e-300)
        bad = score > self.tol
        fresh = bad & (self.first < 0)
        self.first = torch.where(fresh, torch.full_like(self.first, state.step), self.first)
        self.score = torch.where(fresh, score, self.score)
        self.scale = torch.where(fresh, scale, self.scale)
        state.trip(self, bad.any(), slot=0)

    def _descent(self, state: StepState, pre: dict[str, Any], after: torch.Tensor) -> None:
        d = (after - pre["p"]).reshape(-1)
        g = pre["g"].reshape(-1) * (-1.0 if pre["maximize"] else 1.0)
        cos = (d * g).sum() / (torch.linalg.vector_norm(d) * torch.linalg.vector_norm(g)).clamp_min(
            1e-300
        )
        self.ema = 0.8 * self.ema + 0.2 * cos
        self.ema_steps += 1
        if self.ema_steps >= 8:
            state.trip(self, self.ema > 0.3, slot=3)

    def _check_lr(self, state: StepState) -> None:
        scheds = self.ctx.schedulers or self._discovered()
        if not scheds:
            return
        for gi, group in enumerate(self.ctx.optimizer.param_groups):
            lr = group["lr"]
            if isinstance(lr, torch.Tensor):
                if lr.device.type != "cpu":
                    continue  # reading it would sync; the update check still sees its effect
                lr = float(lr)
            wanted = [float(s._last_lr[gi]) for s in scheds if len(getattr(s, "_last_lr", ())) > gi]
            if wanted and not any(abs(lr - w) <= 1e-12 * max(abs(w), 1e-30) for w in wanted):
                key = (gi, float(lr))
                if key not in self._lr_reported:
                    self._lr_reported.add(key)
                    state.trip_host(
                        self, f"param_groups[{gi}]['lr'] is {lr:g} but the scheduler set {wanted[0]:g}", slot=1,
                        group=gi, lr=lr, scheduler_lr=wanted, schedulers=[type(s).__name__ for s in scheds],
                    )  # fmt: skip

    def _discovered(self) -> list[Any]:
        wrapper = self.ctx.optimizer.__dict__.get("step")
        if wrapper is not self._sched_key:
            self._sched_key = wrapper
            # A scheduler wraps optimizer.step when it is created: look for it once then.
            self._found = (
                _schedulers_of(self.ctx.optimizer)
                if getattr(wrapper, "_wrapped_by_lr_sched", False)
                else []
            )
        return self._found

    # -- read-back ------------------------------------------------------------------------------
    def describe(self, trip: Trip) -> Sequence[Detection]:
        if trip.slot == 1:
            return [
                Detection(e.message, dict(e.evidence), step=e.step, rule=LR_TAMPERED)
                for e in trip.events
            ]
        if trip.slot == 3:
            ema = float(self.ema)  # host sync: read-back
            return [
                Detection(
                    f"updates point along the gradient (mean cosine {ema:.2f})",
                    {"cosine_ema": ema},
                    rule=NOT_DESCENDING,
                )
            ]
        if trip.slot == 2:
            first, value = self.gw_first.tolist(), self.gw_value.tolist()  # host sync: read-back
            self.gw_first.fill_(-1)
            hit = [i for i, s in enumerate(first) if s >= 0]
            what = "flipped-sign fraction" if self.exact_grads else "sign correlation"
            names = [self.ctx.names[i] for i in hit]
            return [
                Detection(
                    f"gradients of {len(hit)} tensor(s) changed between backward and optimizer.step(): "
                    + ", ".join(names[:5]),
                    {"tensors": names, what.replace(" ", "_"): {self.ctx.names[i]: value[i] for i in hit}},
                    step=min(first[i] for i in hit),
                    rule=GRADS_REWRITTEN,
                )
            ] if hit else []  # fmt: skip
        first, score, scale = (
            self.first.tolist(),
            self.score.tolist(),
            self.scale.tolist(),
        )  # host sync: read-back
        self.first.fill_(-1)
        hit = [i for i, s in enumerate(first) if s >= 0]
        if not hit:
            return []
        names = [self.ctx.names[i] for i in hit]
        scales = [scale[i] for i in hit]
        verdict = _verdict(sorted(scales)[len(scales) // 2])
        return [
            Detection(
                f"update of {len(hit)} tensor(s) differs from the reference {self.kind} step ({verdict}): "
                + ", ".join(names[:5]),
                {
                    "tensors": names,
                    "optimizer": type(self.ctx.optimizer).__name__,
                    "scores": {self.ctx.names[i]: score[i] for i in hit[:50]},
                    "apparent_scale": {self.ctx.names[i]: scale[i] for i in hit[:50]},
                    "verdict": verdict,
                    "coordinates_per_tensor": self.k,
                },
                step=min(first[i] for i in hit),
            )
        ]

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _verdict(scale: float) -> str:
    if abs(scale + 1) < 0.1:
        return "sign flipped"
    if abs(scale) < 0.1:
        return "skipped"
    if scale < 0:
        return f"reversed and scaled by {scale:.3g}"
    return f"scaled by {scale:.3g}"


CHECK = UpdatesCheck
