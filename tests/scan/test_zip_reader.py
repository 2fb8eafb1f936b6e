"""The tolerant zip reader: what torch (miniz) and zipfile would read, and every disagreement."""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import replace

import pytest
import torch

from tests.scan._zipcraft import Entry, build_zip, torch_like
from trainguard.errors import LimitExceeded
from trainguard.findings import Severity
from trainguard.scan._context import ScanContext
from trainguard.scan._zip import Archive, central_names, is_zip, read_archive, read_member
from trainguard.scan.limits import DEFAULT_LIMITS, ScanLimits

PICKLE = b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s."  # {'a': 1}


def _read(blob: bytes, limits: ScanLimits = DEFAULT_LIMITS) -> tuple[Archive, ScanContext]:
    ctx = ScanContext("t.zip", limits)
    return read_archive(memoryview(blob), ctx), ctx


def _rules(ctx: ScanContext) -> dict[str, Severity]:
    return {f.rule: f.severity for f in ctx.findings}


def test_real_checkpoint_parses_clean_and_stored_members_are_zero_copy() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, buf)
    blob = buf.getvalue()
    archive, ctx = _read(blob)
    assert ctx.findings == []
    names = [m.name for m in archive.members]
    assert names[0].endswith("/data.pkl") and any(n.endswith("/data/0") for n in names)
    storage = next(m for m in archive.members if m.name.endswith("/data/0"))
    content = archive.read(storage)
    assert isinstance(content, memoryview) and content.obj is not None
    assert bytes(content) == torch.arange(6.0).numpy().tobytes()
    assert archive.by_name(names[0]) is archive.members[0]


def test_deflate_bzip2_lzma_members_decode() -> None:
    buf = io.BytesIO()
    payload = b"model weights " * 500
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        with zipfile.ZipFile(buf, "a", compression=method) as zf:
            zf.writestr(f"m{method}.bin", payload)
    archive, ctx = _read(buf.getvalue())
    assert [m.method for m in archive.members] == [8, 12, 14]
    assert all(bytes(archive.read(m)) == payload for m in archive.members)
    assert ctx.findings == []


def test_data_descriptors_from_a_streaming_writer_are_not_gaps() -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.data += b
            return len(b)

    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:  # type: ignore[arg-type]
        zf.writestr("a.txt", b"hello " * 100)
        zf.writestr("b.txt", b"world")
    archive, ctx = _read(bytes(sink.data))
    assert all(m.flags & 0x08 for m in archive.members)
    assert [bytes(archive.read(m)) for m in archive.members] == [b"hello " * 100, b"world"]
    assert ctx.findings == []


def test_name_mismatch_is_high_and_the_central_name_is_used() -> None:
    blob = build_zip(torch_like(PICKLE, local_name="archive/datap.kl"))
    archive, ctx = _read(blob)
    assert _rules(ctx)["zip.name-mismatch"] == Severity.HIGH
    member = archive.by_name("archive/data.pkl")
    assert member is not None and bytes(archive.read(member)) == PICKLE


@pytest.mark.parametrize(
    ("name", "data", "severity"),
    [("archive/data.pkl", PICKLE, Severity.HIGH), ("notes.txt", b"plain text", Severity.MEDIUM)],
)
def test_crc_mismatch_severity_depends_on_pickle(
    name: str, data: bytes, severity: Severity
) -> None:
    archive, ctx = _read(build_zip([Entry(name, data, crc=0x1234)]))
    assert bytes(archive.read(archive.members[0])) == data  # torch ignores the CRC: so do we
    assert _rules(ctx)["zip.crc-mismatch"] == severity


def test_duplicates_exact_and_case_folded_keep_every_copy() -> None:
    blob = build_zip(
        [
            Entry("a/data.pkl", PICKLE),
            Entry("a/data.pkl", b"\x80\x02K\x07."),
            Entry("a/DATA.pkl", b"x"),
        ]
    )
    archive, ctx = _read(blob)
    assert len(archive.members) == 3
    dup = [f for f in ctx.findings if f.rule == "zip.duplicate-name"]
    assert len(dup) == 1 and dup[0].severity == Severity.HIGH and len(dup[0].evidence["names"]) == 2
    assert archive.by_name("a/data.pkl") is archive.members[0]  # miniz's pick: the first


