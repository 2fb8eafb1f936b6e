"""Generic tar archives and torch's legacy tar checkpoint format."""

from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.scan._legacycraft import Storage, legacy_tar, rebuild_tensor, storages_record
from tests.scan._zipcraft import marker_pickle
from trainguard.findings import Report, Severity
from trainguard.scan import scan_buffer
from trainguard.scan.formats import tar as tar_format
from trainguard.scan.formats import torch_tar

FLOATS = struct.pack("<3f", 1.0, 2.0, 3.0)


def _tar(*members: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _rules(report: Report, at_least: Severity = Severity.INFO) -> set[str]:
    return {f.rule for f in report.at_least(at_least)}


def test_benign_model_tarball_members_are_scanned() -> None:
    report = scan_buffer(
        _tar(("model/config.json", b'{"a": 1}\n'), ("model/w.pkl", pickle.dumps([1, 2]))), "m.tar"
    )
    assert report.at_least(Severity.MEDIUM) == []
    formats = report.checked[0].detail["formats"]
    assert formats[0].endswith("=tar") and any(f.endswith("w.pkl=pickle") for f in formats)


def test_malicious_member_is_critical(marker_dir: Path) -> None:
    report = scan_buffer(_tar(("model/w.bin", marker_pickle(str(marker_dir / "m")))), "m.tar")
    assert report.max_severity == Severity.CRITICAL


@pytest.mark.parametrize(
    ("member", "rule", "severity"),
    [
        (("../../etc/cron.d/x", b"* * * * * root true\n"), "tar.unsafe-path", Severity.HIGH),
        (("/abs/path", b"x"), "tar.unsafe-path", Severity.HIGH),
        (_link("weights.bin", "/home/user/.ssh/id_rsa"), "tar.unsafe-path", Severity.HIGH),
        (_link("weights.bin", "../../outside"), "tar.unsafe-path", Severity.HIGH),
        (_link("alias.bin", "weights.bin"), "tar.link", Severity.MEDIUM),
        (_link("hard.bin", "weights.bin", tarfile.LNKTYPE), "tar.link", Severity.MEDIUM),
    ],
)
def test_members_extraction_would_misplace(
    member: tarfile.TarInfo | tuple[str, bytes], rule: str, severity: Severity
) -> None:
    report = scan_buffer(_tar(("weights.bin", b"\0" * 16), member), "m.tar")
    assert {f.severity for f in report.findings if f.rule == rule} == {severity}


def test_special_files_duplicates_and_trailing_data(marker_dir: Path) -> None:
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    blob = _tar(fifo, ("a.txt", b"one\n"), ("a.txt", b"two\n"))
    report = scan_buffer(blob + marker_pickle(str(marker_dir / "m")), "m.tar")
    assert {"tar.special-file", "tar.duplicate-name", "tar.trailing-data"} <= _rules(report)
    assert report.max_severity == Severity.CRITICAL  # the trailing pickle was scanned


def test_damaged_headers_are_not_silently_dropped() -> None:
    blob = bytearray(_tar(("a.txt", b"x" * 600), ("b.txt", b"y")))
    blob[1536 + 148 : 1536 + 156] = b"9999999\0"  # second header's checksum
    report = scan_buffer(bytes(blob), "m.tar")
    # tarfile silently stops at a bad header past the first: what follows is reported.
    assert "tar.trailing-data" in _rules(report)
    blob[148:156] = b"9999999\0"
    assert scan_buffer(bytes(blob), "m.tar").checked[0].kind != "tar"


def test_header_tarfile_gives_up_on_is_corrupt() -> None:
    def header(name: str, kind: bytes, data: bytes) -> bytes:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(data)
        return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)

    # A GNU long-name record must be followed by a valid header; garbage makes tarfile raise.
    blob = header("ok", tarfile.REGTYPE, b"fine") + header(
        "././@LongLink", tarfile.GNUTYPE_LONGNAME, b"x\0"
    )
    report = scan_buffer(blob + b"\x01" * 512 + b"\0" * 1024, "m.tar")
    assert "tar.corrupt" in _rules(report)


