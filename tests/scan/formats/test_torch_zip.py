"""PyTorch zip checkpoints and TorchScript archives, real ones and crafted ones."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from tests.scan._zipcraft import Entry, build_zip, marker_pickle, torch_like
from trainguard.findings import Report, Severity
from trainguard.scan import scan_buffer, scan_paths
from trainguard.scan._zip import Archive
from trainguard.scan.formats import torch_zip

BENIGN = b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s."  # {'a': 1}


def _rules(report: Report, at_least: Severity = Severity.INFO) -> set[str]:
    return {f.rule for f in report.at_least(at_least)}


def _saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _scripted(module: torch.nn.Module, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


ALL_DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]


def test_real_state_dict_of_every_dtype_is_clean(tmp_path: Path) -> None:
    state = {str(dt): torch.ones(3, 2).to(dt) for dt in ALL_DTYPES}
    state["view"] = state["torch.float32"][1:]  # shares a storage
    path = tmp_path / "model.pt"
    torch.save(state, path)
    report = scan_paths([path])
    assert report.at_least(Severity.MEDIUM) == []
    formats = report.checked[0].detail["formats"]
    assert formats[0].endswith("=torch_zip") and any("data.pkl=pickle" in f for f in formats)


def test_real_optimizer_state_and_module_checkpoint_are_clean(tmp_path: Path) -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": 1}, path)
    report = scan_paths([path])
    assert report.at_least(Severity.MEDIUM) == []


def test_benign_torchscript_is_low_only() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.register_buffer("scale", torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.lin(x)) * self.scale

    report = scan_buffer(_scripted(Net()), "net.pt")
    assert report.at_least(Severity.MEDIUM) == []
    assert _rules(report) == {"torch.torchscript"}


def test_storages_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    original = Archive.read

    def spy(self: Archive, member):  # type: ignore[no-untyped-def]
        read.append(member.name)
        return original(self, member)

    monkeypatch.setattr(Archive, "read", spy)
    scan_buffer(_saved({"w": torch.randn(64, 64), "b": torch.randn(64)}), "m.pt")
    assert read and not [n for n in read if "/data/" in n]


def test_malicious_data_pkl_is_critical(marker_dir: Path) -> None:
    blob = build_zip(torch_like(marker_pickle(str(marker_dir / "m"))))
    report = scan_buffer(blob, "evil.pt")
    assert report.max_severity == Severity.CRITICAL
    assert any(
        f.rule.startswith("pickle.") and f.subject.endswith("archive/data.pkl")
        for f in report.at_least(Severity.CRITICAL)
    )


def test_case_folded_data_pkl_is_still_scanned(marker_dir: Path) -> None:
    blob = build_zip(torch_like(marker_pickle(str(marker_dir / "m")), name="archive/DATA.PKL"))
    report = scan_buffer(blob, "evil.pt")
    assert "torch.case-folded-record" in _rules(report, Severity.HIGH)
    assert report.max_severity == Severity.CRITICAL


def test_pickle_hidden_in_a_storage_is_found(marker_dir: Path) -> None:
    entries = [*torch_like(BENIGN), Entry("archive/data/0", marker_pickle(str(marker_dir / "m")))]
    report = scan_buffer(build_zip(entries), "evil.pt")
    assert "torch.unreferenced-pickle" in _rules(report)
    assert report.max_severity == Severity.CRITICAL


def test_extra_pickle_member_torch_never_reads(marker_dir: Path) -> None:
    entries = [
        *torch_like(BENIGN),
        Entry("archive/extra.bin", marker_pickle(str(marker_dir / "m"))),
    ]
    report = scan_buffer(build_zip(entries), "evil.pt")
    assert "torch.unreferenced-pickle" in _rules(report)
    assert report.max_severity == Severity.CRITICAL


def test_two_prefixes_and_foreign_members() -> None:
    report = scan_buffer(build_zip(torch_like(BENIGN) + torch_like(BENIGN, prefix="other")), "x.pt")
    assert "torch.ambiguous-prefix" in _rules(report, Severity.HIGH)
    assert "torch.foreign-member" in _rules(report, Severity.MEDIUM)


def test_first_entry_outside_a_folder_and_missing_version() -> None:
    report = scan_buffer(build_zip([Entry("readme", b"x"), *torch_like(BENIGN)]), "x.pt")
    assert "torch.malformed" in _rules(report)
    report = scan_buffer(build_zip(torch_like(BENIGN)[:2]), "x.pt")
    assert any("version" in f.message for f in report.findings if f.rule == "torch.malformed")


def test_unexpected_metadata_record_content() -> None:
    entries = torch_like(BENIGN)
    entries[1] = Entry("archive/byteorder", b"middle")
    report = scan_buffer(build_zip(entries), "x.pt")
    assert "torch.malformed" in _rules(report, Severity.MEDIUM)


@pytest.mark.parametrize(
    ("record", "content", "written_by_torch"),
    [
        ("version", b"3\n", True),
        ("version", b" 10\t", True),
        ("version", b"3a", False),
        ("version", b"", False),
        ("version", "\u0663".encode(), False),  # a digit, but not an ASCII one
        ("byteorder", b"big", True),
        ("byteorder", b"little\n", False),
        (".format_version", b"1", True),
        (".format_version", b" 1", False),
        (".storage_alignment", b"64", True),
        (".storage_alignment", b"", False),
        (".data/serialization_id", b"0123456789_ab.C-d", True),
        (".data/serialization_id", b"", True),
        (".data/serialization_id", b"a" * 257, False),
        (".data/serialization_id", b"a b", False),
    ],
)
def test_metadata_records_are_what_torch_writes(
    record: str, content: bytes, written_by_torch: bool
) -> None:
    entries = [e for e in torch_like(BENIGN) if e.raw_name() != f"archive/{record}".encode()]
    report = scan_buffer(build_zip([*entries, Entry(f"archive/{record}", content)]), "x.pt")
    assert ("torch.malformed" not in _rules(report)) is written_by_torch


def test_storage_layout_compressed_and_misaligned() -> None:
    entries = [
        *torch_like(BENIGN),
        Entry("archive/data/0", b"\x01" * 4096, method=8),
        Entry("archive/data/1", b"\x00" * 16, gap=b"\x00"),  # stored, off the 64-byte grid
    ]
    report = scan_buffer(build_zip(entries), "x.pt")
    layout = {
        f.severity: f.evidence["members"]
        for f in report.findings
        if f.rule == "torch.storage-layout"
    }
    assert layout == {Severity.MEDIUM: ["archive/data/0"], Severity.LOW: ["archive/data/1"]}


def test_torchscript_code_touching_files_is_high() -> None:
    class Writer(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.save(x, "/tmp/trainguard-never-written.pt")
            return x

    report = scan_buffer(_scripted(Writer()), "w.pt")
    code = [f for f in report.findings if f.rule == "torch.torchscript-code"]
    assert code and code[0].severity == Severity.HIGH and "torch.save" in code[0].message


def _edit_torchscript(blob: bytes, edit: dict[str, bytes]) -> bytes:
    """Rebuild a TorchScript archive with some members' bytes replaced (suffix match)."""
    src = zipfile.ZipFile(io.BytesIO(blob))  # a trusted, just-written archive
    entries = []
    for info in src.infolist():
        data = src.read(info)
        for suffix, new in edit.items():
            if info.filename.endswith(suffix):
                data = new
        entries.append(Entry(info.filename, data))
    return build_zip(entries)


