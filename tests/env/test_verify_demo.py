"""env verify on real venvs built from hand-made wheels, tampered the ways an insider would."""

from __future__ import annotations

import hashlib
import os
import py_compile
from pathlib import Path

import pytest

from tests.env._envcraft import OPTIM_PY, edit_keep_size, rewrite_record_line, site_packages
from tests.env.conftest import python_of
from trainguard.env import EnvConfig, verify_environment
from trainguard.findings import Finding, Report, Severity


def verify(venv: Path, wheelhouse: Path | None = None, **kw: object) -> Report:
    config = EnvConfig(
        python=python_of(venv),
        wheels=(str(wheelhouse),) if wheelhouse else (),
        auto_wheels=False,
        **kw,  # type: ignore[arg-type]
    )
    return verify_environment(config)


def only(report: Report, rule: str) -> list[Finding]:
    return [f for f in report.findings if f.rule == rule]


def test_fresh_install_reports_nothing(demo_venv: Path, wheelhouse: Path) -> None:
    report = verify(demo_venv, wheelhouse)
    assert report.findings == []
    assert report.stats["anchored"] == 2 and report.stats["distributions"] == 2
    assert report.exit_code(Severity.INFO) == 0


def test_edited_module_is_reported_with_the_changed_lines(
    demo_venv: Path, wheelhouse: Path
) -> None:
    optim = site_packages(demo_venv) / "tgdemo" / "optim.py"
    edit_keep_size(optim, b"p - lr * g", b"p + lr * g")  # the incident's flipped update
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.record-mismatch")
    assert finding.subject == str(optim)
    assert finding.severity is Severity.CRITICAL
    assert "-    return [p - lr * g" in finding.evidence["diff"]
    assert "+    return [p + lr * g" in finding.evidence["diff"]
    assert "p + lr * g" in finding.message  # the summary names the changed line
    assert report.exit_code(Severity.MEDIUM) == 1


def test_edit_without_a_wheel_still_caught_by_record(demo_venv: Path) -> None:
    optim = site_packages(demo_venv) / "tgdemo" / "optim.py"
    edit_keep_size(optim, b"p - lr * g", b"p + lr * g")
    report = verify(demo_venv)
    assert [f.subject for f in only(report, "env.record-mismatch")] == [str(optim)]
    assert "diff" not in only(report, "env.record-mismatch")[0].evidence  # no pristine copy at hand
    assert report.stats["anchored"] == 0


def test_file_and_record_edited_together_is_caught_by_the_wheel(
    demo_venv: Path, wheelhouse: Path
) -> None:
    site = site_packages(demo_venv)
    optim = site / "tgdemo" / "optim.py"
    changed = edit_keep_size(optim, b"p - lr * g", b"p + lr * g")
    rewrite_record_line(site / "tgdemo-1.0.dist-info" / "RECORD", "tgdemo/optim.py", changed)
    assert only(verify(demo_venv), "env.record-mismatch") == []  # RECORD alone is fooled
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.wheel-mismatch")
    assert finding.subject == str(optim)
    assert "installed RECORD was rewritten" in finding.message
    assert "+    return [p + lr * g" in finding.evidence["diff"]


def test_added_record_line_for_a_dropped_file(demo_venv: Path, wheelhouse: Path) -> None:
    site = site_packages(demo_venv)
    evil = site / "tgdemo" / "hook.py"
    evil.write_bytes(b"import os\n")
    record = site / "tgdemo-1.0.dist-info" / "RECORD"
    record.write_text(record.read_text() + "tgdemo/hook.py,sha256=" + "A" * 43 + ",10\n")
    rewrite_record_line(record, "tgdemo/hook.py", evil.read_bytes())
    report = verify(demo_venv, wheelhouse)
    assert [f.subject for f in only(report, "env.wheel-extra")] == [str(evil)]


def test_executable_pth_appended(demo_venv: Path, wheelhouse: Path) -> None:
    pth = site_packages(demo_venv) / "zz_telemetry.pth"
    pth.write_text("import os; os.environ.setdefault('X', '1')\n")
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.pth-exec")
    assert finding.subject == str(pth)
    assert finding.severity is Severity.CRITICAL  # unowned and executable
    assert "os.environ.setdefault" in finding.message
    assert str(pth) in [f.subject for f in only(report, "env.unowned-file")]


