"""Baselines: snapshot, canonical format, and the stat-only re-check catching each tamper."""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from tests.env._envcraft import OPTIM_PY, edit_keep_size, rewrite_record_line, site_packages
from tests.env.conftest import python_of
from trainguard.env import Baseline, EnvConfig, snapshot_environment, verify_environment
from trainguard.env._recheck import recheck
from trainguard.env._target import describe_interpreter
from trainguard.errors import ConfigError, UsageError
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


GOOD_HASH = "9f" * 32


@pytest.mark.parametrize(
    "record",
    [
        "1 2 3 4 33188 " + GOOD_HASH + "0",  # hash one digit too long
        "1 2 3 4 33188 " + GOOD_HASH[:-1],  # one too short
        "1 2 3 4 33188 " + GOOD_HASH.upper(),  # not the canonical spelling
        "1 2 3 4 33188 " + "g" * 64,  # not hex
        "1 2 3 4 " + GOOD_HASH,  # a stat fact missing
        "1 2 3 4 33188  " + GOOD_HASH,  # an empty field
        " 1 2 3 4 33188 " + GOOD_HASH,
        "1 2 3 4 3318a " + GOOD_HASH,  # a hex letter among the stat facts
        "1 2 3 4 \u0663 " + GOOD_HASH,  # a digit of another script (int() would take it)
        "1 2 3 4 33188 link:a\nb",  # a newline would split the record in two
        "1 2 3 4 33188 sha256:" + GOOD_HASH,
    ],
)
def test_malformed_file_record_is_refused_at_load(based: Path, record: str) -> None:
    doc = json.loads(based.read_text())
    site = next(iter(doc["roots"].values()))
    folder = site[next(iter(site))]
    folder["files"]["x.py"] = record
    with pytest.raises(ConfigError, match="malformed baseline"):
        Baseline.from_json(json.dumps(doc))


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\u0000b"])
def test_file_name_outside_its_folder_is_refused(based: Path, name: str) -> None:
    doc = json.loads(based.read_text())
    site = next(iter(doc["roots"].values()))
    folder = site[next(iter(site))]
    folder["files"][name] = "1 2 3 4 33188 " + GOOD_HASH
    with pytest.raises(ConfigError, match="malformed baseline"):
        Baseline.from_json(json.dumps(doc))


@pytest.mark.parametrize("stat", [[1, 2, 3], [1, 2, 3, "4"], [1, 2, 3, True], [1, 2, 3, 4.0], None])
def test_malformed_folder_stat_is_refused(based: Path, stat: object) -> None:
    doc = json.loads(based.read_text())
    site = next(iter(doc["roots"].values()))
    site[next(iter(site))]["stat"] = stat
    with pytest.raises(ConfigError, match="malformed baseline"):
        Baseline.from_json(json.dumps(doc))


def test_every_record_form_a_snapshot_writes_is_accepted(based: Path) -> None:
    doc = json.loads(based.read_text())
    site = next(iter(doc["roots"].values()))
    files = site[next(iter(site))]["files"]
    files["hashed.py"] = "0 0 0 0 0 " + GOOD_HASH
    files["link"] = "12 1763700000000000000 1763700000000000000 131200 41471 link:../a b/c"
    files["unreadable"] = "0 1 2 3 33188 "
    baseline = Baseline.from_json(json.dumps(doc))
    assert Baseline.from_json(baseline.to_json()).to_json() == baseline.to_json()


def test_interpreter_and_baseline_errors_while_loading_in_parallel(tmp_path: Path) -> None:
    """The target is described while the baseline loads; each failure still surfaces,
    an interpreter that cannot be described first (as when they ran in turn)."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "trainguard.env-baseline", "version": 1, "roots": []}')
    with pytest.raises(ConfigError, match="malformed baseline"):
        verify_environment(EnvConfig(python=sys.executable, baseline=str(bad)))
    with pytest.raises(UsageError, match="no such interpreter"):
        verify_environment(EnvConfig(python=str(tmp_path / "python"), baseline=str(bad)))
    with pytest.raises(ConfigError, match="cannot read baseline"):
        verify_environment(EnvConfig(python=sys.executable, baseline=str(tmp_path / "none")))


def test_clean_recheck_loads_only_what_it_runs(demo_venv: Path, based: Path) -> None:
    """The re-check runs at every job start: a clean one must not import the RECORD,
    wheel, diff or bytecode machinery (their import costs more than the check)."""
    code = (
        "import sys\n"
        "from trainguard.env import EnvConfig, verify_environment\n"
        f"report = verify_environment(EnvConfig(python={python_of(demo_venv)!r}, "
        f"baseline={str(based)!r}))\n"
        "assert report.findings == [], report.findings\n"
        "print(' '.join(m for m in sys.modules if m.startswith('trainguard.')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "trainguard.env._recheck" in loaded
    for module in (
        "_verify",
        "_record",
        "_anchor",
        "_wheels",
        "_diff",
        "_pyc",
        "_hashing",
        "census",
    ):
        assert f"trainguard.env.{module}" not in loaded


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