class _Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        (b"def forward(self, x):\n  return ops.mylib.backdoor(x)\n", "torch.torchscript-code"),
        (
            b"def forward(self, x):\n  return torch.from_file('/etc/shadow', True, 4)\n",
            "torch.torchscript-code",
        ),
        (b"import os\ndef forward(self, x):\n  return x\n", "torch.torchscript-code"),
        (b"def forward(self, x:\n  return x\n", "torch.torchscript-unparseable"),
    ],
)
def test_edited_torchscript_code(code: bytes, rule: str) -> None:
    blob = _edit_torchscript(_scripted(_Tiny()), {".py": code})  # the one source file
    report = scan_buffer(blob, "t.pt")
    assert rule in _rules(report, Severity.HIGH)


def test_python_payload_planted_in_torchscript_pickle(marker_dir: Path) -> None:
    blob = _edit_torchscript(
        _scripted(_Tiny()), {"constants.pkl": marker_pickle(str(marker_dir / "m"))}
    )
    report = scan_buffer(blob, "t.pt")
    assert "torch.torchscript-pickle" in _rules(report, Severity.HIGH)
    assert report.max_severity == Severity.CRITICAL


def test_case_folded_constants_makes_torch_load_use_python_pickle(marker_dir: Path) -> None:
    # torch.load dispatches to torch.jit.load only on an exact "constants.pkl"; with
    # another case it unpickles data.pkl with Python, so data.pkl gets the pickle scanner.
    entries = [
        *torch_like(marker_pickle(str(marker_dir / "m"))),
        Entry("archive/CONSTANTS.PKL", b"\x80\x02)."),
    ]
    report = scan_buffer(build_zip(entries), "t.pt")
    assert report.max_severity == Severity.CRITICAL


def test_detect_needs_a_torch_layout() -> None:
    assert torch_zip.detect(memoryview(_saved({"a": 1})), None)
    assert not torch_zip.detect(memoryview(build_zip([Entry("a/readme.txt", b"x")])), None)
    assert not torch_zip.detect(memoryview(b"\x80\x02K\x01."), None)
