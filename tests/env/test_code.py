"""code verify: a training repository against its git commit, without letting the repo run code."""

from __future__ import annotations

import hashlib
import py_compile
import subprocess
from pathlib import Path

import pytest

from tests.env._envcraft import TRAIN_PY, git, make_repo
from trainguard.env.code import CodeConfig, verify_code
from trainguard.findings import Report, Severity


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "trainrepo")


def verify(repo: Path, **kw: object) -> Report:
    return verify_code(CodeConfig(repo=str(repo), **kw))  # type: ignore[arg-type]


def by_rule(report: Report, rule: str) -> list[str]:
    return [f.subject for f in report.findings if f.rule == rule]


def test_clean_checkout(repo: Path) -> None:
    report = verify(repo)
    assert report.findings == []
    assert report.stats["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert report.stats["dirty"] is False
    assert report.stats["diff_sha256"] == hashlib.sha256().hexdigest()


def test_modified_file_with_diff_and_digest(repo: Path) -> None:
    (repo / "train.py").write_text(TRAIN_PY.replace("0.1", "1e9"))
    report = verify(repo)
    [finding] = [f for f in report.findings if f.rule == "code.modified"]
    assert finding.subject == str(repo / "train.py")
    assert "+    return 1e9" in finding.evidence["diff"]
    first = report.stats["diff_sha256"]
    (repo / "train.py").write_text(TRAIN_PY.replace("0.1", "2e9"))
    assert verify(repo).stats["diff_sha256"] != first  # the digest pins the exact content


def test_untracked_and_deleted(repo: Path) -> None:
    (repo / "helper.py").write_text("x = 1\n")
    (repo / "model" / "__init__.py").unlink()
    report = verify(repo)
    assert by_rule(report, "code.untracked") == [str(repo / "helper.py")]
    assert report.findings[0].severity >= Severity.MEDIUM
    assert by_rule(report, "code.deleted") == [str(repo / "model" / "__init__.py")]


def test_ignored_but_importable(repo: Path) -> None:
    (repo / "optim_local.py").write_text("def step(): pass\n")
    (repo / "data").mkdir()
    (repo / "data" / "shard0.bin").write_bytes(b"\0" * 16)
    (repo / ".venv").mkdir()
    (repo / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (repo / ".venv" / "x.py").write_text("")
    report = verify(repo)
    assert by_rule(report, "code.ignored-importable") == [str(repo / "optim_local.py")]


def test_repository_config_programs_never_run(repo: Path, marker_dir: Path) -> None:
    fsmonitor = marker_dir / "fsmonitor-ran"
    filtered = marker_dir / "filter-ran"
    git(repo, "config", "core.fsmonitor", f"touch {fsmonitor}; false")
    git(repo, "config", "filter.evil.clean", f"touch {filtered}; cat")
    (repo / ".gitattributes").write_text("*.py filter=evil\n")
    (repo / "train.py").write_text(TRAIN_PY + "# edited\n")
    # Prove the sample is live: plain `git status` in a throwaway process runs it.
    subprocess.run(["git", "status"], cwd=repo, capture_output=True, check=False)
    assert fsmonitor.exists() or filtered.exists()
    fsmonitor.unlink(missing_ok=True)
    filtered.unlink(missing_ok=True)
    report = verify(repo)
    assert str(repo / "train.py") in by_rule(report, "code.modified")
    assert not fsmonitor.exists() and not filtered.exists()


def test_bytecode_that_does_not_match_its_source(repo: Path) -> None:
    source = repo / "model" / "__init__.py"
    cache = repo / "model" / "__pycache__"
    pyc = cache / "__init__.cpython-311.pyc"
    py_compile.compile(str(source), cfile=str(pyc), doraise=True)
    evil = repo / "evil_src.py"
    evil.write_text("WIDTH = 4000\n")
    py_compile.compile(str(evil), cfile=str(repo / "evil.pyc"), doraise=True)
    pyc.write_bytes(pyc.read_bytes()[:16] + (repo / "evil.pyc").read_bytes()[16:])
    evil.unlink()
    (repo / "evil.pyc").unlink()
    report = verify(repo)
    assert by_rule(report, "code.bytecode-mismatch") == [str(pyc)]


def test_lfs_pointer_matches_real_content(repo: Path) -> None:
    content = b"weights" * 100
    oid = hashlib.sha256(content).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n"
    (repo / "w.bin").write_text(pointer)
    git(repo, "add", "w.bin")
    git(repo, "commit", "-q", "-m", "lfs")
    (repo / "w.bin").write_bytes(content)  # what `git lfs pull` leaves in the worktree
    assert verify(repo).findings == []
    (repo / "w.bin").write_bytes(content + b"!")
    assert by_rule(verify(repo), "code.modified") == [str(repo / "w.bin")]


def test_not_a_repository(tmp_path: Path) -> None:
    report = verify(tmp_path)
    assert [f.rule for f in report.findings] == ["code.no-repository"]
    assert report.exit_code(Severity.MEDIUM) == 1
