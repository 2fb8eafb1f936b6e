"""Legacy torch checkpoints: every pickle scanned, storages skipped by size, tampering found."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest

from tests.scan.pickle._samples import P, call_pickle
from trainguard.findings import Report, Severity
from trainguard.scan import scan_buffer, scan_paths
from trainguard.scan.formats import torch_legacy

MAGIC = torch_legacy.MAGIC_NUMBER
SYS_INFO = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}


def storage_pid(key: str, numel: int, kind: str = "ByteStorage") -> P:
    """The persistent id torch writes for a storage: ('storage', type, key, 'cpu', numel, None)."""
    p = P().mark().uni("storage").global_("torch", kind).uni(key).uni("cpu").int_(numel).none()
    return p.tuple().raw(b"Q")


def legacy_file(
    data_pickle: bytes,
    storages: list[tuple[str, bytes]],
    *,
    magic: int = MAGIC,
    version: int = 1001,
    count_override: dict[str, int] | None = None,
) -> bytes:
    """A legacy checkpoint assembled by hand, with ByteStorage storages."""
    out = pickle.dumps(magic, protocol=2) + pickle.dumps(version, protocol=2)
    out += pickle.dumps(SYS_INFO, protocol=2) + data_pickle
    out += pickle.dumps([k for k, _ in storages], protocol=2)
    for key, payload in storages:
        count = (count_override or {}).get(key, len(payload))
        out += struct.pack("<q", count) + payload
    return out


def one_storage_pickle(key: str, numel: int) -> bytes:
    return bytes(P(2).raw(bytes(storage_pid(key, numel))).stop())


def rules(report: Report) -> set[str]:
    return {f.rule for f in report.findings}


def test_detects_the_magic_number_pickle() -> None:
    for proto in range(6):
        head = pickle.dumps(MAGIC, protocol=proto)
        assert torch_legacy.detect(memoryview(head + b"rest"), None)
    assert not torch_legacy.detect(memoryview(pickle.dumps(MAGIC + 1, protocol=2)), None)
    assert not torch_legacy.detect(memoryview(pickle.dumps([MAGIC], protocol=2)), None)
    assert not torch_legacy.detect(memoryview(b"PK\x03\x04"), None)


@pytest.mark.slow
def test_real_legacy_checkpoint_is_clean_and_storages_are_skipped(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    big = torch.nn.Linear(256, 256)
    path = tmp_path / "legacy.pt"
    torch.save(
        {"sd": big.state_dict(), "x": torch.arange(10)[3:6]},
        path,
        _use_new_zipfile_serialization=False,
    )
    report = scan_paths([path])
    assert [f for f in report.findings if f.severity > Severity.INFO] == []
    assert report.checked[0].kind == "torch_legacy"


def test_hand_built_legacy_file_is_clean() -> None:
    data = legacy_file(one_storage_pickle("k0", 4), [("k0", b"\x00\x01\x02\x03")])
    report = scan_buffer(data, "legacy.pt")
    assert report.findings == [] and report.checked[0].kind == "torch_legacy"


def test_malicious_data_pickle_is_found(marker_dir: Path) -> None:
    evil = call_pickle("os", "system", [f"touch {marker_dir}/m"], proto=2)
    report = scan_buffer(legacy_file(evil, []), "legacy.pt")
    assert "pickle.dangerous-global" in rules(report)


def test_malicious_sys_info_pickle_is_found(marker_dir: Path) -> None:
    data = pickle.dumps(MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
    data += call_pickle("os", "system", [f"touch {marker_dir}/m"], proto=2)
    data += one_storage_pickle("k", 0) + pickle.dumps(["k"], protocol=2) + struct.pack("<q", 0)
    report = scan_buffer(data, "legacy.pt")
    assert {"pickle.dangerous-global", "torch-legacy.structure"} <= rules(report)


def test_pickle_appended_after_storages_is_scanned(marker_dir: Path) -> None:
    data = legacy_file(one_storage_pickle("k0", 2), [("k0", b"ab")])
    data += call_pickle("os", "system", [f"touch {marker_dir}/m"], proto=2)
    report = scan_buffer(data, "legacy.pt")
    assert {"pickle.multiple-streams", "pickle.dangerous-global"} <= rules(report)


def test_garbage_after_storages_is_structure() -> None:
    data = legacy_file(one_storage_pickle("k0", 2), [("k0", b"ab")]) + b"\x00\xff" * 8
    assert "torch-legacy.structure" in rules(scan_buffer(data, "legacy.pt"))


def test_wrong_protocol_version_is_structure() -> None:
    data = legacy_file(one_storage_pickle("k0", 1), [("k0", b"a")], version=999)
    assert "torch-legacy.structure" in rules(scan_buffer(data, "legacy.pt"))


def test_storage_header_mismatch_and_truncation() -> None:
    data = legacy_file(one_storage_pickle("k0", 4), [("k0", b"abcd")], count_override={"k0": 3})
    report = scan_buffer(data, "legacy.pt")
    assert "torch-legacy.storage" in rules(report)
    cut = legacy_file(one_storage_pickle("k0", 4), [("k0", b"abcd")])[:-2]
    assert "torch-legacy.storage" in rules(scan_buffer(cut, "legacy.pt"))


def test_key_without_storage_is_reported() -> None:
    data = legacy_file(one_storage_pickle("k0", 1), [("k0", b"a"), ("ghost", b"b")])
    assert "torch-legacy.storage" in rules(scan_buffer(data, "legacy.pt"))


def test_storage_bytes_that_are_a_pickle_are_reported(marker_dir: Path) -> None:
    payload = call_pickle("os", "system", [f"touch {marker_dir}/m"], proto=2)
    data = legacy_file(one_storage_pickle("k0", len(payload)), [("k0", payload)])
    report = scan_buffer(data, "legacy.pt")
    assert "torch-legacy.storage-pickle" in rules(report)


def test_element_sizes_follow_the_storage_type() -> None:
    pid = bytes(P(2).raw(bytes(storage_pid("f", 3, "FloatStorage"))).stop())
    data = legacy_file(pid, [("f", b"\x00" * 12)], count_override={"f": 3})
    assert scan_buffer(data, "legacy.pt").findings == []


def test_truncated_header_pickles_stop_the_scan() -> None:
    data = pickle.dumps(MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)[:-1]
    report = scan_buffer(data, "legacy.pt")
    assert "pickle.truncated" in rules(report)
