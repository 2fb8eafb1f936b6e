"""Check 4, runtime census: who else is hooked into this training job?

At ``protect()`` the census records a baseline; afterwards it reports anything new:

* every step (cheap, O(number of registries)): PyTorch's global module hooks
  (``torch.nn.modules.module._global_*_hooks``), global optimizer hooks
  (``torch.optim.optimizer._global_optimizer_{pre,post}_hooks``), the protected
  optimizer's own hooks, ``optimizer.step`` replaced on the instance or the class,
  TorchFunctionMode/TorchDispatchMode stack depth, ``torch.library`` registrations,
  and the sentinel's own hooks and patches still in place;
* every ``full_every`` steps (and at step 0): hooks of every module and tensor hooks
  of every parameter, DDP comm hooks, and the identity and code object of the
  critical functions named by :mod:`trainguard.env.census`;
* every ``dispatch_every`` steps, and at once when ``torch.library`` registrations
  change: the dispatch tables of the operators a step relies on (a Python kernel
  registered over ``aten::add`` shows up here; one registered through the raw
  ``torch._C`` dispatcher API, bypassing ``torch.library``, within ``dispatch_every``
  steps);
* at step 0 and every ``env_every`` steps: that environment census itself
  (functions compared with their source files, Python kernels over built-in
  operators, global modes).

Everything runs on the host and costs no device sync. Each new item is reported
once, naming the hook's function and its ``file:line``.

Options: ``full_every`` (int, default 1: the full census is cheap on CPU; raise it
for very large models), ``dispatch_every`` (10), ``watch_ops`` (extra operator names
to watch), ``env_every``
(steps between runs of the environment's deep census, which takes about half a
second; 0 turns it off; it always runs at step 0 otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainguard.findings import Rule, Severity
from trainguard.sentinel.checks import _census_probe as probe
from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip
from trainguard.sentinel.config import CheckConfig
from trainguard.sentinel.integrations import ddp

__all__ = ["CHECK", "HOOK_INSTALLED", "OVERRIDE_INSTALLED", "SENTINEL_TAMPERED", "CensusCheck"]

HOOK_INSTALLED = Rule(
    "sentinel.hook-installed",
    Severity.HIGH,
    "A hook appeared in the running training job",
    "A module, optimizer, tensor or global hook, a DDP comm hook or a torch function/dispatch "
    "mode was installed after the sentinel took its baseline. Hooks see and can rewrite "
    "activations, gradients and updates of every step; training code rarely adds them "
    "mid-run. Check the named function and file.",
)
OVERRIDE_INSTALLED = Rule(
    "sentinel.override-installed",
    Severity.CRITICAL,
    "An operator kernel or critical function was replaced at runtime",
    "The dispatcher table of an operator the training step uses changed (for example a "
    "Python kernel registered over aten::add), or a critical function (an optimizer step, "
    "a seed function, a collective) is no longer the object it was at start. Every step "
    "now runs code that is not PyTorch's.",
)
SENTINEL_TAMPERED = Rule(
    "sentinel.sentinel-tampered",
    Severity.CRITICAL,
    "The sentinel's own hooks or patches were removed or replaced",
    "A hook or wrapper installed by trainguard is gone. Code that silences the sentinel is "
    "targeting it; the checks that depended on the hook no longer run.",
)

_SLOT_RULES = (HOOK_INSTALLED, OVERRIDE_INSTALLED, SENTINEL_TAMPERED)
#: ``own_hooks`` kinds and the hook dictionary each lives in (any other kind is taken to
#: be the name of the dictionary attribute on the owner itself).
_HOOK_DICT_FOR = {
    "module_forward_pre": "_forward_pre_hooks",
    "module_forward": "_forward_hooks",
    "module_backward_pre": "_backward_pre_hooks",
    "module_backward": "_backward_hooks",
    "optimizer_step_pre": "_optimizer_step_pre_hooks",
    "optimizer_step_post": "_optimizer_step_post_hooks",
    "post_accumulate_grad": "_post_accumulate_grad_hooks",
    "tensor_backward": "_backward_hooks",
}


def _registry(owner: object, name: str) -> dict[int, Any]:
    reg = getattr(owner, name, None)
    return reg if isinstance(reg, dict) else {}


def _signature(reg: dict[int, Any]) -> tuple[int, object, object]:
    """``(len, first key, last key)`` of a hook registry.

    Hook handles take fresh, increasing ids and a new hook goes to one end of the
    registry (appended, or moved to the front by ``prepend=True``), so while any hook
    added since a check survives, the first or the last key is one the check never saw:
    an equal signature means nothing was added since.
    """
    if not reg:
        return (0, None, None)
    return (len(reg), next(iter(reg)), next(reversed(reg)))


class CensusCheck(Check):
    name = "census"
    rule = HOOK_INSTALLED
    defaults = CheckConfig(
        options={"full_every": 1, "dispatch_every": 10, "watch_ops": (), "env_every": 1000}
    )
    slots = 3

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        super().__init__(ctx, config)
        self.full_every = config.integer("full_every", minimum=1)
        self.dispatch_every = config.integer("dispatch_every", minimum=1)
        watch = self.options["watch_ops"]
        self.watch_ops = probe.WATCH_OPS + (tuple(watch) if isinstance(watch, tuple) else ())
        self.modules = list(ctx.model.modules())
        self._reported: set[tuple[str, ...]] = set()
        # -- the baseline -----------------------------------------------------------------
        self.base_global = {name: set(reg) for name, reg in probe.global_registries()}
        self.base_opt = {n: set(_registry(ctx.optimizer, n)) for n in probe.OPTIMIZER_HOOK_DICTS}
        self.base_step_inst = ctx.optimizer.__dict__.get("step")
        self.base_step_cls = type(ctx.optimizer).step
        self.base_modes = probe.mode_stack()
        self.base_depth = probe.mode_depth()
        self.base_impls = probe.python_library_impls()
        self.base_modules = {
            (id(m), n): set(_registry(m, n)) for m in self.modules for n in probe.MODULE_HOOK_DICTS
        }
        self.base_tensor = {
            (id(p), n): set(_registry(p, n) or {})
            for p in ctx.params
            for n in ("_backward_hooks", "_post_accumulate_grad_hooks")
        }
        self.base_comm = [h["id"] for h in ddp.comm_hooks(ctx.model)]
        self.base_dispatch = {op: probe.dispatch_dump(op) for op in self.watch_ops}
        self.base_functions = {
            name: probe.code_identity(obj)
            for name in _critical_names()
            if (obj := probe.resolve(name)) is not None
        }
        self.env_every = config.integer("env_every", minimum=0)  # 0: never
        self.env = _env_census() if self.env_every else None
        # Registries last found to hold nothing new, by signature: the full census re-reads
        # a registry's keys only when its signature moved (see _signature).
        self._clean: dict[tuple[int, str], tuple[int, object, object]] = {}

    # -- helpers ----------------------------------------------------------------------------
    def _own_ids(self) -> set[int]:
        return {hid for _, _, hid in self.ctx.own_hooks}

    def _report(
        self, state: StepState, slot: int, key: tuple[str, ...], message: str, **evidence: Any
    ) -> None:
        if key in self._reported:
            return
        self._reported.add(key)
        state.trip_host(self, message, slot=slot, **evidence)

    def _new_hooks(self, state: StepState, where: str, reg: dict[int, Any], base: set[int]) -> bool:
        """Report hooks in ``reg`` beyond ``base`` and the sentinel's own; returns whether
        there were any."""
        own = self._own_ids()
        found = False
        for hid, fn in list(reg.items()):
            if hid in base or hid in own:
                continue
            info = probe.describe_callable(fn[0] if isinstance(fn, tuple) else fn)
            if "state_dict" in where and probe.defined_in_torch(info):
                continue  # FSDP registers its state-dict hooks lazily, at the first forward
            found = True
            self._report(
                state,
                0,
                (where, str(hid)),
                f"hook {info['name']} installed in {where}",
                registry=where,
                hook=info,
            )
        return found

    # -- every step ---------------------------------------------------------------------------
    def _cheap(self, state: StepState) -> None:
        for name, reg in probe.global_registries():
            self._new_hooks(state, name, reg, self.base_global.get(name, set()))
        opt = self.ctx.optimizer
        for n in probe.OPTIMIZER_HOOK_DICTS:
            self._new_hooks(state, f"optimizer.{n}", _registry(opt, n), self.base_opt[n])
        if probe.mode_depth() != self.base_depth:
            modes = probe.mode_stack()
            if modes != self.base_modes:
                self._report(
                    state,
                    0,
                    ("modes", *modes),
                    f"torch mode stack changed: {modes}",
                    modes=modes,
                    baseline=self.base_modes,
                    handlers=probe.mode_sources(),
                )
        impls = probe.python_library_impls()
        if impls != self.base_impls:
            self._report(
                state, 1, ("impls", str(impls)),
                f"torch.library kernel registrations changed ({self.base_impls} -> {impls})",
                before=self.base_impls, after=impls,
            )  # fmt: skip
            self.base_impls = impls  # report each change once, and force the scan only then
            self._full(state, forced=True)  # name the operator now, not at the next census
        self._step_identity(state)
        self._own_integrity(state)

    def _step_identity(self, state: StepState) -> None:
        opt = self.ctx.optimizer
        inst = opt.__dict__.get("step")
        if inst is not self.base_step_inst and not (
            getattr(inst, "_wrapped_by_lr_sched", False)
            and getattr(inst, "__wrapped__", None)
            is getattr(self.base_step_inst, "__func__", self.base_step_cls)
        ):
            self._report(
                state, 1, ("step-instance", str(id(inst))),
                f"{type(opt).__name__}.step replaced on the optimizer instance",
                function=probe.describe_callable(inst),
            )  # fmt: skip
        cls_step = type(opt).step
        if cls_step is not self.base_step_cls:
            self._report(
                state, 1, ("step-class", str(id(cls_step))),
                f"{type(opt).__name__}.step replaced on the class",
                function=probe.describe_callable(cls_step),
            )  # fmt: skip

    def _own_integrity(self, state: StepState) -> None:
        for kind, owner, hid in self.ctx.own_hooks:
            reg = _registry(owner, _HOOK_DICT_FOR.get(kind, kind))
            if hid not in reg:
                self._report(
                    state,
                    2,
                    ("own-hook", kind, str(hid)),
                    f"sentinel {kind} hook removed",
                    kind=kind,
                )
        for owner, attr, wrapper in self.ctx.own_patches:
            if getattr(owner, attr, None) is not wrapper:
                where = getattr(owner, "__name__", type(owner).__name__)
                self._report(
                    state, 2, ("own-patch", where, attr), f"sentinel wrapper {where}.{attr} replaced",
                    function=probe.describe_callable(getattr(owner, attr, None)),
                )  # fmt: skip

    # -- every full_every steps ------------------------------------------------------------------
    def _full(self, state: StepState, *, forced: bool = False) -> None:
        clean = self._clean
        for m in self.modules:
            for n in probe.MODULE_HOOK_DICTS:
                reg = _registry(m, n)
                key, sig = (id(m), n), _signature(reg)
                if clean.get(key) == sig:
                    continue
                base = self.base_modules.get(key, set())
                if not (
                    reg.keys() - base
                    and self._new_hooks(state, f"{type(m).__name__}.{n}", reg, base)
                ):
                    clean[key] = sig
        own_ids = self._own_ids()
        for i, p in enumerate(self.ctx.params):
            for n in ("_backward_hooks", "_post_accumulate_grad_hooks"):
                reg = _registry(p, n)
                key, sig = (id(p), n), _signature(reg)
                if clean.get(key) == sig:
                    continue
                base = self.base_tensor.get(key, set())
                if not (
                    reg.keys() - base - own_ids
                    and self._new_hooks(state, f"{self.ctx.names[i]}.{n}", reg, base)
                ):
                    clean[key] = sig
        for hook in ddp.comm_hooks(self.ctx.model):
            if hook["id"] not in self.base_comm:
                self._report(
                    state,
                    0,
                    ("comm", str(hook["id"])),
                    f"DDP comm hook {hook['hook']} registered",
                    hook=hook,
                )
        if forced or state.step % self.dispatch_every == 0:
            self._dispatch(state)
        own = self._own_names()
        for name, ident in self.base_functions.items():
            if name in own:
                continue  # trainguard's own wrapper (the rng check's seed wrappers): see _own_integrity
            obj = probe.resolve(name)
            if probe.code_identity(obj) != ident:
                self._report(
                    state, 1, ("function", name, str(id(obj))), f"{name} replaced at runtime",
                    function=probe.describe_callable(obj),
                )  # fmt: skip
        if self.env is not None and state.step % self.env_every == 0:
            self._env(state, own)

    def _dispatch(self, state: StepState) -> None:
        for op, before in self.base_dispatch.items():
            now = probe.dispatch_dump(op)
            if now != before:
                added = sorted(set((now or "").splitlines()) - set((before or "").splitlines()))
                self._report(
                    state, 1, ("dispatch", op, *added), f"dispatcher table of {op} changed",
                    op=op, added=added[:10],
                )  # fmt: skip

    def _own_names(self) -> set[str]:
        return {
            f"{getattr(o, '__name__', type(o).__name__)}.{a}" for o, a, _ in self.ctx.own_patches
        }

    def _env(self, state: StepState, own: set[str]) -> None:
        """The environment's deep census: code compared with its source, Python kernels
        compared with the capture, modes (about half a second; every ``env_every`` steps)."""
        assert self.env is not None
        replaced = {key[1] for key in self._reported if key[0] == "function"}
        for finding in self.env.run().findings:
            if (
                finding.subject in own
                or finding.subject in replaced
                or finding.severity < Severity.MEDIUM
            ):
                continue
            rule = OVERRIDE_INSTALLED if finding.severity >= Severity.CRITICAL else HOOK_INSTALLED
            self._report(
                state, 0 if rule is HOOK_INSTALLED else 1, ("env", finding.rule, finding.subject, finding.message),
                finding.message, census_rule=finding.rule, subject=finding.subject, evidence=dict(finding.evidence),
            )  # fmt: skip

    def _run(self, state: StepState) -> None:
        self._cheap(state)
        if state.step % self.full_every == 0:
            self._full(state)

    def on_forward(self, state: StepState) -> None:
        self._cheap(state)

    def before_step(self, state: StepState) -> None:
        self._run(state)

    def describe(self, trip: Trip) -> Sequence[Detection]:
        rule = _SLOT_RULES[trip.slot]
        return [Detection(e.message, dict(e.evidence), step=e.step, rule=rule) for e in trip.events]


def _critical_names() -> tuple[str, ...]:
    """The critical functions the environment census names (none when it is unavailable)."""
    try:
        from trainguard.env.census import CRITICAL_FUNCTIONS
    except ImportError:
        return ()
    return tuple(CRITICAL_FUNCTIONS)


def _env_census() -> Any:
    """The environment's runtime census bound to this process (captured now), if available.

    File hashing is left to ``trainguard env verify``; the dispatcher is compared with
    what was registered at ``protect()``."""
    try:
        from trainguard.env.census import CensusConfig, RuntimeCensus
    except ImportError:
        return None
    return RuntimeCensus(CensusConfig(check_files=False, pristine_reference=False))


CHECK = CensusCheck