def test_path_only_pth_is_not_an_exec_finding(demo_venv: Path, wheelhouse: Path) -> None:
    pth = site_packages(demo_venv) / "extra.pth"
    pth.write_text(f"# comment\n{demo_venv}\n")
    report = verify(demo_venv, wheelhouse)
    assert only(report, "env.pth-exec") == []
    [path_finding] = only(report, "env.pth-path")
    assert path_finding.evidence["directory"] == str(demo_venv)


def test_sitecustomize_added(demo_venv: Path, wheelhouse: Path) -> None:
    hook = site_packages(demo_venv) / "sitecustomize.py"
    hook.write_text("import random\nrandom.seed(0)\n")
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.startup-hook")
    assert finding.subject == str(hook)
    assert "random.seed(0)" in finding.evidence["preview"]


def test_extension_module_shadowing_an_installed_module(demo_venv: Path, wheelhouse: Path) -> None:
    fake = site_packages(demo_venv) / "tgdemo" / "optim.cpython-311-x86_64-linux-gnu.so"
    fake.write_bytes(b"\x7fELF" + b"\0" * 60)
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.shadowing-module")
    assert finding.subject == str(fake)
    assert "optim.py" in finding.message


def test_module_shadowing_another_distribution(demo_venv: Path, wheelhouse: Path) -> None:
    drop = site_packages(demo_venv) / "tgother.py"
    drop.write_text("VALUE = 3\n")
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.shadowing-module")
    assert finding.subject == str(drop) and "tgother" in finding.message


def test_dropped_unowned_module(demo_venv: Path, wheelhouse: Path) -> None:
    drop = site_packages(demo_venv) / "tgdemo" / "backdoor.py"
    drop.write_text("print('hi')\n")
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.unowned-file")
    assert finding.subject == str(drop) and finding.severity is Severity.HIGH


