"""One test per published (or reproduced) container bypass of peer model scanners.

Each sample is built here, carries a harmless payload (it touches a marker
file) and must come out CRITICAL. Where the point is that torch loads what
zipfile-based scanners reject, a throwaway subprocess proves it; nothing is
ever loaded in the test process.
"""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.scan._legacycraft import legacy_tar, storages_record
from tests.scan._zipcraft import Entry, build_zip, marker_pickle, torch_like
from trainguard.findings import Report, Severity
from trainguard.scan import scan_buffer, scan_paths

BENIGN = b"\x80\x02K\x07."


def _torch_load(path: Path) -> subprocess.CompletedProcess[str]:
    """``torch.load(weights_only=False)`` of ``path`` in a throwaway interpreter."""
    code = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=path.parent,
    )


def _zipfile_rejects(blob: bytes) -> bool:
    """Whether reading every member with Python's zipfile fails (what zipfile-based scanners do)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            for name in zf.namelist():
                zf.read(name)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError):
        return True
    return False


def _rules(report: Report) -> set[str]:
    return {f.rule for f in report.findings}


def _sample(tmp_path: Path, name: str, build: object) -> tuple[Path, Path]:
    marker = tmp_path / f"{name}.ran"
    path = tmp_path / f"{name}.pt"
    path.write_bytes(build(marker_pickle(str(marker))))  # type: ignore[operator]
    return path, marker


# GHSA-7q5r-7gvp-wc82 (CVE-2025-1944): the local header's file name differs from the
# central directory's; zipfile raises BadZipFile, torch (miniz) loads the member.
def test_local_central_name_mismatch_runs_under_torch_and_is_critical(tmp_path: Path) -> None:
    path, marker = _sample(
        tmp_path, "mismatch", lambda p: build_zip(torch_like(p, local_name="archive/datap.kl"))
    )
    assert _zipfile_rejects(path.read_bytes())
    result = _torch_load(path)
    assert marker.exists(), result.stderr  # the payload really runs
    report = scan_paths([path])
    assert report.max_severity == Severity.CRITICAL
    assert "zip.name-mismatch" in _rules(report)


# GHSA-mjqp-26hc-grxg (CVE-2025-10156): a bad CRC stops zipfile; torch is built with
# miniz CRC checks disabled.
@pytest.mark.slow
def test_bad_crc_runs_under_torch_and_is_critical(tmp_path: Path) -> None:
    path, marker = _sample(tmp_path, "crc", lambda p: build_zip(torch_like(p, crc=0xDEADBEEF)))
    assert _zipfile_rejects(path.read_bytes())
    _torch_load(path)
    assert marker.exists()
    report = scan_paths([path])
    assert report.max_severity == Severity.CRITICAL
    assert {f.severity for f in report.findings if f.rule == "zip.crc-mismatch"} == {Severity.HIGH}


# GHSA-w8jq-xcqf-f792 (CVE-2025-1945): encryption/patch flag bits crashed picklescan. The
# torch here refuses such members, but the scan must neither crash nor skip them.
@pytest.mark.parametrize("flags", [0x1, 0x20, 0x40])
def test_flag_bits_neither_crash_nor_hide_the_payload(flags: int, marker_dir: Path) -> None:
    blob = build_zip(torch_like(marker_pickle(str(marker_dir / "m")), flags=flags))
    assert _zipfile_rejects(blob)
    report = scan_buffer(blob, "flags.pt")
    assert report.max_severity == Severity.CRITICAL
    assert "zip.encrypted" in _rules(report)


# No advisory: zipfile lets the last duplicate win, torch the first; a scanner that reads
# the archive through zipfile inspects the benign copy.
@pytest.mark.slow
def test_duplicate_data_pkl_torch_reads_the_first_copy(tmp_path: Path) -> None:
    path, marker = _sample(
        tmp_path, "dup", lambda p: build_zip([*torch_like(p), Entry("archive/data.pkl", BENIGN)])
    )
    with zipfile.ZipFile(path) as zf:
        assert zf.read("archive/data.pkl") == BENIGN  # what a zipfile-based scanner sees
    _torch_load(path)
    assert marker.exists()
    report = scan_paths([path])
    assert report.max_severity == Severity.CRITICAL and "zip.duplicate-name" in _rules(report)


# No advisory: miniz looks records up case-insensitively, so 'DATA.PKL' is unpickled as
# data.pkl while scanners matching the exact name skip it.
@pytest.mark.slow
def test_case_folded_data_pkl_runs_under_torch(tmp_path: Path) -> None:
    path, marker = _sample(
        tmp_path, "case", lambda p: build_zip(torch_like(p, name="archive/DATA.PKL"))
    )
    _torch_load(path)
    assert marker.exists()
    report = scan_paths([path])
    assert report.max_severity == Severity.CRITICAL and "torch.case-folded-record" in _rules(report)


# No advisory: an end-record signature in the archive comment's last bytes makes zipfile
# fail ("File is not a zip file") while miniz finds the real end record.
@pytest.mark.slow
def test_end_record_decoy_in_comment(tmp_path: Path) -> None:
    build = lambda p: build_zip(torch_like(p), comment=b"decoy" + b"PK\x05\x06")  # noqa: E731
    path, marker = _sample(tmp_path, "eocd", build)
    assert _zipfile_rejects(path.read_bytes())
    _torch_load(path)
    assert marker.exists()
    report = scan_paths([path])
    assert report.max_severity == Severity.CRITICAL and "zip.ambiguous-directory" in _rules(report)


# protectai/modelscan#354: one unreadable entry aborted the whole zip walk, so a data.pkl
# after it was never scanned while torch.load reads it by name.
def test_broken_entry_before_data_pkl_does_not_stop_the_scan(marker_dir: Path) -> None:
    entries = [Entry("archive/zz", b"x"), *torch_like(marker_pickle(str(marker_dir / "m")))]
    blob = bytearray(build_zip(entries))
    blob[0:4] = b"XXXX"  # first local header destroyed
    assert _zipfile_rejects(bytes(blob))
    report = scan_buffer(bytes(blob), "broken.pt")
    assert report.max_severity == Severity.CRITICAL and "zip.corrupt" in _rules(report)


# No advisory: the end record declares fewer entries than the directory holds; miniz reads
# the declared count, zipfile walks the directory by size. Every entry must be scanned.
def test_entries_beyond_the_declared_count(marker_dir: Path) -> None:
    blob = build_zip(
        [*torch_like(BENIGN), Entry("archive/late.pkl", marker_pickle(str(marker_dir / "m")))],
        eocd_count=3,
    )
    report = scan_buffer(blob, "count.pt")
    assert report.max_severity == Severity.CRITICAL and "zip.ambiguous-directory" in _rules(report)


# No advisory: a local entry the central directory does not list (streaming readers see it).
def test_hidden_local_entry(marker_dir: Path) -> None:
    blob = build_zip(
        [
            *torch_like(BENIGN),
            Entry("archive/x.pkl", marker_pickle(str(marker_dir / "m")), in_central=False),
        ]
    )
    assert not _zipfile_rejects(blob)
    report = scan_buffer(blob, "hidden.pt")
    assert report.max_severity == Severity.CRITICAL and "zip.hidden-entry" in _rules(report)


# No advisory: a pickle prepended to a zip is what torch.load runs (not a zip at offset 0:
# the legacy path unpickles from the start) while zip-based tools see a clean archive.
@pytest.mark.slow
def test_pickle_zip_polyglot(tmp_path: Path) -> None:
    path, marker = _sample(tmp_path, "poly", lambda p: p + build_zip(torch_like(BENIGN)))
    assert not _zipfile_rejects(path.read_bytes())
    _torch_load(path)
    assert marker.exists()
    assert scan_paths([path]).max_severity == Severity.CRITICAL


# No advisory: torch's legacy tar format unpickles the storages count, every storage and
# tensor record and 'pickle'; scanners that only look at 'pickle' (or only at zips) miss it.
@pytest.mark.slow
def test_legacy_tar_payload_in_storage_count(tmp_path: Path) -> None:
    path, marker = _sample(
        tmp_path, "tar", lambda p: legacy_tar(BENIGN, storages_blob=storages_record([], count=p))
    )
    _torch_load(path)
    assert marker.exists()
    assert scan_paths([path]).max_severity == Severity.CRITICAL


# No advisory: nesting. An object-dtype .npy inside a checkpoint inside a zip inside a
# .tar.gz, each layer decoded and scanned.
def test_object_npy_nested_in_checkpoint_zip_and_tarball(marker_dir: Path) -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(117) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
    npy += marker_pickle(str(marker_dir / "m"), protocol=3)
    checkpoint = build_zip([*torch_like(BENIGN), Entry("archive/extra/arr.npy", npy)])
    outer = build_zip([Entry("ckpt/model.pt", checkpoint, method=8)])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("release/models.zip")
        info.size = len(outer)
        tar.addfile(info, io.BytesIO(outer))
    report = scan_buffer(gzip.compress(buf.getvalue()), "release.tar.gz")
    critical = report.at_least(Severity.CRITICAL)
    assert critical and "arr.npy" in critical[0].subject
    assert "numpy.object-array" in _rules(report)


# No advisory: a tar header's name field is free-form, so a protocol-0 pickle fits in it.
# Tar tools (and scanners that trust the tar) see an archive; pickle.load runs the name.
@pytest.mark.slow
def test_tar_pickle_polyglot(tmp_path: Path) -> None:
    marker = tmp_path / "poly.ran"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"cposix\nsystem\n(S'touch {marker}'\ntR.")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    path = tmp_path / "model.tar"
    path.write_bytes(buf.getvalue())
    code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, timeout=300, cwd=tmp_path
    )
    assert marker.exists()
    report = scan_paths([path])
    assert report.max_severity == Severity.CRITICAL and "tar.polyglot" in _rules(report)
