"""NumPy .npz: every member read through the tolerant zip reader and scanned as .npy."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np

from tests.scan._zipcraft import Entry, build_zip, marker_pickle
from trainguard.findings import Severity
from trainguard.scan import DEFAULT_LIMITS, scan_buffer
from trainguard.scan.formats import npz


def _npz(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _plain() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    return buf.getvalue()


def _object_npy(payload: bytes) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + bytes([len(header), 0]) + header.encode() + payload


def test_savez_and_savez_compressed_are_clean() -> None:
    arrays = {"w": np.random.rand(20, 5), "ids": np.arange(7), "mask": np.zeros(50, dtype=bool)}
    for compressed in (False, True):
        report = scan_buffer(_npz(compressed, **arrays), "a.npz")
        assert report.findings == []
        formats = report.checked[0].detail["formats"]
        assert formats[0].endswith("=npz") and sum(f.endswith("=numpy") for f in formats) == 3


def test_object_member_payload_is_critical(marker_dir: Path) -> None:
    evil = _object_npy(marker_pickle(str(marker_dir / "m"), 3))
    blob = build_zip([Entry("ok.npy", _plain()), Entry("evil.npy", evil)])
    report = scan_buffer(blob, "a.npz")
    assert report.checked[0].kind == "npz"
    assert "numpy.object-array" in {f.rule for f in report.findings}
    assert report.max_severity == Severity.CRITICAL


def test_crc_corrupted_member_is_still_scanned(marker_dir: Path) -> None:
    entry = Entry("evil.npy", _object_npy(marker_pickle(str(marker_dir / "m"), 3)), method=8, crc=0)
    report = scan_buffer(build_zip([entry]), "a.npz")
    assert "zip.crc-mismatch" in {f.rule for f in report.findings}
    assert report.max_severity == Severity.CRITICAL


def test_highly_compressible_member_past_the_slack_hits_the_ratio_limit() -> None:
    limits = replace(DEFAULT_LIMITS, decompression_slack_bytes=1 << 20)
    report = scan_buffer(_npz(True, z=np.zeros(1 << 20)), "z.npz", limits=limits)
    assert "limit.exceeded" in {f.rule for f in report.at_least(Severity.HIGH)}
    # Under the default slack the same legitimate file is clean.
    assert scan_buffer(_npz(True, z=np.zeros(1 << 20)), "z.npz").findings == []


def test_detect_requires_npy_members_and_zip_magic() -> None:
    assert npz.detect(memoryview(_npz(a=np.arange(2))), None)
    assert not npz.detect(memoryview(build_zip([Entry("a.npy", b""), Entry("b.txt", b"")])), None)
    assert not npz.detect(memoryview(build_zip([Entry("a.npy", b"")], prefix=b"junk")), None)
