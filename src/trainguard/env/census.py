"""Runtime census: is the code this process runs still the code that was verified?

``env verify`` checks files; an insider can also change a running job in
memory (replace ``torch.optim.SGD.step``, wrap ``torch.manual_seed``, register
a Python kernel over ``aten::add``, push a global torch mode) or edit a file
after it was imported. The census, a library function used by the sentinel,
looks at the live process:

* critical functions (optimizer steps, seeding, ``torch.load``/``save``,
  collectives, ``time.sleep``, ``os.kill``, ``random.seed``,
  ``numpy.random.seed``...) compared with what was captured when the census
  object was made, and with the code their own source files compile to;
* every function and method of protected modules (``torch.optim.*``,
  ``torch.random``, ``torch.serialization``, collectives, data loading)
  compared with their source;
* imported modules and mapped shared libraries from site-packages hashed
  against their RECORD (or a baseline);
* Python kernels in torch's dispatcher compared with those a pristine
  interpreter registers, and global torch function/dispatch modes.

It never imports a module the process has not imported itself.

Example:
    >>> from trainguard.env.census import RuntimeCensus, CensusConfig
    >>> census = RuntimeCensus(CensusConfig(check_files=False, check_dispatcher=False))
    >>> census.run().exit_code(census.threshold)
    0
"""

from __future__ import annotations

import os
import sys
import time
import types
from dataclasses import dataclass, field

from trainguard.env._dispatch import (
    Registration,
    active_modes,
    cpp_displaced,
    pristine_registrations,
    python_registrations,
)
from trainguard.env._functions import (
    Fingerprint,
    SourceIndex,
    check_function,
    check_module,
    fingerprint,
    resolve,
)
from trainguard.env._loaded import check_loaded
from trainguard.env._target import describe_interpreter
from trainguard.env.baseline import Baseline
from trainguard.findings import Checked, Report, Rule, Severity

__all__ = [
    "CRITICAL_FUNCTIONS",
    "PROTECTED_MODULES",
    "CensusConfig",
    "RuntimeCensus",
    "runtime_census",
]

FUNCTION_REPLACED = Rule(
    "census.function-replaced",
    Severity.CRITICAL,
    "A critical function was replaced in memory",
    "The name now points at other code than its package's: seeding, optimizer steps, "
    "checkpoint loading, collectives or process control can be silently changed this way "
    "without touching a file.",
)
CODE_MISMATCH = Rule(
    "census.code-mismatch",
    Severity.CRITICAL,
    "A function's code differs from its source file",
    "The live function's code object is not what its own source file compiles to: it was "
    "patched in memory, or the file changed after import.",
)
MODULE_MODIFIED = Rule(
    "census.module-modified",
    Severity.CRITICAL,
    "A loaded module or library no longer matches its RECORD or baseline",
    "The file the process imported (or mapped) from site-packages has other content than "
    "was installed. The process may be running the edited version.",
)
MODULE_UNOWNED = Rule(
    "census.module-unowned",
    Severity.HIGH,
    "A loaded module or library belongs to no distribution",
    "The process imported or mapped a file from site-packages that no RECORD lists.",
)
PYTHON_KERNEL = Rule(
    "census.python-kernel",
    Severity.HIGH,
    "A Python kernel is registered for a built-in torch operator",
    "A kernel registered from Python for an aten/prim operator replaces what that operator "
    "computes for every caller in the process. A pristine torch registers no such kernel.",
)
TORCH_MODE = Rule(
    "census.torch-mode",
    Severity.HIGH,
    "A global torch function or dispatch mode is active",
    "A mode pushed on torch's mode stack sees (and can change) every torch call or "
    "operator in the process.",
)
REFERENCE_FAILED = Rule(
    "census.reference-failed",
    Severity.MEDIUM,
    "The pristine dispatcher reference could not be built",
    "Dispatcher registrations were compared with the captured state only.",
)

CRITICAL_FUNCTIONS: tuple[str, ...] = (
    "torch.manual_seed",
    "torch.seed",
    "torch.initial_seed",
    "torch.random.manual_seed",
    "torch.random.seed",
    "torch.set_rng_state",
    "torch.get_rng_state",
    "torch.use_deterministic_algorithms",
    "torch.cuda.manual_seed",
    "torch.cuda.manual_seed_all",
    "torch.load",
    "torch.save",
    "torch.serialization.load",
    "torch.serialization.save",
    "torch.optim.Optimizer.step",
    "torch.optim.Optimizer.zero_grad",
    "torch.nn.utils.clip_grad_norm_",
    "torch.nn.Module.__call__",
    "torch.nn.Module._call_impl",
    "torch.Tensor.backward",
    "torch.autograd.backward",
    "torch.utils.data.DataLoader.__iter__",
    "torch.utils.data.RandomSampler.__iter__",
    "torch.utils.data.distributed.DistributedSampler.__iter__",
    "torch.distributed.init_process_group",
    "torch.distributed.all_reduce",
    "torch.distributed.all_gather",
    "torch.distributed.all_gather_into_tensor",
    "torch.distributed.reduce_scatter",
    "torch.distributed.reduce_scatter_tensor",
    "torch.distributed.broadcast",
    "torch.distributed.reduce",
    "torch.distributed.all_to_all",
    "torch.distributed.barrier",
    "torch.distributed.send",
    "torch.distributed.recv",
    "time.sleep",
    "os.kill",
    "os._exit",
    "os.abort",
    "signal.signal",
    "random.seed",
    "random.shuffle",
    "numpy.random.seed",
)

