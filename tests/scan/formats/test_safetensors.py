"""safetensors: real files from the library stay clean; every malformed header is a finding."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from trainguard.findings import Report, Severity
from trainguard.scan import ScanLimits, scan_buffer
from trainguard.scan.formats import safetensors as st_format

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _file(header: dict[str, object] | bytes, data: bytes = b"", *, pad: bool = True) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def _rules(report: Report) -> dict[str, Severity]:
    return {f.rule: f.severity for f in report.findings}


def _library_accepts(data: bytes) -> bool:
    from safetensors import deserialize

    try:
        deserialize(data)
    except Exception:  # the reference parser's verdict
        return False
    return True


def test_library_written_files_are_clean() -> None:
    tensors = {
        "embed.weight": np.arange(24, dtype=np.float32).reshape(4, 6),
        "norm.bias": np.zeros(6, dtype=np.float16),
        "ids": np.arange(5, dtype=np.int64),
        "mask": np.ones((2, 2), dtype=np.bool_),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    data = safetensors_numpy.save(tensors, metadata={"format": "pt", "note": "x"})
    assert st_format.detect(memoryview(data), "model.safetensors")
    report = scan_buffer(data, "model.safetensors")
    assert report.checked[0].kind == "safetensors"
    assert report.findings == []


def test_torch_written_file_with_every_dtype_is_clean() -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save

    base = torch.arange(8, dtype=torch.float32)
    dtypes = [
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int8,
        torch.uint8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
        torch.complex64,
        torch.uint16,
        torch.uint32,
        torch.uint64,
    ]
    data = save({str(dt): base.to(dt) for dt in dtypes})
    assert scan_buffer(data, "t.safetensors").findings == []


def test_sub_byte_dtypes_follow_the_crate() -> None:
    ok = _file({"a": _entry("F4", [4], 0, 2)}, b"\0\0")
    assert _library_accepts(ok) and scan_buffer(ok).findings == []
    odd = _file({"a": _entry("F4", [3], 0, 2)}, b"\0\0")  # 12 bits: not whole bytes
    assert not _library_accepts(odd)
    assert _rules(scan_buffer(odd)) == {"safetensors.tensor": Severity.HIGH}


@pytest.mark.parametrize(
    ("name", "data", "rule"),
    [
        ("trailing bytes", _file({"a": _entry("F32", [2], 0, 8)}, bytes(9)), "safetensors.layout"),
        ("truncated data", _file({"a": _entry("F32", [2], 0, 8)}, bytes(7)), "safetensors.layout"),
        (
            "gap before the first tensor",
            _file({"a": _entry("F32", [2], 4, 12)}, bytes(12)),
            "safetensors.layout",
        ),
        (
            "overlap",
            _file({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [1], 4, 8)}, bytes(8)),
            "safetensors.layout",
        ),
        (
            "gap between tensors (a smuggled payload)",
            _file({"a": _entry("F32", [1], 0, 4), "b": _entry("F32", [1], 12, 16)}, bytes(16)),
            "safetensors.layout",
        ),
        ("size mismatch", _file({"a": _entry("F32", [3], 0, 8)}, bytes(8)), "safetensors.tensor"),
        (
            "unknown dtype",
            _file({"a": _entry("F128", [1], 0, 16)}, bytes(16)),
            "safetensors.tensor",
        ),
        ("negative dim", _file({"a": _entry("F32", [-2], 0, 8)}, bytes(8)), "safetensors.tensor"),
        (
            "float dim",
            _file({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, bytes(8)),
            "safetensors.tensor",
        ),
        (
            "bool dim",
            _file({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, bytes(1)),
            "safetensors.tensor",
        ),
        ("end before begin", _file({"a": _entry("U8", [0], 8, 0)}, bytes(8)), "safetensors.tensor"),
        (
            "three offsets",
            _file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}, bytes(1)),
            "safetensors.tensor",
        ),
        (
            "missing shape",
            _file({"a": {"dtype": "U8", "data_offsets": [0, 1]}}, bytes(1)),
            "safetensors.tensor",
        ),
        (
            "overflowing shape",
            _file({"a": _entry("F64", [2**62, 2**62], 0, 8)}, bytes(8)),
            "safetensors.tensor",
        ),
        ("entry not an object", _file({"a": [1, 2]}, b""), "safetensors.tensor"),
        ("metadata not str->str", _file({"__metadata__": {"x": 1}}, b""), "safetensors.header"),
        ("header is a list", _file(b"[1, 2]"), "safetensors.header"),
        ("invalid JSON", _file(b'{"a": '), "safetensors.header"),
        (
            "NUL padding",
            _file(
                json.dumps({"a": _entry("U8", [1], 0, 1)}).encode() + b"\0\0\0", bytes(1), pad=False
            ),
            "safetensors.header",
        ),
        ("not UTF-8", _file(b'{"\xff": 1}'), "safetensors.header"),
    ],
)
def test_malformed_is_a_finding_the_crate_agrees_with(name: str, data: bytes, rule: str) -> None:
    assert not _library_accepts(data), name  # the reference loader refuses it too
    report = scan_buffer(data, "bad.safetensors")
    assert report.checked[0].kind == "safetensors"
    rules = _rules(report)
    assert rule in rules, rules
    assert rules[rule] >= Severity.HIGH


def test_duplicate_keys_are_reported_although_the_crate_accepts_them() -> None:
    # serde_json keeps the last "a", other JSON parsers the first: two loaders, two models.
    data = _file(
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
        b'"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}',
        bytes(2),
    )
    assert _library_accepts(data)
    assert _rules(scan_buffer(data, "dup.safetensors")) == {"safetensors.header": Severity.HIGH}
    nested = _file(b'{"__metadata__": {"k": "1", "k": "2"}}')
    assert _rules(scan_buffer(nested)) == {"safetensors.header": Severity.HIGH}


def test_header_length_past_the_file_and_past_the_cap() -> None:
    past_end = struct.pack("<Q", 64) + b'{"a": 1}'
    assert not st_format.detect(memoryview(past_end), None)  # not even a safetensors candidate
    report = scan_buffer(past_end, "x.safetensors")
    assert (
        report.findings
        and report.max_severity is not None
        and report.max_severity >= Severity.MEDIUM
    )

    ctx_data = memoryview(struct.pack("<Q", 100_000_001) + b"{}")
    from trainguard.scan._context import ScanContext

    ctx = ScanContext("big.safetensors", ScanLimits())
    st_format.scan(ctx_data, ctx)
    assert [f.rule for f in ctx.findings] == ["safetensors.header"]


def test_header_over_the_scan_limit_is_a_limit_finding() -> None:
    data = _file({"a": _entry("U8", [1], 0, 1)}, bytes(1))
    report = scan_buffer(data, "x.safetensors", limits=ScanLimits(json_header_bytes=16))
    assert [f.rule for f in report.findings] == ["limit.exceeded"]


def test_unusual_but_accepted_headers_are_low() -> None:
    leading = _file(b"  " + json.dumps({"a": _entry("U8", [1], 0, 1)}).encode(), bytes(1))
    extra = _file({"a": {**_entry("U8", [1], 0, 1), "note": "hi"}}, bytes(1))
    for data in (leading, extra):
        assert _library_accepts(data)
        report = scan_buffer(data, "odd.safetensors")
        assert _rules(report) == {"safetensors.unusual": Severity.LOW}