def test_tar_that_is_also_a_pickle(marker_dir: Path) -> None:
    payload = f"cposix\nsystem\n(S'touch {marker_dir / 'm'}'\ntR.".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(payload.decode())  # the name field holds the pickle
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    report = scan_buffer(buf.getvalue(), "poly.tar")
    assert report.checked[0].kind == "tar"
    assert "tar.polyglot" in _rules(report)
    assert report.max_severity == Severity.CRITICAL


def test_detect_by_checksum_not_extension() -> None:
    assert tar_format.detect(memoryview(_tar(("a", b"b"))), None)
    assert not tar_format.detect(memoryview(b"\0" * 1024), None)
    assert not tar_format.detect(memoryview(b"x" * 1024), "model.tar")


def _torch_load(path: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys, torch; print(torch.load(sys.argv[1], weights_only=False))"
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=path.parent,
    )


@pytest.mark.slow
def test_legacy_checkpoint_generator_is_what_torch_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    path.write_bytes(legacy_tar(rebuild_tensor(0, 3), [Storage(0, FLOATS)]))
    result = _torch_load(path)
    assert result.returncode == 0 and "tensor([1., 2., 3.])" in result.stdout, result.stderr


def test_benign_legacy_checkpoint_is_clean() -> None:
    report = scan_buffer(legacy_tar(rebuild_tensor(0, 3), [Storage(0, FLOATS)]), "legacy.pt")
    assert report.checked[0].kind == "torch_tar"
    assert report.at_least(Severity.MEDIUM) == []
    formats = report.checked[0].detail["formats"]
    assert {
        "pickle=pickle",
        "storages:count=pickle",
        "storages:entry0=pickle",
        "storages:views=pickle",
    } <= {f.split("::")[-1] for f in formats}


@pytest.mark.parametrize("where", ["pickle", "storages-count", "storages-entry", "tensors-entry"])
def test_payload_in_any_pickle_torch_reads_is_critical(where: str, marker_dir: Path) -> None:
    evil = marker_pickle(str(marker_dir / "m"))
    main = pickle.dumps({"a": 1}, protocol=2)
    kwargs: dict[str, bytes] = {}
    if where == "pickle":
        main = evil
    elif where == "storages-count":
        kwargs["storages_blob"] = storages_record([], count=evil)
    elif where == "storages-entry":
        blob = storages_record([Storage(0, FLOATS)])
        kwargs["storages_blob"] = blob.replace(blob[2 + 2 : blob.index(b"\x87.") + 2], evil[2:], 1)
    else:
        kwargs["tensors_blob"] = (
            pickle.dumps(1, protocol=2) + evil + struct.pack("<ii", 1, 0) + b"\0" * 24
        )
    report = scan_buffer(legacy_tar(main, **kwargs), "legacy.pt")
    assert report.max_severity == Severity.CRITICAL


@pytest.mark.slow
def test_payload_in_storage_count_really_runs_under_torch_load(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "legacy.pt"
    path.write_bytes(
        legacy_tar(
            pickle.dumps({"a": 1}, protocol=2),
            storages_blob=storages_record([], count=marker_pickle(str(marker))),
        )
    )
    _torch_load(path)
    assert marker.exists()  # a scanner reading only the 'pickle' record misses this


def test_structure_past_the_record_and_duplicates() -> None:
    broken = storages_record([Storage(0, FLOATS)])[:-10]
    report = scan_buffer(legacy_tar(pickle.dumps(1, protocol=2), storages_blob=broken), "legacy.pt")
    assert "torch.tar-structure" in _rules(report, Severity.HIGH)
    dup = legacy_tar(pickle.dumps(1, protocol=2), extra=[("pickle", pickle.dumps(2, protocol=2))])
    assert "torch.tar-duplicate" in _rules(scan_buffer(dup, "legacy.pt"), Severity.HIGH)


def test_detect_needs_the_legacy_records() -> None:
    assert torch_tar.detect(memoryview(legacy_tar(pickle.dumps(1, protocol=2))), None)
    assert not torch_tar.detect(memoryview(_tar(("pickle", b"x"))), None)


def test_oversized_pax_header_is_bounded_before_tarfile_reads_it() -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 1 << 32  # tarfile would try to read 4 GiB into memory
    blob = info.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * 2048
    report = scan_buffer(blob, "huge.tar")
    assert [f.evidence.get("limit") for f in report.at_least(Severity.HIGH)] == [
        "json_header_bytes"
    ]
