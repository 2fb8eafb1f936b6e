"""Generic zip archives: every member scanned as what it is, extraction hazards reported."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import torch

from tests.scan._zipcraft import Entry, build_zip, marker_pickle, torch_like
from trainguard.findings import Severity
from trainguard.scan import DEFAULT_LIMITS, scan_buffer, scan_paths
from trainguard.scan.formats import zip as zip_format


def _checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buf)
    return buf.getvalue()


def test_zip_of_checkpoints_scans_each_checkpoint(marker_dir: Path) -> None:
    blob = build_zip(
        [
            Entry("run/epoch1.pt", _checkpoint()),
            Entry(
                "run/epoch2.pt",
                build_zip(torch_like(marker_pickle(str(marker_dir / "m")))),
                method=8,
            ),
            Entry("run/notes.txt", b"trained on 8 GPUs\n"),
        ]
    )
    report = scan_buffer(blob, "run.zip")
    formats = report.checked[0].detail["formats"]
    assert formats[0] == "run.zip=zip"
    assert {"run.zip::run/epoch1.pt=torch_zip", "run.zip::run/epoch2.pt=torch_zip"} <= set(formats)
    critical = report.at_least(Severity.CRITICAL)
    assert critical and all("epoch2.pt" in f.subject for f in critical)


def test_clean_zip_is_clean() -> None:
    report = scan_buffer(
        build_zip([Entry("run/epoch1.pt", _checkpoint()), Entry("a/", b"")]), "run.zip"
    )
    assert report.findings == []


def test_names_that_escape_the_extraction_directory() -> None:
    blob = build_zip(
        [Entry("../../.bashrc", b"echo hi\n"), Entry("C:/x.txt", b"x"), Entry("ok.txt", b"x")]
    )
    findings = [f for f in scan_buffer(blob, "a.zip").findings if f.rule == "zip.unsafe-path"]
    assert len(findings) == 1 and findings[0].evidence["members"] == ["../../.bashrc", "C:/x.txt"]


def test_self_extracting_zip_is_detected_and_its_prefix_scanned(marker_dir: Path) -> None:
    blob = build_zip([Entry("a.txt", b"x")], prefix=marker_pickle(str(marker_dir / "m")))
    assert zip_format.detect(memoryview(blob), None)
    report = scan_buffer(blob, "sfx.bin")
    assert report.checked[0].kind == "zip"
    assert any(f.subject.endswith("<prefix>") for f in report.at_least(Severity.CRITICAL))


def test_one_bad_archive_does_not_stop_a_directory_scan(tmp_path: Path, marker_dir: Path) -> None:
    (tmp_path / "a_broken.pt").write_bytes(build_zip(torch_like(b"\x80\x02K\x01."))[:-40])
    (tmp_path / "b_bomb.zip").write_bytes(build_zip([Entry("z", b"\0" * (8 << 20), method=8)]))
    (tmp_path / "c_evil.pt").write_bytes(
        build_zip(torch_like(marker_pickle(str(marker_dir / "m"))))
    )
    limits = replace(DEFAULT_LIMITS, decompression_slack_bytes=1 << 20)
    report = scan_paths([tmp_path], limits=limits)
    kinds = {Path(c.subject).name: c.kind for c in report.checked}
    assert kinds == {"a_broken.pt": "torch_zip", "b_bomb.zip": "zip", "c_evil.pt": "torch_zip"}
    by_file = {Path(f.subject.split("::")[0]).name for f in report.at_least(Severity.CRITICAL)}
    assert by_file == {"c_evil.pt"}
    assert "limit.exceeded" in {f.rule for f in report.findings if "b_bomb" in f.subject}
