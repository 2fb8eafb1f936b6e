"""Compressed streams (gzip, bzip2, xz, lzma, zlib, LZ4): decompressed under limits, then scanned."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
import pytest

from tests.scan._zipcraft import marker_pickle
from trainguard.findings import Report, Severity
from trainguard.scan import DEFAULT_LIMITS, scan_buffer
from trainguard.scan._lz4 import Lz4FrameDecoder
from trainguard.scan.formats import compressed


def _rules(report: Report) -> set[str]:
    return {f.rule for f in report.findings}


def _literals(data: bytes) -> bytes:
    """An LZ4 sequence carrying only literals (the last sequence of every block)."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    rest = n - 15
    return b"\xf0" + b"\xff" * (rest // 255) + bytes([rest % 255]) + data


def _lz4_frame(*blocks: bytes, stored: tuple[int, ...] = (), linked: bool = False) -> bytes:
    flags = 0x40 if linked else 0x60  # version 01, block independence unless linked
    out = bytearray(b"\x04\x22\x4d\x18" + bytes([flags, 0x40, 0]))  # 64 KiB blocks, HC unchecked
    for i, block in enumerate(blocks):
        out += struct.pack("<I", len(block) | (0x80000000 if i in stored else 0)) + block
    return bytes(out + b"\0\0\0\0")


def _lz4_literals(data: bytes) -> bytes:
    return _lz4_frame(*(_literals(data[i : i + 60_000]) for i in range(0, len(data), 60_000)))


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


COMPRESSORS = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "zlib": _zlib,
    "lz4": _lz4_literals,
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_payload_inside_each_compression_is_critical(kind: str, marker_dir: Path) -> None:
    report = scan_buffer(COMPRESSORS[kind](marker_pickle(str(marker_dir / "m"))), "x.pkl.z")
    assert report.checked[0].kind == "compressed"
    assert f"x.pkl.z::<{kind}>=pickle" in report.checked[0].detail["formats"]
    assert report.max_severity == Severity.CRITICAL


@pytest.mark.parametrize("method", ["zlib", "gzip", "bz2", "lzma", "xz"])
def test_joblib_compressed_files_decompress_cleanly(method: str) -> None:
    buf = io.BytesIO()
    joblib.dump({"weights": np.arange(100.0), "meta": [1, 2]}, buf, compress=(method, 3))
    report = scan_buffer(buf.getvalue(), f"model.joblib.{method}")
    assert report.checked[0].kind == "compressed"
    assert not {r for r in _rules(report) if r.startswith("compressed.")}


def test_lz4_matches_overlaps_linked_and_stored_blocks() -> None:
    first = b"\x35abc" + b"\x03\x00" + _literals(b"xyz")  # 'abc' + copy of 9 from offset 3
    second = b"\x20\x2d\x2d" + b"\x0b\x00" + _literals(b"!")  # '--' + 4 bytes from 11 back
    frame = _lz4_frame(first, b"RAW", second, stored=(1,), linked=True)
    decoder = Lz4FrameDecoder()
    out = decoder.decompress(frame, 1 << 20)
    while not decoder.eof:  # one block per call, like the stdlib decompressors' max_length
        out += decoder.decompress(b"", 1 << 20)
    assert out == b"abcabcabcabcxyz" + b"RAW" + b"--" + b"abcx" + b"!"


def test_lz4_rejects_references_before_the_start() -> None:
    decoder = Lz4FrameDecoder()
    with pytest.raises(ValueError):
        decoder.decompress(_lz4_frame(b"\x10a\x09\x00"), 1 << 20)


def test_concatenated_gzip_members_form_one_stream(marker_dir: Path) -> None:
    payload = marker_pickle(str(marker_dir / "m"))
    blob = gzip.compress(payload[:20]) + gzip.compress(payload[20:])
    report = scan_buffer(blob, "x.gz")
    assert report.max_severity == Severity.CRITICAL
    assert "compressed.trailing-data" not in _rules(report)


def test_trailing_bytes_are_reported_and_scanned(marker_dir: Path) -> None:
    blob = gzip.compress(b"harmless text\n") + marker_pickle(str(marker_dir / "m"))
    report = scan_buffer(blob, "x.gz")
    assert "compressed.trailing-data" in _rules(report)
    assert report.max_severity == Severity.CRITICAL


def test_truncated_stream_is_reported_and_its_prefix_scanned(marker_dir: Path) -> None:
    blob = bz2.compress(marker_pickle(str(marker_dir / "m")))
    report = scan_buffer(blob[:-8], "x.bz2")
    assert "compressed.corrupt" in _rules(report)


def test_bomb_stops_at_the_ratio_limit() -> None:
    limits = replace(DEFAULT_LIMITS, decompression_slack_bytes=1 << 20)
    report = scan_buffer(gzip.compress(b"\0" * (32 << 20)), "bomb.gz", limits=limits)
    assert [f.evidence.get("limit") for f in report.at_least(Severity.HIGH)] == [
        "decompression_ratio"
    ]


def test_weak_magic_numbers_do_not_capture_text_or_pickles() -> None:
    # zlib's header is two bytes ('x' + check) and .lzma starts with 0x5d, which is the
    # EMPTY_LIST opcode: protocol 0/1 pickles must stay pickles.
    samples = [b"x^2 + y^2 = z^2\n", b"xxxx", b"]\x00\x00\x80\x00 not lzma at all"]
    samples += [pickle.dumps(obj, protocol=p) for obj in ([], [1, 2], ["x"] * 40) for p in (0, 1)]
    for sample in samples:
        assert not compressed.detect(memoryview(sample), None), sample[:16]


def test_lzma_dictionary_larger_than_the_decoder_budget_is_refused() -> None:
    blob = lzma.compress(b"hello" * 100, format=lzma.FORMAT_ALONE)
    huge = blob[:1] + (1 << 31).to_bytes(4, "little") + blob[5:]  # a 2 GiB dictionary
    report = scan_buffer(huge, "x.lzma")
    assert [f.evidence.get("limit") for f in report.at_least(Severity.HIGH)] == [
        "decoder_memory_bytes"
    ]