def test_ld_preload_is_reported(
    demo_venv: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/tmp/libevil.so")
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.variable")
    assert finding.subject == "$LD_PRELOAD" and finding.severity >= Severity.HIGH
    assert finding.evidence["value"] == "/tmp/libevil.so"
    allowed = verify(demo_venv, wheelhouse, allowed_env=frozenset({"LD_PRELOAD=/tmp/libevil.so"}))
    assert only(allowed, "env.variable") == []


def test_pythonpath_module_shadowing_the_stdlib(
    demo_venv: Path, wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = tmp_path / "evilpath"
    evil.mkdir()
    (evil / "random.py").write_text("def seed(*a): pass\n")
    monkeypatch.setenv("PYTHONPATH", str(evil))
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.shadowing-module")
    assert finding.subject == str(evil / "random.py")
    assert only(report, "env.variable")[0].subject == "$PYTHONPATH"


def test_tampered_bytecode_with_a_matching_header(demo_venv: Path, wheelhouse: Path) -> None:
    site = site_packages(demo_venv)
    source = site / "tgdemo" / "optim.py"
    pyc = site / "tgdemo" / "__pycache__" / "optim.cpython-311.pyc"
    assert pyc.exists()
    # Compile a sabotaged copy, then give it the pristine source's header: the
    # import system would load it while every RECORD hash still verifies.
    evil_src = demo_venv / "evil_optim.py"
    evil_src.write_bytes(OPTIM_PY.replace(b"p - lr * g", b"p + lr * g"))
    evil_pyc = demo_venv / "evil.pyc"
    py_compile.compile(str(evil_src), cfile=str(evil_pyc), doraise=True)
    header = pyc.read_bytes()[:16]
    pyc.write_bytes(header + evil_pyc.read_bytes()[16:])
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert only(verify(demo_venv, wheelhouse), "env.pyc-mismatch") == []  # header-level: live
    report = verify(demo_venv, wheelhouse, deep_pyc=True)
    [finding] = only(report, "env.pyc-mismatch")
    assert finding.subject == str(pyc)


def test_sourceless_bytecode_is_reported(demo_venv: Path, wheelhouse: Path) -> None:
    site = site_packages(demo_venv)
    bare = site / "tgdemo" / "extra.pyc"
    py_compile.compile(str(site / "tgdemo" / "cli.py"), cfile=str(bare), doraise=True)
    report = verify(demo_venv, wheelhouse)
    assert [f.subject for f in only(report, "env.pyc-sourceless")] == [str(bare)]


def test_other_interpreter_is_inspected_without_running_its_pth(
    demo_venv: Path, wheelhouse: Path, marker_dir: Path
) -> None:
    marker = marker_dir / "pth-ran"
    pth = site_packages(demo_venv) / "aaa.pth"
    pth.write_text(f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n")
    report = verify(demo_venv, wheelhouse)
    assert only(report, "env.pth-exec")
    assert not marker.exists()  # describing the interpreter used -I -S


def test_world_writable_files_are_reported(demo_venv: Path, wheelhouse: Path) -> None:
    optim = site_packages(demo_venv) / "tgdemo" / "optim.py"
    optim.chmod(0o666)
    report = verify(demo_venv, wheelhouse)
    [finding] = only(report, "env.writable-by-others")
    assert str(optim) in finding.evidence["examples"]


def test_missing_file(demo_venv: Path, wheelhouse: Path) -> None:
    cli = site_packages(demo_venv) / "tgdemo" / "cli.py"
    cli.unlink()
    report = verify(demo_venv, wheelhouse)
    assert [f.subject for f in only(report, "env.file-missing")] == [str(cli)]


def test_hash_removed_from_record_line(demo_venv: Path, wheelhouse: Path) -> None:
    site = site_packages(demo_venv)
    record = site / "tgdemo-1.0.dist-info" / "RECORD"
    lines = [
        "tgdemo/optim.py,," if line.startswith("tgdemo/optim.py,") else line
        for line in record.read_text().splitlines()
    ]
    record.write_text("\n".join(lines) + "\n")
    report = verify(demo_venv)
    assert [f.subject for f in only(report, "env.record-unhashed")] == [
        str(site / "tgdemo" / "optim.py")
    ]


def _lock(wheelhouse: Path, tmp_path: Path, **override: str) -> Path:
    lines = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        digest = override.get(name, hashlib.sha256(wheel.read_bytes()).hexdigest())
        if digest != "absent":
            lines.append(f"{name}=={version} \\\n    --hash=sha256:{digest}\n")
    lock = tmp_path / "requirements.lock"
    lock.write_text("".join(lines))
    return lock


def test_lock_file_pins_the_wheels(demo_venv: Path, wheelhouse: Path, tmp_path: Path) -> None:
    good = verify(demo_venv, wheelhouse, lock=str(_lock(wheelhouse, tmp_path)))
    assert good.findings == [] and good.stats["anchored"] == 2
    bad = verify(demo_venv, wheelhouse, lock=str(_lock(wheelhouse, tmp_path, tgdemo="0" * 64)))
    [finding] = only(bad, "env.wheel-not-locked")
    assert "tgdemo-1.0" in finding.subject and finding.severity is Severity.CRITICAL
    assert bad.stats["anchored"] == 1  # the unlocked wheel is not used as an anchor
    missing = verify(demo_venv, wheelhouse, lock=str(_lock(wheelhouse, tmp_path, tgother="absent")))
    assert [f.message for f in only(missing, "env.lock-mismatch")] == [
        "tgother 2.0 is installed but not in the lock file"
    ]


@pytest.mark.slow
def test_project_environment_is_clean_at_the_default_threshold() -> None:
    """The project's own venv (torch, numpy, transformers, an editable install with a
    .pth, setuptools' distutils hook): no false positive at the default threshold."""
    report = verify_environment(EnvConfig())
    assert report.at_least(Severity.MEDIUM) == [], [
        f.to_dict() for f in report.at_least(Severity.MEDIUM)
    ]
    assert report.stats["files"] > 10_000
