"""The engine's walk: subjects spelled as pathlib spells them, special files skipped, not
scanned, and a missing path an error (the walk itself avoids importing pathlib)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainguard.errors import UsageError
from trainguard.scan import _engine, scan_paths

PICKLE = b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s."  # {'a': 1}


SPELLINGS = (
    """a a/b /a/b a//b a/./b ./a . .. ../a a/ / // ///a //a/b a/../b ./ a/b/. .a a/.b/ ..."""
)


@pytest.mark.parametrize("spelling", SPELLINGS.split())
def test_subjects_are_spelled_as_pathlib_spells_them(spelling: str) -> None:
    assert _engine._normal(spelling) == str(Path(spelling))


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "sub" / ".git").mkdir(parents=True)
    (tmp_path / "a.pkl").write_bytes(PICKLE)
    (tmp_path / "sub" / "b.pkl").write_bytes(PICKLE)
    (tmp_path / "sub" / ".git" / "c.pkl").write_bytes(PICKLE)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "link.pkl").symlink_to(tmp_path / "a.pkl")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("root", [".", "./", "sub/", ".//sub", "ABS"])
def test_walk_finds_files_skips_special_ones_and_version_control(tree: Path, root: str) -> None:
    root = str(tree) + "/" if root == "ABS" else root
    report = scan_paths([root])
    base = "" if root.startswith((".", "sub")) else f"{tree}/"
    checked = sorted(c.subject for c in report.checked)
    skipped = sorted((s.subject, s.reason) for s in report.skipped)
    if "sub" in root:
        assert checked == ["sub/b.pkl"] and skipped == []
        return
    assert checked == [f"{base}a.pkl", f"{base}link.pkl", f"{base}sub/b.pkl"]
    assert (f"{base}dangling", "dangling symbolic link") in skipped
    if hasattr(os, "mkfifo"):
        assert (f"{base}fifo", "not a regular file") in skipped
    assert report.findings == []


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or directory"):
        scan_paths([tmp_path / "nope.pt"])


def test_path_objects_and_strings_give_the_same_subjects(tree: Path) -> None:
    by_str = scan_paths([str(tree / "sub")])
    by_path = scan_paths([tree / "sub"])
    assert [c.subject for c in by_str.checked] == [c.subject for c in by_path.checked]
    assert [c.subject for c in by_str.checked] == [str(tree / "sub" / "b.pkl")]


def test_progress_gets_paths(tree: Path) -> None:
    seen: list[tuple[int, int | None, Path]] = []
    scan_paths(["sub"], progress=lambda i, n, p: seen.append((i, n, p)))
    assert seen == [(0, 1, Path("sub/b.pkl"))]
