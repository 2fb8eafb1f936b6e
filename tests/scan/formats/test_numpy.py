"""NumPy .npy: headers parsed as numpy does, object dtypes treated as the pickles they are."""

from __future__ import annotations

import io
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.scan._zipcraft import marker_pickle
from trainguard.findings import Report, Severity
from trainguard.scan import DEFAULT_LIMITS, scan_buffer
from trainguard.scan.formats import numpy as npy_format


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version, allow_pickle=True)
    return buf.getvalue()


def _handmade(header: str, payload: bytes, major: int = 1) -> bytes:
    text = header.encode("latin1")
    size = struct.pack("<H", len(text)) if major == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([major, 0]) + size + text + payload


def _rules(report: Report) -> set[str]:
    return {f.rule for f in report.findings}


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.ones((3, 5))),
        np.array([True, False]),
        np.array(["a", "bcd"]),
        np.array([b"x", b"yz"]),
        np.array([np.datetime64("2024-01-01"), np.datetime64("2025-06-01")]),
        np.array([1 + 2j], dtype=np.complex128),
        np.zeros((2, 2), dtype=[("a", "<i4"), ("b", "<f8", (3,)), ("c", "S5")]),
        np.zeros((0, 4), dtype=np.int16),
        np.float64(3.5),
    ],
    ids=lambda a: str(getattr(a, "dtype", a)),
)
def test_plain_arrays_are_clean(array: np.ndarray) -> None:
    report = scan_buffer(_npy(np.asarray(array)), "a.npy")
    assert report.findings == []
    assert report.checked[0].kind == "numpy"


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_format_version(version: tuple[int, int]) -> None:
    assert scan_buffer(_npy(np.arange(5), version), "a.npy").findings == []


def test_benign_object_array_is_medium_only() -> None:
    report = scan_buffer(_npy(np.array([1, "a", None], dtype=object)), "o.npy")
    assert _rules(report) == {"numpy.object-array"}
    assert report.max_severity == Severity.MEDIUM
    assert any(f.endswith("<object payload>=pickle") for f in report.checked[0].detail["formats"])


def test_malicious_object_payload_is_critical(marker_dir: Path) -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    blob = _handmade(header.ljust(117) + "\n", marker_pickle(str(marker_dir / "m"), protocol=3))
    report = scan_buffer(blob, "o.npy")
    assert "numpy.object-array" in _rules(report)
    assert report.max_severity == Severity.CRITICAL


def test_object_field_inside_a_structured_dtype() -> None:
    report = scan_buffer(_npy(np.zeros(2, dtype=[("x", "<i4"), ("o", "O")])), "s.npy")
    assert "numpy.object-array" in _rules(report)


@pytest.mark.parametrize(
    "header",
    [
        "[1, 2, 3]",
        "{'descr': '<f4', 'shape': (2,)}",
        "{'descr': '<f4', 'fortran_order': 'yes', 'shape': (2,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
        "{'descr': 'not-a-dtype', 'fortran_order': False, 'shape': (2,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': __import__('os')}",
    ],
)
def test_malformed_headers(header: str) -> None:
    report = scan_buffer(_handmade(header + "\n", b"\0" * 8), "bad.npy")
    assert "numpy.malformed-header" in _rules(report)
    assert report.max_severity == Severity.MEDIUM


def test_unknown_version_with_a_pickle_payload_is_still_scanned(marker_dir: Path) -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n"
    blob = _handmade(header, marker_pickle(str(marker_dir / "m")), major=9)
    report = scan_buffer(blob, "v9.npy")
    assert "numpy.malformed-header" in _rules(report)
    assert report.max_severity == Severity.CRITICAL


def test_payload_size_checks(marker_dir: Path) -> None:
    good = _npy(np.arange(4, dtype=np.int64))
    assert "numpy.size-mismatch" in _rules(scan_buffer(good[:-3], "short.npy"))
    report = scan_buffer(good + marker_pickle(str(marker_dir / "m")), "tail.npy")
    assert "numpy.size-mismatch" in _rules(report)
    assert report.max_severity == Severity.CRITICAL  # the hidden tail was scanned


def test_oversized_header_numpy_would_refuse() -> None:
    header = "{'descr': '<u1', 'fortran_order': False, 'shape': (2,), }".ljust(20_000) + "\n"
    report = scan_buffer(_handmade(header, b"\0\0", major=2), "big.npy")
    assert "numpy.malformed-header" in _rules(report)


def test_parse_descr_sizes() -> None:
    assert npy_format.parse_descr("<U10").itemsize == 40
    assert npy_format.parse_descr([("a", "<f8", (2, 3)), ("b", "|V4")]).itemsize == 52
    assert npy_format.parse_descr("f8,i4").itemsize == 12
    assert npy_format.parse_descr([("n", [("o", "|O")])]).has_object
    with pytest.raises(ValueError):
        npy_format.parse_descr({"names": ["a"]})


def test_header_past_the_parse_limit_is_a_limit_finding() -> None:
    header = "{'descr': '<u1', 'fortran_order': False, 'shape': (2,), }".ljust(5000) + "\n"
    limits = replace(DEFAULT_LIMITS, npy_header_bytes=4096)
    report = scan_buffer(_handmade(header, b"\0\0", major=2), "big.npy", limits=limits)
    assert [f.evidence.get("limit") for f in report.at_least(Severity.HIGH)] == ["npy_header_bytes"]
