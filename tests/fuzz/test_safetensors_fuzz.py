"""Fuzz the safetensors parser against the reference implementation (the safetensors crate).

Properties: ``scan_buffer`` never raises out and never hangs on mutated headers, and whenever
the crate refuses a buffer, the scan reports a finding at or above MEDIUM (no silent pass).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.findings import Severity
from trainguard.scan import scan_buffer

safetensors = pytest.importorskip("safetensors")
from safetensors import deserialize  # noqa: E402
from safetensors.numpy import save  # noqa: E402

BASE = bytes(
    save(
        {
            "embed.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
            "norm.bias": np.zeros(4, dtype=np.float16),
            "ids": np.arange(3, dtype=np.int64),
        },
        metadata={"format": "pt"},
    )
)
HEADER_END = 8 + int.from_bytes(BASE[:8], "little")
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _crate_accepts(data: bytes) -> bool:
    try:
        deserialize(data)
    except Exception:  # any refusal by the reference parser
        return False
    return True


def _check(data: bytes) -> None:
    report = scan_buffer(data, "fuzz.safetensors", filename="fuzz.safetensors")  # never raises
    if not _crate_accepts(data):
        assert report.max_severity is not None and report.max_severity >= Severity.MEDIUM, (
            data[: HEADER_END + 8],
            [(f.rule, f.message) for f in report.findings],
        )


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, HEADER_END - 1), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_byte_mutations_in_the_header(edits: list[tuple[int, int]]) -> None:
    data = bytearray(BASE)
    for pos, value in edits:
        data[pos] = value
    _check(bytes(data))


@SETTINGS
@given(st.integers(0, len(BASE)), st.binary(max_size=64))
def test_truncation_and_appended_bytes(cut: int, tail: bytes) -> None:
    _check(BASE[:cut] + tail)


@SETTINGS
@given(st.integers(8, HEADER_END), st.binary(min_size=1, max_size=16))
def test_insertions_into_the_header_json(pos: int, blob: bytes) -> None:
    data = bytearray(BASE[:pos] + blob + BASE[pos:])
    data[:8] = struct.pack("<Q", HEADER_END - 8 + len(blob))  # keep the length consistent
    _check(bytes(data))


_DTYPES = [
    "F32",
    "F16",
    "BF16",
    "I64",
    "U8",
    "BOOL",
    "F4",
    "F6_E2M3",
    "C64",
    "F8_E8M0",
    "X9",
    "f32",
]
_ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(_DTYPES),
        "shape": st.lists(st.one_of(st.integers(-2, 6), st.just(2**40), st.just(1.5)), max_size=3),
        "data_offsets": st.lists(st.integers(-1, 80), min_size=1, max_size=3),
    }
)


@SETTINGS
@given(
    st.dictionaries(st.text(min_size=1, max_size=6), _ENTRY, max_size=4),
    st.integers(0, 96),
    st.sampled_from([b"", b" ", b"\n", b"\x00"]),
)
def test_generated_headers(
    tensors: dict[str, dict[str, object]], data_len: int, pad: bytes
) -> None:
    header = json.dumps(tensors).encode() + pad
    _check(struct.pack("<Q", len(header)) + header + bytes(data_len))
