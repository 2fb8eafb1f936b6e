"""Baselines: snapshot, canonical format, and the stat-only re-check catching each tamper."""

from __future__ import annotations

import json
import os
import py_compile
from pathlib import Path

import pytest

from tests.env._envcraft import OPTIM_PY, edit_keep_size, rewrite_record_line, site_packages
from tests.env.conftest import python_of
from trainguard.env import Baseline, EnvConfig, snapshot_environment, verify_environment
from trainguard.env._recheck import recheck
from trainguard.env._target import describe_interpreter
from trainguard.errors import ConfigError
from trainguard.findings import Report, Severity


def snap(venv: Path, wheelhouse: Path, out: Path, *, sources: bool = True) -> Baseline:
    config = EnvConfig(python=python_of(venv), wheels=(str(wheelhouse),), auto_wheels=False)
    archive = f"{out}.sources.zip" if sources else None
    baseline, report = snapshot_environment(config, sources_archive=archive)
    assert report.findings == []
    baseline.save(out)
    return baseline


def recheck_of(venv: Path, baseline: Path) -> Report:
    return verify_environment(EnvConfig(python=python_of(venv), baseline=str(baseline)))


def rules(report: Report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.findings:
        out.setdefault(f.rule, []).append(f.subject)
    return out


@pytest.fixture
def based(demo_venv: Path, wheelhouse: Path, tmp_path: Path) -> Path:
    path = tmp_path / "env.baseline.json"
    snap(demo_venv, wheelhouse, path)
    return path


def test_snapshot_covers_every_file_and_rechecks_clean(demo_venv: Path, based: Path) -> None:
    baseline = Baseline.load(based)
    site = str(site_packages(demo_venv))
    files = baseline.roots[site]
    assert "optim.py" in files["tgdemo"].files
    assert "optim.cpython-311.pyc" in files["tgdemo/__pycache__"].files  # bytecode hashed too
    assert str(demo_venv / "bin") in baseline.roots  # console scripts and the python link
    assert baseline.interpreter["prefix"] == str(demo_venv)
    report = recheck_of(demo_venv, based)
    assert report.findings == []
    assert report.stats["rehashed"] == 0


def test_baseline_json_is_canonical_and_validated(based: Path) -> None:
    text = based.read_text()
    baseline = Baseline.from_json(text)
    assert baseline.to_json() == text
    doc = json.loads(text)
    assert doc["format"] == "trainguard.env-baseline" and doc["version"] == 1
    first_dir = next(iter(doc["roots"].values()))
    first_dir[next(iter(first_dir))]["files"]["x.py"] = ["abc", "not-an-int", 0, 0, 0, 0]
    with pytest.raises(ConfigError, match="malformed baseline"):
        Baseline.from_json(json.dumps(doc))
    with pytest.raises(ConfigError):
        Baseline.from_json('{"format": "something-else"}')


def test_recheck_catches_file_and_record_edited_together(demo_venv: Path, based: Path) -> None:
    site = site_packages(demo_venv)
    optim = site / "tgdemo" / "optim.py"
    changed = edit_keep_size(optim, b"p - lr * g", b"p + lr * g")
    rewrite_record_line(site / "tgdemo-1.0.dist-info" / "RECORD", "tgdemo/optim.py", changed)
    report = recheck_of(demo_venv, based)
    found = rules(report)
    assert str(optim) in found["env.baseline-modified"]
    assert str(site / "tgdemo-1.0.dist-info" / "RECORD") in found["env.baseline-modified"]
    [finding] = [f for f in report.findings if f.subject == str(optim)]
    assert finding.severity is Severity.CRITICAL
    assert "+    return [p + lr * g" in finding.evidence["diff"]
    assert "baseline sources" in finding.evidence["pristine"]


def test_recheck_new_and_missing_files(demo_venv: Path, based: Path) -> None:
    site = site_packages(demo_venv)
    (site / "zz.pth").write_text("import os\n")
    (site / "tgdemo" / "cli.py").unlink()
    report = recheck_of(demo_venv, based)
    found = rules(report)
    assert str(site / "zz.pth") in found["env.baseline-new-file"]
    assert str(site / "zz.pth") in found["env.pth-exec"]
    assert found["env.baseline-missing"] == [str(site / "tgdemo" / "cli.py")]


def test_recheck_touched_file_is_info_only(demo_venv: Path, based: Path) -> None:
    optim = site_packages(demo_venv) / "tgdemo" / "optim.py"
    optim.write_bytes(optim.read_bytes())  # rewritten with identical content
    report = recheck_of(demo_venv, based)
    assert [f.rule for f in report.findings] == ["env.baseline-touched"]
    assert report.exit_code(Severity.LOW) == 0


def test_recheck_tells_recompiled_bytecode_from_tampered(demo_venv: Path, based: Path) -> None:
    site = site_packages(demo_venv)
    source = site / "tgdemo" / "optim.py"
    pyc = site / "tgdemo" / "__pycache__" / "optim.cpython-311.pyc"
    header = pyc.read_bytes()[:16]
    # A faithful recompilation (same code) is not a finding beyond "touched".
    py_compile.compile(str(source), cfile=str(pyc), doraise=True)
    assert "env.pyc-mismatch" not in rules(recheck_of(demo_venv, based))
    # Sabotaged bytecode carrying the pristine header is.
    evil = demo_venv / "evil.py"
    evil.write_bytes(OPTIM_PY.replace(b"p - lr * g", b"p + lr * g"))
    py_compile.compile(str(evil), cfile=str(demo_venv / "evil.pyc"), doraise=True)
    pyc.write_bytes(header + (demo_venv / "evil.pyc").read_bytes()[16:])
    assert rules(recheck_of(demo_venv, based))["env.pyc-mismatch"] == [str(pyc)]


def test_baseline_of_another_environment_falls_back(
    demo_venv: Path, based: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    doc = json.loads(based.read_text())
    doc["interpreter"]["prefix"] = "/somewhere/else"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    report = recheck_of(demo_venv, other)
    assert "env.baseline-foreign" in rules(report)
    assert report.stats["distributions"] == 2  # the full RECORD verification ran instead


def test_snapshot_of_a_tampered_environment_reports_it(demo_venv: Path, wheelhouse: Path) -> None:
    edit_keep_size(site_packages(demo_venv) / "tgdemo" / "optim.py", b"p - lr", b"p + lr")
    config = EnvConfig(python=python_of(demo_venv), wheels=(str(wheelhouse),), auto_wheels=False)
    _, report = snapshot_environment(config)
    assert "env.record-mismatch" in rules(report)


def test_recheck_is_stat_based(demo_venv: Path, based: Path) -> None:
    """A content change that keeps every stat fact cannot happen without root; the re-check
    hashes nothing when nothing changed, and hashes exactly the changed file otherwise."""
    optim = site_packages(demo_venv) / "tgdemo" / "optim.py"
    baseline = Baseline.load(based)
    interp = describe_interpreter(python_of(demo_venv))
    assert recheck(baseline, interp, EnvConfig()).stats["rehashed"] == 0
    os.utime(optim, ns=(0, 0))
    report = recheck(baseline, interp, EnvConfig())
    assert report.stats["rehashed"] == 1