#: Modules (and their submodules) whose every function is checked against its source.
PROTECTED_MODULES: tuple[str, ...] = (
    "torch.optim",
    "torch.random",
    "torch.serialization",
    "torch.distributed.distributed_c10d",
    "torch.nn.utils.clip_grad",
    "torch.utils.data.dataloader",
    "torch.utils.data.sampler",
    "torch.utils.data.distributed",
    "random",
)

#: Torch modes that torch itself pushes for ordinary user code (``with torch.device(...)``).
BENIGN_MODES = frozenset({"torch.utils._device.DeviceContext"})
#: Operator namespaces that belong to torch itself.
BUILTIN_NAMESPACES = frozenset({"aten", "prim", "prims", "c10d", "_c10d_functional", "quantized"})


@dataclass(frozen=True)
class CensusConfig:
    """What the census checks.

    Attributes:
        critical: dotted names of critical functions.
        protected_modules: module names (with their submodules) whose functions are
            all compared with their source.
        check_files: hash loaded modules and mapped libraries from site-packages.
        check_dispatcher: look for Python kernels over built-in operators and torch modes.
        pristine_reference: build the dispatcher reference in a fresh interpreter
            (``python -I``, a few seconds once); else compare with the capture only.
        baseline: a baseline file to compare loaded files with (else RECORDs).
        site_packages: the folders whose loaded files are checked (default: this
            interpreter's site-packages).
        workers: hashing threads.
    """

    critical: tuple[str, ...] = CRITICAL_FUNCTIONS
    protected_modules: tuple[str, ...] = PROTECTED_MODULES
    check_files: bool = True
    check_dispatcher: bool = True
    pristine_reference: bool = True
    baseline: str | None = None
    site_packages: tuple[str, ...] | None = None
    workers: int | None = None


def _optimizer_steps() -> list[str]:
    optim = sys.modules.get("torch.optim")
    base = getattr(optim, "Optimizer", None)
    if optim is None or base is None:
        return []
    names = []
    for name, obj in vars(optim).items():
        if isinstance(obj, type) and issubclass(obj, base) and obj is not base:
            names.append(f"torch.optim.{name}.step")
    return sorted(names)


