"""Fuzzing the container parsers: mutated zips, checkpoints and archives never escape scan_buffer.

Every mutant must come back as a Report (parser failures are findings), within
the scan's own limits, with bounded memory. The seeds are real artifacts
(torch.save, torch.jit.save, numpy.savez, tar/gzip) and crafted zips.
"""

from __future__ import annotations

import gzip
import io
import lzma
import pickle
import struct
import tarfile
import tracemalloc
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.scan._legacycraft import Storage, legacy_tar, rebuild_tensor
from tests.scan._zipcraft import Entry, build_zip, torch_like
from trainguard.findings import Report
from trainguard.scan import DEFAULT_LIMITS, scan_buffer

MiB = 1 << 20
LIMITS = replace(
    DEFAULT_LIMITS,
    file_seconds=20.0,
    member_bytes=16 * MiB,
    total_decompressed_bytes=48 * MiB,
    decompression_slack_bytes=1 * MiB,
    decoder_memory_bytes=32 * MiB,
    archive_members=2_000,
)
#: The formats whose parsers this fuzzes.
CONTAINERS = {"torch_zip", "zip", "npz", "numpy", "tar", "torch_tar", "compressed"}
#: Peak allocation one mutant may cause: the limits above, plus the scanner's own state.
PEAK_BYTES = 160 * MiB


def _seeds() -> list[bytes]:
    out = []
    buf = io.BytesIO()
    torch.save({"w": torch.randn(8, 4), "i": torch.arange(3), "opt": {"lr": 0.1}}, buf)
    out.append(buf.getvalue())

    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) + 1

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buf)
    out.append(buf.getvalue())
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.arange(50.0), o=np.array([1, "x"], dtype=object))
    out.append(buf.getvalue())
    out.append(
        build_zip(
            [
                *torch_like(pickle.dumps({"a": 1}, protocol=2)),
                Entry("archive/x.txt", b"hello " * 50, method=8),
            ],
            zip64=True,
            comment=b"c",
        )
    )
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tar:
        info = tarfile.TarInfo("model.pt")
        info.size = len(out[0])
        tar.addfile(info, io.BytesIO(out[0]))
    out.append(gzip.compress(tar_buf.getvalue()))
    out.append(legacy_tar(rebuild_tensor(0, 3), [Storage(0, b"\0" * 12)]))
    buf = io.BytesIO()
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        with zipfile.ZipFile(buf, "a", compression=method) as zf:
            zf.writestr(f"m{method}.pkl", pickle.dumps(list(range(50)), protocol=4))
    out.append(buf.getvalue())
    # An LZ4 frame: a literal run, a back-reference, then the end mark.
    block = b"\x35abc\x03\x00" + b"\x40" + b"tail"
    out.append(b"\x04\x22\x4d\x18\x60\x40\x00" + struct.pack("<I", len(block)) + block + b"\0" * 4)
    out.append(lzma.compress(out[-3]))
    return out


SEEDS = _seeds()


@st.composite
def mutants(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            # Header fields are where parsers break: sizes, counts, offsets, lengths.
            width = draw(st.sampled_from([1, 2, 4]))
            value = draw(
                st.sampled_from(
                    [0, 1, 0x7F, 0xFF, 0xFFFF, 0xFFFFFFFF, draw(st.integers(0, 2**32 - 1))]
                )
            )
            data[pos : pos + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 256))]
    return bytes(data)


def _scan_bounded(blob: bytes) -> Report:
    tracemalloc.start()
    try:
        report = scan_buffer(blob, "mutant", limits=LIMITS)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"peak allocation {peak} bytes"
    return report


@pytest.mark.slow
@pytest.mark.timeout(900)
@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(blob=mutants())
def test_mutated_containers_never_escape_the_scanner(blob: bytes) -> None:
    report = _scan_bounded(blob)
    assert len(report.checked) == 1
    # Damage must be diagnosed by the container parsers, not surface as their crash.
    crashes = [
        f.message
        for f in report.findings
        if f.rule == "format.parse-error" and f.evidence.get("format") in CONTAINERS
    ]
    assert crashes == []


def test_every_seed_is_a_container_the_scanner_recognises() -> None:
    kinds = [scan_buffer(seed, "seed", limits=LIMITS).checked[0].kind for seed in SEEDS]
    assert kinds == [
        "torch_zip",
        "torch_zip",
        "npz",
        "torch_zip",
        "compressed",
        "torch_tar",
        "zip",
        "compressed",
        "compressed",
    ]
