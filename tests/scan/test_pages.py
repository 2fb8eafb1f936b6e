"""Page-cache hints: given only for the engine's own mapping of a large file, never
changing what a scan finds."""

from __future__ import annotations

import mmap
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scan._zipcraft import Entry, build_zip, marker_pickle, torch_like
from trainguard.findings import Finding
from trainguard.scan import _pages, scan_buffer, scan_paths

BIG = _pages.SPARSE_MIN + 4096


@pytest.fixture
def mapped(tmp_path: Path) -> Iterator[mmap.mmap]:
    path = tmp_path / "big.bin"
    path.write_bytes(b"\x00" * BIG)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        yield mm


def test_hints_go_only_to_a_whole_mapping_of_a_large_file(
    mapped: mmap.mmap, tmp_path: Path
) -> None:
    view = memoryview(mapped)
    try:
        assert _pages._mapping(view) is mapped
        assert _pages._mapping(view[1:]) is None  # a member: offsets are not the file's
        assert _pages._mapping(view[:100]) is None
        assert _pages._mapping(memoryview(bytes(BIG))) is None  # not a mapping
    finally:
        view.release()
    small = tmp_path / "small.bin"
    small.write_bytes(b"\x00" * 4096)
    with (
        open(small, "rb") as fh,
        mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm,
        memoryview(mm) as whole,
    ):
        assert _pages._mapping(whole) is None  # one read-ahead reads it all anyway


def test_hints_never_raise(mapped: mmap.mmap) -> None:
    view = memoryview(mapped)
    _pages.expect_random_access(view)
    _pages.prefetch(view, -5, BIG * 2)  # out-of-range ends are clamped
    _pages.prefetch_pages(view, [BIG * 3, -1, 0, 1, 5000, 4095])
    _pages.restore_read_ahead(view)
    view.release()
    for hint in (_pages.expect_random_access, _pages.restore_read_ahead):
        hint(view)  # released: ignored
    _pages.prefetch(view, 0, BIG)


def _findings(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return sorted((f.rule, f.subject, f.message) for f in findings)


@pytest.mark.parametrize("kind", ["torch-zip", "pickle"])
def test_large_file_scans_the_same_mapped_as_in_memory(
    tmp_path: Path, marker_dir: Path, kind: str
) -> None:
    payload = marker_pickle(str(marker_dir / "ran"))
    if kind == "torch-zip":
        # A hidden pickle in a storage far into the file and the payload in data.pkl.
        pad = [Entry(f"archive/data/{i}", bytes(64 * 1024)) for i in range(20)]
        hidden = Entry("archive/data/99", payload)
        blob = build_zip([*torch_like(payload), *pad, hidden])
    else:
        blob = pickle.dumps([bytes(BIG), 1], protocol=4) + payload
    assert len(blob) > _pages.SPARSE_MIN
    path = tmp_path / "big.pt"
    path.write_bytes(blob)
    mapped = scan_paths([path])
    in_memory = scan_buffer(blob, str(path), filename=path.name)
    assert _findings(mapped.findings) == _findings(in_memory.findings)
    assert any(f.rule == "pickle.dangerous-global" for f in mapped.findings)
    assert not (marker_dir / "ran").exists()