def _protected(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@dataclass
class RuntimeCensus:
    """A census bound to this process: captures now, checks on :meth:`run`.

    Make one early (before the training code runs); the sentinel calls
    :meth:`run` at start-up and on log steps.
    """

    config: CensusConfig = field(default_factory=CensusConfig)
    threshold: Severity = Severity.MEDIUM
    _fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    _registrations: set[Registration] | None = None
    _reference: tuple[int, set[Registration]] | None = None
    _index: SourceIndex = field(default_factory=SourceIndex)

    def __post_init__(self) -> None:
        self.capture()

    def _names(self) -> list[str]:
        return list(dict.fromkeys([*self.config.critical, *_optimizer_steps()]))

    def capture(self) -> None:
        """Record what every critical name points to now (names not yet captured only)."""
        for name in self._names():
            if name not in self._fingerprints:
                obj = resolve(name)
                if obj is not None:
                    self._fingerprints[name] = fingerprint(obj)
        if self._registrations is None and "torch" in sys.modules and self.config.check_dispatcher:
            self._registrations = python_registrations()

    def run(self) -> Report:
        """Check the live process; returns a report of ``census.*`` findings."""
        started = time.perf_counter()
        report = Report(
            engine="census",
            caveats=[
                "Only already-imported modules are examined; code imported later needs another run.",
                "C extensions are checked as files, not in memory.",
            ],
        )
        checked_names = self._check_functions(report)
        checked_modules = self._check_modules(report)
        loaded = self._check_files(report) if self.config.check_files else 0
        if self.config.check_dispatcher and "torch" in sys.modules:
            self._check_dispatcher(report)
        self.capture()
        report.checked.append(Checked("(process)", "process", {"pid": os.getpid()}))
        report.stats.update(
            functions=checked_names,
            modules=checked_modules,
            loaded_files=loaded,
            seconds=round(time.perf_counter() - started, 6),
        )
        return report

    def _check_functions(self, report: Report) -> int:
        count = 0
        for name in self._names():
            obj = resolve(name)
            if obj is None:
                continue
            count += 1
            before = self._fingerprints.get(name)
            if before is not None:
                change = before.differs(fingerprint(obj))
                if change is not None:
                    report.add(
                        FUNCTION_REPLACED.finding(name, f"{name} is {change}", now=_describe(obj))
                    )
            for problem in check_function(name, obj, self._index):
                rule = CODE_MISMATCH if "differs from its source" in problem else FUNCTION_REPLACED
                report.add(rule.finding(name, f"{name} {problem}", now=_describe(obj)))
        return count

    def _check_modules(self, report: Report) -> int:
        names = [n for n in list(sys.modules) if _protected(n, self.config.protected_modules)]
        seen = {f.subject for f in report.findings}
        for name in names:
            module = sys.modules.get(name)
            if not isinstance(module, types.ModuleType):
                continue
            for dotted, problem in check_module(module, self._index):
                if dotted in seen:
                    continue
                rule = CODE_MISMATCH if "differs from its source" in problem else FUNCTION_REPLACED
                report.add(rule.finding(dotted, f"{dotted} {problem}"))
        return len(names)

    def _check_files(self, report: Report) -> int:
        sites = self.config.site_packages or describe_interpreter().site_packages
        baseline = Baseline.load(self.config.baseline) if self.config.baseline else None
        problems, count = check_loaded(sites, baseline=baseline, workers=self.config.workers)
        for path, how, kind, detail in problems:
            rule = MODULE_MODIFIED if kind == "modified" else MODULE_UNOWNED
            report.add(rule.finding(path, f"{how}: {detail}"))
        return count

    def _reference_set(self, report: Report) -> set[Registration] | None:
        if not self.config.pristine_reference:
            return self._registrations
        loaded = sum(1 for n in sys.modules if n.startswith("torch"))
        if self._reference is None or self._reference[0] != loaded:
            try:
                self._reference = (loaded, pristine_registrations())
            except (RuntimeError, OSError, ValueError) as exc:
                report.add(REFERENCE_FAILED.finding("(dispatcher)", str(exc)[:300]))
                return self._registrations
        return self._reference[1]

    def _check_dispatcher(self, report: Report) -> None:
        current = python_registrations()
        reference = self._reference_set(report)
        if reference is None:
            return
        namespaces = BUILTIN_NAMESPACES | {op.split("::", 1)[0] for op, *_ in reference}
        new = sorted(r for r in current - reference if r[0].split("::", 1)[0] in namespaces)
        displaced = cpp_displaced(ops=[r[0] for r in new])
        active = {(op, key) for op, key, inactive, _ in new if not inactive}
        for op, key, inactive, where in new:
            if inactive:
                if (op, key) not in active:
                    report.add(
                        PYTHON_KERNEL.finding(
                            op, f"the {key} kernel of {op} registered at {where} was displaced"
                        )
                    )
                continue
            severity = Severity.CRITICAL if (op, key) in displaced else Severity.HIGH
            overrides = " over its built-in kernel" if (op, key) in displaced else ""
            report.add(
                PYTHON_KERNEL.finding(
                    op,
                    f"a Python kernel registered at {where} handles {op} for {key}{overrides}",
                    severity=severity,
                    dispatch_key=key,
                    registered_at=where,
                )
            )
        for kind, cls in active_modes():
            severity = Severity.INFO if cls in BENIGN_MODES else Severity.HIGH
            report.add(
                TORCH_MODE.finding(cls, f"a torch {kind} mode is active: {cls}", severity=severity)
            )


def _describe(obj: object) -> str:
    code = getattr(getattr(obj, "__func__", obj), "__code__", None)
    if code is not None:
        return f"{getattr(obj, '__qualname__', type(obj).__name__)} at {code.co_filename}:{code.co_firstlineno}"
    return repr(obj)[:200]


#: Captured when this module is first imported (import it early: ``import trainguard.env``).
_AT_IMPORT: RuntimeCensus | None = None


def runtime_census(config: CensusConfig | None = None) -> Report:
    """Run the census against the capture made when :mod:`trainguard.env.census` was imported
    (names imported later are captured on their first run)."""
    global _AT_IMPORT
    if _AT_IMPORT is None or (config is not None and config != _AT_IMPORT.config):
        base = _AT_IMPORT._fingerprints if _AT_IMPORT is not None else {}
        _AT_IMPORT = RuntimeCensus(config or CensusConfig(), _fingerprints=dict(base))
    return _AT_IMPORT.run()


_AT_IMPORT = RuntimeCensus(CensusConfig())