def test_hidden_local_entry_is_found_and_readable() -> None:
    blob = build_zip(
        [*torch_like(PICKLE), Entry("archive/hidden.pkl", b"\x80\x02K\x05.", in_central=False)]
    )
    archive, ctx = _read(blob)
    hidden = [m for m in archive.members if m.source == "local-only"]
    assert [m.name for m in hidden] == ["archive/hidden.pkl"]
    assert bytes(archive.read(hidden[0])) == b"\x80\x02K\x05."
    assert _rules(ctx)["zip.hidden-entry"] == Severity.HIGH


def test_local_entry_hidden_in_a_gap_between_members() -> None:
    hidden = build_zip([Entry("x.pkl", PICKLE)])
    local_only = hidden[: hidden.index(b"PK\x01\x02")]
    blob = build_zip([Entry("a.txt", b"aaa"), Entry("b.txt", b"bbb", gap=b"JUNK" + local_only)])
    archive, ctx = _read(blob)
    assert "x.pkl" in [m.name for m in archive.members if m.source == "local-only"]
    assert "zip.hidden-entry" in _rules(ctx)


def test_end_record_count_disagreeing_with_the_directory() -> None:
    archive, ctx = _read(build_zip(torch_like(PICKLE), eocd_count=2))
    assert archive.declared_count == 2 and len(archive.members) == 3
    assert _rules(ctx)["zip.ambiguous-directory"] == Severity.HIGH


def test_end_signature_in_the_comment_tail_confuses_zipfile_not_miniz() -> None:
    blob = build_zip(torch_like(PICKLE), comment=b"x" * 10 + b"PK\x05\x06")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(blob))
    archive, ctx = _read(blob)
    assert len(archive.members) == 3
    assert "zip.ambiguous-directory" in _rules(ctx)


def test_prefix_and_trailing_bytes_are_unaccounted_and_kept_for_scanning() -> None:
    blob = build_zip(torch_like(PICKLE), prefix=b"#!/bin/sh\nexit 0\n", trailer=b"TAIL")
    archive, ctx = _read(blob)
    assert len(archive.members) == 3 and bytes(archive.read(archive.members[0])) == PICKLE
    assert [bytes(archive.data[s:e]) for s, e in archive.outside] == [
        b"#!/bin/sh\nexit 0\n",
        b"TAIL",
    ]
    wheres = {f.evidence.get("where") for f in ctx.findings if f.rule == "zip.unaccounted-data"}
    assert wheres == {"prefix", "trailing"}


def test_overlapping_entries() -> None:
    blob = bytearray(build_zip([Entry("a.bin", b"A" * 64), Entry("b.bin", b"B" * 64)]))
    cd = blob.index(b"PK\x01\x02")
    second = blob.index(b"PK\x01\x02", cd + 4)
    blob[second + 42 : second + 46] = struct.pack("<I", 0)  # b's record points at a's header
    archive, ctx = _read(bytes(blob))
    assert _rules(ctx)["zip.overlapping-entries"] == Severity.MEDIUM
    # b.bin's own header is now referenced by nothing: a streaming reader still finds it.
    assert [(m.name, m.source) for m in archive.members][2] == ("b.bin", "local-only")
    assert "zip.hidden-entry" in _rules(ctx)


def test_encrypted_flag_and_unknown_method() -> None:
    blob = build_zip(
        [Entry("enc.bin", b"data", flags=0x1), Entry("odd.bin", b"data", method_field=99)]
    )
    archive, ctx = _read(blob)
    rules = _rules(ctx)
    assert (
        rules["zip.encrypted"] == Severity.MEDIUM
        and rules["zip.unsupported-method"] == Severity.MEDIUM
    )
    assert bytes(archive.read(archive.members[0])) == b"data"  # scanned as plain bytes
    assert archive.read(archive.members[1]) == b""


