"""A real torch 2.13 install, tampered the ways the 2024 insider did. Slow: builds a torch venv.

The venv is shared by the tests of this module; each tamper is undone after
its test, and verification is content-based, so the next test sees a clean
environment again.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.env._envcraft import rewrite_record_line, site_packages
from tests.env.conftest import TORCH_WHEEL_DIR, python_of
from trainguard.env import EnvConfig, snapshot_environment, verify_environment
from trainguard.findings import Report, Severity

pytestmark = pytest.mark.slow

SGD_LINE = b"            param.add_(grad, alpha=-lr)"
SGD_SABOTAGE = b"            param.add_(grad, alpha=+lr)"


def verify(venv: Path, **kw: object) -> Report:
    config = EnvConfig(
        python=python_of(venv),
        wheels=(str(TORCH_WHEEL_DIR),),
        auto_wheels=False,
        **kw,  # type: ignore[arg-type]
    )
    return verify_environment(config)


def subjects(report: Report, rule: str) -> list[str]:
    return [f.subject for f in report.findings if f.rule == rule]


@contextlib.contextmanager
def restored(*paths: Path) -> Iterator[None]:
    """Undo edits (and remove created files) when the test ends."""
    saved = {p: p.read_bytes() if p.exists() else None for p in paths}
    try:
        yield
    finally:
        for path, data in saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


@pytest.fixture(scope="module")
def site(torch_venv: Path) -> Path:
    return site_packages(torch_venv)


def test_fresh_torch_install_reports_nothing(torch_venv: Path) -> None:
    report = verify(torch_venv)
    assert report.findings == []
    assert report.stats["anchored"] == 1
    assert report.stats["files"] > 10_000


def test_edited_optimizer_is_shown_as_a_diff(torch_venv: Path, site: Path) -> None:
    sgd = site / "torch" / "optim" / "sgd.py"
    with restored(sgd):
        sgd.write_bytes(sgd.read_bytes().replace(SGD_LINE, SGD_SABOTAGE))
        report = verify(torch_venv)
    [finding] = [f for f in report.findings if f.rule == "env.record-mismatch"]
    assert finding.subject == str(sgd) and finding.severity is Severity.CRITICAL
    assert "-            param.add_(grad, alpha=-lr)" in finding.evidence["diff"]
    assert "+            param.add_(grad, alpha=+lr)" in finding.evidence["diff"]
    assert "torch-2.13.0" in finding.evidence["pristine"]


def test_edit_hidden_by_a_rewritten_record_line(torch_venv: Path, site: Path) -> None:
    sgd = site / "torch" / "optim" / "sgd.py"
    record = next(site.glob("torch-2.13.0*.dist-info")) / "RECORD"
    with restored(sgd, record):
        changed = sgd.read_bytes().replace(SGD_LINE, SGD_SABOTAGE)
        sgd.write_bytes(changed)
        rewrite_record_line(record, "torch/optim/sgd.py", changed)
        report = verify(torch_venv)
    assert subjects(report, "env.wheel-mismatch") == [str(sgd)]
    assert subjects(report, "env.record-mismatch") == []


def test_appended_executable_pth(torch_venv: Path, site: Path) -> None:
    pth = site / "torch-accel.pth"
    with restored(pth):
        pth.write_text("import os, random; random.seed(1234)\n")
        report = verify(torch_venv)
    assert subjects(report, "env.pth-exec") == [str(pth)]


def test_sitecustomize(torch_venv: Path, site: Path) -> None:
    hook = site / "sitecustomize.py"
    with restored(hook):
        hook.write_text("import torch\ntorch.manual_seed = lambda s: None\n")
        report = verify(torch_venv)
    assert subjects(report, "env.startup-hook") == [str(hook)]


def test_shadowing_extension_in_torch(torch_venv: Path, site: Path) -> None:
    fake = site / "torch" / "optim" / "sgd.cpython-311-x86_64-linux-gnu.so"
    with restored(fake):
        shutil.copyfile(next((site / "torch").glob("_C.cpython-311*.so")), fake)
        report = verify(torch_venv)
    assert subjects(report, "env.shadowing-module") == [str(fake)]


def test_ld_preload(torch_venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/dev/shm/libcuda_fast.so")
    report = verify(torch_venv)
    assert subjects(report, "env.variable") == ["$LD_PRELOAD"]


def test_baseline_recheck_of_torch(torch_venv: Path, site: Path, tmp_path: Path) -> None:
    config = EnvConfig(
        python=python_of(torch_venv), wheels=(str(TORCH_WHEEL_DIR),), auto_wheels=False
    )
    baseline, report = snapshot_environment(config)
    # Earlier tests restored files (new mtimes), which leaves stale bytecode: LOW only.
    assert report.at_least(Severity.MEDIUM) == []
    path = tmp_path / "torch.baseline.json"
    baseline.save(path)
    recheck = EnvConfig(
        python=python_of(torch_venv),
        baseline=str(path),
        wheels=(str(TORCH_WHEEL_DIR),),
        auto_wheels=False,
    )
    assert verify_environment(recheck).at_least(Severity.LOW) == []
    sgd = site / "torch" / "optim" / "sgd.py"
    with restored(sgd):
        sgd.write_bytes(sgd.read_bytes().replace(SGD_LINE, SGD_SABOTAGE))
        report = verify_environment(recheck)
    assert subjects(report, "env.baseline-modified") == [str(sgd)]
    assert "+            param.add_(grad, alpha=+lr)" in report.findings[0].evidence["diff"]
