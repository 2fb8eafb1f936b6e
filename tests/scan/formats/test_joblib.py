"""joblib files: inline array bytes are skipped, object arrays and tampering are scanned."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from tests.scan.pickle._samples import call_pickle
from trainguard.findings import Report, Severity
from trainguard.scan import scan_buffer, scan_paths
from trainguard.scan.formats import joblib as joblib_format

joblib = pytest.importorskip("joblib")
np = pytest.importorskip("numpy")


class Payload:
    """Pickles as ``os.system(command)``; only ever dumped here, never loaded."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return os.system, (self.command,)


def dump(tmp_path: Path, value: Any, **kwargs: Any) -> Path:
    path = tmp_path / "model.joblib"
    joblib.dump(value, path, **kwargs)
    return path


def rules(report: Report) -> set[str]:
    return {f.rule for f in report.findings}


def arrays() -> dict[str, Any]:
    return {
        "f8": np.arange(7, dtype="f8"),
        "i1": np.arange(5, dtype="i1"),
        "bool": np.array([True, False]),
        "fortran": np.ones((3, 4), order="F"),
        "unicode": np.array(["ab", "cde"]),
        "bytes": np.array([b"x", b"yz"]),
        "struct": np.zeros(3, dtype=[("a", "f4"), ("b", "i8")]),
        "subarray": np.zeros(2, dtype=("f4", (2, 3))),
        "datetime": np.array(["2024-01-01"], dtype="M8[D]"),
        "big_endian": np.arange(3, dtype=">f8"),
        "complex": np.ones(2, dtype="c16"),
        "empty": np.zeros((0, 5)),
        "scalar_shape": np.array(3.0),
        "large": np.random.default_rng(0).random(50_000),
        "objects": np.array([1, "two", (3,)], dtype=object),
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_benign_joblib_files_are_only_low(tmp_path: Path, protocol: int) -> None:
    path = dump(tmp_path, arrays(), protocol=protocol)
    report = scan_paths([path])
    assert report.checked[0].kind == "joblib"
    assert {f.severity for f in report.findings} <= {Severity.LOW}
    assert rules(report) <= {"pickle.non-weights-global"}


def test_detect_needs_the_wrapper_marker(tmp_path: Path) -> None:
    path = dump(tmp_path, {"a": np.arange(3)})
    assert joblib_format.detect(memoryview(path.read_bytes()), None)
    assert not joblib_format.detect(memoryview(pickle.dumps({"a": 1})), None)


def test_malicious_object_in_object_array_is_found(tmp_path: Path, marker_dir: Path) -> None:
    value = {
        "arr": np.array([Payload(f"touch {marker_dir}/m")], dtype=object),
        "after": np.arange(3),
    }
    report = scan_paths([dump(tmp_path, value)])
    assert "pickle.dangerous-global" in rules(report)


def test_malicious_object_after_arrays_is_found(tmp_path: Path, marker_dir: Path) -> None:
    value = [np.arange(100), Payload(f"touch {marker_dir}/m")]
    report = scan_paths([dump(tmp_path, value)])
    assert "pickle.dangerous-global" in rules(report)
    assert not {"pickle.unknown-opcode", "pickle.truncated"} & rules(report)


def test_array_bytes_that_are_a_pickle_are_a_polyglot(tmp_path: Path, marker_dir: Path) -> None:
    payload = call_pickle("os", "system", [f"touch {marker_dir}/m"], proto=2)
    # uint8 array data that is, byte for byte, a malicious pickle.
    data = np.frombuffer(payload + b"\x00" * 16, dtype="u1").copy()
    path = dump(tmp_path, {"a": data})
    raw = path.read_bytes()
    assert payload in raw
    report = scan_buffer(raw, "poly.joblib")
    assert "joblib.array-polyglot" in rules(report)


def test_truncated_array_data_is_reported(tmp_path: Path) -> None:
    raw = dump(tmp_path, {"a": np.arange(1000, dtype="f8")}).read_bytes()
    report = scan_buffer(raw[:-100], "cut.joblib")
    assert {"joblib.array-data", "pickle.truncated"} & rules(report)


def test_joblib_scanned_as_plain_pickle_fails_closed(tmp_path: Path) -> None:
    from trainguard.scan._context import ScanContext
    from trainguard.scan.limits import ScanLimits
    from trainguard.scan.pickle import scan_pickle

    raw = dump(tmp_path, {"a": np.arange(1000, dtype="f8")}).read_bytes()
    ctx = ScanContext("x", ScanLimits())
    scan_pickle(raw, ctx)  # without joblib_arrays the raw bytes are read as opcodes
    assert any(f.severity >= Severity.HIGH for f in ctx.findings)