def test_zip64_end_records_and_extra_fields() -> None:
    extra = struct.pack("<HHQQ", 1, 16, 5, 5)
    blob = bytearray(build_zip([Entry("big.bin", b"hello", central_extra=extra)], zip64=True))
    cd = blob.index(b"PK\x01\x02")
    blob[cd + 20 : cd + 28] = b"\xff" * 8  # sizes live in the zip64 extra field
    archive, ctx = _read(bytes(blob))
    assert ctx.findings == []
    assert archive.members[0].size == 5 and bytes(archive.read(archive.members[0])) == b"hello"


def test_missing_end_record_falls_back_to_local_headers() -> None:
    blob = build_zip(torch_like(PICKLE))
    truncated = blob[: blob.index(b"PK\x01\x02")]
    archive, ctx = _read(truncated)
    assert [m.source for m in archive.members] == ["local-only"] * 3
    assert _rules(ctx) == {"zip.no-central-directory": Severity.MEDIUM}
    assert central_names(memoryview(truncated))[0] == b"archive/data.pkl"


def test_corrupt_deflate_stream_reports_and_returns_the_prefix() -> None:
    good = build_zip([Entry("a.bin", b"0123456789" * 100, method=8)])
    blob = bytearray(good)
    start = blob.index(b"a.bin") + 5
    blob[start + 4 : start + 12] = b"\xff" * 8
    archive, ctx = _read(bytes(blob))
    archive.read(archive.members[0])
    assert "zip.corrupt" in _rules(ctx)


def test_member_inflating_past_its_declared_size_is_cut_there() -> None:
    blob = bytearray(build_zip([Entry("a.bin", b"x" * 1000, method=8)]))
    cd = blob.index(b"PK\x01\x02")
    blob[cd + 24 : cd + 28] = struct.pack("<I", 10)  # central size says 10
    archive, ctx = _read(bytes(blob))
    assert bytes(archive.read(archive.members[0])) == b"x" * 10
    assert "zip.corrupt" in _rules(ctx)


def test_zip_bomb_hits_the_ratio_limit_without_inflating_it_all() -> None:
    limits = replace(DEFAULT_LIMITS, decompression_slack_bytes=1 << 20)
    archive, ctx = _read(build_zip([Entry("bomb", b"\0" * (40 << 20), method=8)]), limits)
    with pytest.raises(LimitExceeded) as exc:
        archive.read(archive.members[0])
    assert exc.value.limit == "decompression_ratio"
    assert read_member(archive, archive.members[0]) is None
    assert _rules(ctx)["limit.exceeded"] == Severity.HIGH


def test_member_bytes_and_total_budget_limits() -> None:
    blob = build_zip([Entry("a", b"\x01" * 4096, method=8), Entry("b", b"\x02" * 4096, method=8)])
    archive, _ = _read(blob, replace(DEFAULT_LIMITS, member_bytes=1000))
    with pytest.raises(LimitExceeded, match="member_bytes"):
        archive.read(archive.members[0])
    archive, _ = _read(blob, replace(DEFAULT_LIMITS, total_decompressed_bytes=6000))
    archive.read(archive.members[0])
    with pytest.raises(LimitExceeded, match="total_decompressed_bytes"):
        archive.read(archive.members[1])


def test_member_count_limit() -> None:
    blob = build_zip([Entry(f"m{i}", b"") for i in range(20)])
    with pytest.raises(LimitExceeded, match="archive_members"):
        _read(blob, replace(DEFAULT_LIMITS, archive_members=10))


def test_is_zip_and_names_on_non_zips() -> None:
    assert is_zip(memoryview(build_zip([Entry("a", b"b")], prefix=b"MZ" + b"\0" * 100)))
    assert not is_zip(memoryview(b"\x80\x02K\x01." * 100))
    assert central_names(memoryview(b"not a zip")) == []


def test_lzma_member_asking_for_a_huge_dictionary_is_refused_before_allocation() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_LZMA) as zf:
        zf.writestr("m.bin", b"data" * 100)
    blob = bytearray(buf.getvalue())
    props = blob.index(b"m.bin") + 5 + 4  # after the name: version (2), size (2), then props
    blob[props + 1 : props + 5] = (1 << 31).to_bytes(4, "little")
    archive, ctx = _read(bytes(blob))
    assert read_member(archive, archive.members[0]) is None
    assert [f.evidence.get("limit") for f in ctx.findings] == ["decoder_memory_bytes"]
