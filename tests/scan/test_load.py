"""Safe loading: scan the bytes you load, and load only the bytes you scanned."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.corpus._asm import Asm, call
from tests.corpus._containers import torch_zip_with
from tests.corpus._formats import gguf_bytes, safetensors_bytes
from trainguard.errors import LoadError, UnsafeArtifactError, UsageError
from trainguard.findings import Checked, Report, Severity
from trainguard.scan import _safetensors_io
from trainguard.scan.load import VerifiedArtifact, read_verified, safe_load


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    """A torch zip whose data.pkl runs ``touch marker`` (then yields an empty dict)."""
    payload = call(Asm(2), "os", "system", f"touch {marker}").pop().empty_dict().stop().bytes()
    path.write_bytes(torch_zip_with(payload))


def _state() -> dict[str, torch.Tensor]:
    return {
        "w": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b": torch.ones(4, dtype=torch.bfloat16),
        "steps": torch.tensor(7),
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_benign_checkpoint_loads_and_equals(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(_state(), path)
    artifact = read_verified(path)
    assert artifact.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert artifact.size == path.stat().st_size and artifact.format == "torch_zip"
    _assert_same(safe_load(artifact), _state())
    _assert_same(safe_load(path), _state())


def test_legacy_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(_state(), path, _use_new_zipfile_serialization=False)
    _assert_same(safe_load(path), _state())


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)  # bitwise: float8 has no equality kernel


def test_safetensors_load_natively(tmp_path: Path) -> None:
    tensors = {
        "f32": torch.randn(5, 3),
        "f16": torch.randn(2).half(),
        "bf16": torch.randn(3, 1).bfloat16(),
        "f8": torch.randn(4).to(torch.float8_e4m3fn),
        "i64": torch.arange(5),
        "u8": torch.arange(3, dtype=torch.uint8),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 4),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    loaded = safe_load(path, map_location="cpu")
    assert loaded.keys() == tensors.keys()
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and loaded[key].shape == tensor.shape
        assert torch.equal(_raw(loaded[key]), _raw(tensor)), key
    loaded["f32"].add_(1)  # tensors own writable memory, not the verified bytes


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    _malicious_checkpoint(path, marker)
    with pytest.raises(UnsafeArtifactError) as info:
        safe_load(path)
    assert any(f.rule.startswith("pickle.") for f in info.value.report.findings)  # type: ignore[attr-defined]
    assert str(path) in info.value.message
    assert not marker.exists()
    with pytest.raises(UnsafeArtifactError):
        read_verified(path)
    assert not marker.exists()


def test_swapped_file_after_verification_loads_the_verified_bytes(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "ckpt.pt"
    torch.save(_state(), path)
    artifact = read_verified(path)
    _malicious_checkpoint(path, marker)  # the race: swapped after the check
    _assert_same(safe_load(artifact), _state())
    assert not marker.exists()
    with pytest.raises(UnsafeArtifactError):
        read_verified(path)  # a fresh read sees the swap


def test_artifact_verified_at_a_laxer_threshold_is_rechecked(tmp_path: Path) -> None:
    # A gap between tensors is a HIGH finding, below CRITICAL.
    data = safetensors_bytes({"a": ("F32", [2], (0, 8)), "b": ("F32", [2], (16, 24))}, bytes(24))
    path = tmp_path / "gap.safetensors"
    path.write_bytes(data)
    lax = read_verified(path, threshold=Severity.CRITICAL)
    assert lax.report.at_least(Severity.HIGH)
    with pytest.raises(UnsafeArtifactError):
        safe_load(lax)
    assert set(safe_load(lax, threshold=Severity.CRITICAL)) == {"a", "b"}


def test_whole_module_pickle_is_refused_by_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeArtifactError) as info:
        # CRITICAL: let the scan pass so that torch's weights-only unpickler decides.
        safe_load(path, threshold=Severity.CRITICAL)
    assert info.value.hint is not None and "state_dict" in info.value.hint
    assert "torch.nn.modules.linear.Linear" in (
        info.value.found or ""
    )  # torch's reason, no ANSI codes
    assert "\x1b" not in (info.value.found or "")


def test_unsupported_inputs_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        read_verified(tmp_path)
    with pytest.raises(UsageError):
        read_verified(tmp_path / "missing.pt")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(gguf_bytes({"general.architecture": "llama"}, {"w": [0.0] * 4}))
    with pytest.raises(UsageError, match="gguf"):
        safe_load(gguf)


def test_damaged_checkpoint_is_a_load_error() -> None:
    # Bytes a scan accepted as a legacy checkpoint, but whose first pickle is not
    # torch's magic number: torch.load fails, and the failure is wrapped.
    report = Report(engine="scan")
    report.checked.append(Checked("<buffer>", "torch_legacy"))
    data = b"\x80\x02K\x01."
    artifact = VerifiedArtifact(data, hashlib.sha256(data).hexdigest(), len(data), report)
    with pytest.raises(LoadError, match=r"torch\.load failed"):
        safe_load(artifact)


def test_native_reader_rechecks_bounds_without_a_scan() -> None:
    bad = safetensors_bytes({"a": ("F32", [4], (0, 16))}, bytes(8))  # 8 bytes short
    with pytest.raises(UsageError, match="offsets"):
        _safetensors_io.read(bad)
    with pytest.raises(UsageError):
        _safetensors_io.read(b"\xff" * 8 + b"{}")
