"""Runtime census: in-memory tampering of a live training process.

Every tamper runs in its own subprocess (a real ``import torch`` and a few
optimizer steps), so nothing leaks into the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.env._envcraft import site_packages

PRELUDE = """
import json, sys
import trainguard.env.census as census_mod
from trainguard.env.census import CensusConfig, RuntimeCensus
import torch
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
census = RuntimeCensus(CENSUS_CONFIG)
for _ in range(3):
    opt.zero_grad(); model(torch.randn(8, 4)).pow(2).mean().backward(); opt.step()
"""
EPILOGUE = """
report = census.run()
print(json.dumps([[f.rule, f.subject, f.severity.label, f.message] for f in report.findings]))
"""


def run_census(tamper: str, *, config: str = "CensusConfig(check_files=False)") -> list[list[Any]]:
    code = PRELUDE.replace("CENSUS_CONFIG", config) + textwrap.dedent(tamper) + EPILOGUE
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    findings: list[list[Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return findings


def at_least_medium(findings: list[list[Any]]) -> list[list[Any]]:
    return [f for f in findings if f[2] in ("medium", "high", "critical")]


pytestmark = pytest.mark.slow


def test_clean_training_process_has_no_findings() -> None:
    findings = run_census("", config="CensusConfig()")
    assert at_least_medium(findings) == []


def test_replaced_manual_seed() -> None:
    findings = run_census(
        """
        def manual_seed(seed):
            return None
        torch.manual_seed = manual_seed
        """
    )
    hits = [f for f in findings if f[1] == "torch.manual_seed"]
    assert hits and all(f[0] == "census.function-replaced" and f[2] == "critical" for f in hits)
    assert any("outside its package" in f[3] for f in hits)


def test_optimizer_step_wrapped_by_a_foreign_function() -> None:
    findings = run_census(
        """
        import functools
        real = torch.optim.SGD.step
        @functools.wraps(real)
        def step(self, closure=None):
            for group in self.param_groups:
                group["lr"] = -abs(group["lr"])  # flip the update
            return real(self, closure)
        torch.optim.SGD.step = step
        """
    )
    subjects = {f[1] for f in findings if f[0] == "census.function-replaced"}
    assert "torch.optim.SGD.step" in subjects
    assert "torch.optim.sgd.SGD.step" in subjects  # also found by the protected-module sweep


def test_code_object_swapped_in_place() -> None:
    findings = run_census(
        """
        import torch.optim.sgd as sgd_mod
        def fake(params, grads, momentum_buffer_list, grad_scale, found_inf, *, weight_decay,
                 momentum, lr, dampening, nesterov, maximize, has_sparse_grad):
            for p, g in zip(params, grads):
                p.add_(g, alpha=lr)
        sgd_mod._single_tensor_sgd.__code__ = fake.__code__.replace(
            co_name="_single_tensor_sgd", co_firstlineno=sgd_mod._single_tensor_sgd.__code__.co_firstlineno,
            co_filename=sgd_mod._single_tensor_sgd.__code__.co_filename)
        """
    )
    hits = [f for f in findings if f[1] == "torch.optim.sgd._single_tensor_sgd"]
    assert hits and hits[0][0] == "census.code-mismatch" and hits[0][2] == "critical"


def test_process_control_replaced() -> None:
    findings = run_census(
        """
        import time, os, random
        real_sleep = time.sleep
        time.sleep = lambda s: real_sleep(s * 10)
        def seed(a=None, version=2):
            pass
        random.seed = seed
        """
    )
    subjects = {f[1] for f in findings if f[0] == "census.function-replaced"}
    assert {"time.sleep", "random.seed"} <= subjects


def test_python_kernel_over_aten_add() -> None:
    findings = run_census(
        """
        lib = torch.library.Library("aten", "IMPL")
        def bad_add(a, b, alpha=1):
            return torch.ops.aten.sub.Tensor(a, b)
        lib.impl("add.Tensor", bad_add, "CPU")
        assert torch.add(torch.ones(1), torch.ones(1)).item() == 0.0
        """,
        config="CensusConfig(check_files=False)",
    )
    hits = [f for f in findings if f[0] == "census.python-kernel"]
    assert [h[1] for h in hits] == ["aten::add.Tensor"]
    assert hits[0][2] == "critical" and "over its built-in kernel" in hits[0][3]


def test_python_kernel_registered_through_torch_library_impl_is_not_trusted_by_location() -> None:
    # torch.library.impl reports a line inside torch/library.py as the registration
    # site; the pristine reference, not the location, catches it.
    findings = run_census(
        """
        def bad_mul(a, b):
            return a + b
        torch.library.impl("aten::mul.Tensor", "CPU", func=bad_mul)
        """,
        config="CensusConfig(check_files=False)",
    )
    hits = [f for f in findings if f[0] == "census.python-kernel"]
    assert [h[1] for h in hits] == ["aten::mul.Tensor"] and "torch/library.py" in hits[0][3]


def test_global_dispatch_mode() -> None:
    findings = run_census(
        """
        from torch.utils._python_dispatch import TorchDispatchMode
        class Spy(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return func(*args, **(kwargs or {}))
        Spy().__enter__()
        """,
        config="CensusConfig(check_files=False, pristine_reference=False)",
    )
    hits = [f for f in findings if f[0] == "census.torch-mode"]
    assert hits and hits[0][2] == "high" and "Spy" in hits[0][1]


def test_loaded_module_edited_after_import(demo_venv: Path, tmp_path: Path) -> None:
    site = site_packages(demo_venv)
    optim = site / "tgdemo" / "optim.py"
    code = f"""
import json, sys
sys.path.insert(0, {str(site)!r})
import tgdemo.optim
from trainguard.env.census import CensusConfig, RuntimeCensus
from pathlib import Path
path = Path({str(optim)!r})
path.write_bytes(path.read_bytes().replace(b"p - lr * g", b"p + lr * g"))
config = CensusConfig(check_dispatcher=False, site_packages=({str(site)!r},))
report = RuntimeCensus(config).run()
print(json.dumps([[f.rule, f.subject] for f in report.findings]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ["census.module-modified", str(optim)] in json.loads(proc.stdout)
