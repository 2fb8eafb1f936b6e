"""``convert_to_safetensors`` and ``trainguard convert``: scanned, weights-only, atomic."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.corpus._asm import Asm, call
from tests.corpus._containers import torch_zip_with
from trainguard.cli.main import main
from trainguard.errors import UnsafeArtifactError, UsageError
from trainguard.findings import Severity
from trainguard.scan import _safetensors_io, scan_paths
from trainguard.scan.convert import _dedupe, convert_to_safetensors, flatten


def _checkpoint() -> dict[str, object]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "extra": {
            "half": torch.randn(3).half(),
            "bf": torch.randn(2, 2).bfloat16(),
            "t": torch.randn(3, 2).t(),
        },
        "step": 1200,
        "name": "run-7",
    }


def _header(path: Path) -> tuple[int, dict[str, object]]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n])


def test_round_trip_matches_the_safetensors_library(tmp_path: Path) -> None:
    src, dst = tmp_path / "ckpt.pt", tmp_path / "ckpt.safetensors"
    state = _checkpoint()
    torch.save(state, src)
    result = convert_to_safetensors(src, dst)
    expected, extra = flatten(state)
    loaded = load_file(str(dst))
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    assert "optimizer.state.0.exp_avg" in loaded
    with safe_open(str(dst), "pt") as fh:
        metadata = fh.metadata()
    assert metadata["converted_by"] == "trainguard"
    assert (
        metadata["source_sha256"]
        == hashlib.sha256(src.read_bytes()).hexdigest()
        == result.source_sha256
    )
    kept = json.loads(metadata["trainguard.extra"])
    assert kept["step"] == 1200 and kept["name"] == "run-7" == extra["name"]
    assert kept["optimizer.param_groups.0.lr"] == pytest.approx(1e-3)
    assert result.size == dst.stat().st_size
    assert scan_paths([dst]).exit_code(Severity.LOW) == 0  # what we write scans clean


def test_layout_is_the_crates(tmp_path: Path) -> None:
    src, dst = tmp_path / "ckpt.pt", tmp_path / "out.safetensors"
    torch.save(
        {
            "b8": torch.ones(3, dtype=torch.uint8),
            "a64": torch.ones(2, dtype=torch.float64),
            "c32": torch.ones(5),
        },
        src,
    )
    convert_to_safetensors(src, dst)
    n, header = _header(dst)
    assert n % 8 == 0
    header.pop("__metadata__")
    spans = [tuple(v["data_offsets"]) for v in header.values()]  # type: ignore[index]
    assert list(header) == ["a64", "c32", "b8"]  # by alignment, then name
    assert spans == [(0, 16), (16, 36), (36, 39)]


def test_tied_and_sliced_tensors(tmp_path: Path) -> None:
    src, dst = tmp_path / "tied.pt", tmp_path / "tied.safetensors"
    embed = torch.randn(6, 4)
    base = torch.arange(10.0)
    torch.save({"embed.weight": embed, "lm_head.weight": embed, "half": base[5:], "all": base}, src)
    result = convert_to_safetensors(src, dst)
    assert result.aliases == {"lm_head.weight": "embed.weight"}
    loaded = load_file(str(dst))
    assert set(loaded) == {"embed.weight", "half", "all"}
    assert torch.equal(loaded["half"], torch.arange(5.0, 10.0)) and torch.equal(loaded["all"], base)
    with safe_open(str(dst), "pt") as fh:
        assert json.loads(fh.metadata()["trainguard.aliases"]) == {"lm_head.weight": "embed.weight"}


def test_malicious_checkpoint_is_refused_and_nothing_written(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    src, dst = tmp_path / "evil.pt", tmp_path / "evil.safetensors"
    payload = call(Asm(2), "os", "system", f"touch {marker}").pop().empty_dict().stop().bytes()
    src.write_bytes(torch_zip_with(payload))
    with pytest.raises(UnsafeArtifactError):
        convert_to_safetensors(src, dst)
    assert not dst.exists() and not marker.exists()


def test_whole_module_is_refused_with_a_hint(tmp_path: Path) -> None:
    src, dst = tmp_path / "module.pt", tmp_path / "module.safetensors"
    torch.save(torch.nn.Linear(2, 2), src)
    with pytest.raises(UnsafeArtifactError) as info:
        convert_to_safetensors(src, dst, threshold=Severity.CRITICAL)
    assert "state_dict" in (info.value.hint or "")
    assert not dst.exists()


def test_refusals(tmp_path: Path) -> None:
    src, dst = tmp_path / "ckpt.pt", tmp_path / "out.safetensors"
    torch.save({"w": torch.ones(2), "history": ["x" * 1024] * 2048}, src)
    with pytest.raises(UsageError, match="non-tensor"):
        convert_to_safetensors(src, dst)
    torch.save({"step": 3}, src)
    with pytest.raises(UsageError, match="no tensors"):
        convert_to_safetensors(src, dst)
    dst.write_bytes(b"keep")
    torch.save({"w": torch.ones(2)}, src)
    with pytest.raises(UsageError, match="exists"):
        convert_to_safetensors(src, dst)
    assert dst.read_bytes() == b"keep"


def test_unstorable_values_name_their_key() -> None:
    with pytest.raises(UsageError, match=r"'a\.b'"):
        flatten({"a": {"b": b"raw bytes"}})
    with pytest.raises(UsageError, match="same key"):
        flatten({"a.b": torch.ones(1), "a": {"b": torch.ones(1)}})
    with pytest.raises(UsageError, match="meta"):
        _dedupe({"m": torch.empty(2, device="meta")})


def test_failed_write_leaves_destination_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "ckpt.pt", tmp_path / "out.safetensors"
    torch.save({"w": torch.ones(1000)}, src)
    dst.write_bytes(b"previous")

    def broken(self: _safetensors_io.Plan):  # type: ignore[no-untyped-def]
        yield self.header
        raise OSError("disk full")

    monkeypatch.setattr(_safetensors_io.Plan, "chunks", broken)
    with pytest.raises(OSError, match="disk full"):
        convert_to_safetensors(src, dst, force=True)
    assert dst.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "out.safetensors"]


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "ckpt.pt", tmp_path / "out.safetensors"
    torch.save({"w": torch.ones(3), "step": 4}, src)
    assert main(["convert", "--json", str(src), str(dst)]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["tensors"] == 1 and doc["extra"] == ["step"] and "converted" in err
    assert main(["convert", str(src), str(dst)]) == 2  # exists
    assert "--force" in capsys.readouterr().err
    assert main(["convert", "--force", str(src), str(dst)]) == 0
    capsys.readouterr()
    evil = tmp_path / "evil.pt"
    payload = call(Asm(2), "os", "system", "true").pop().empty_dict().stop().bytes()
    evil.write_bytes(torch_zip_with(payload))
    assert main(["convert", "--json", str(evil), str(tmp_path / "evil.safetensors")]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["summary"]["findings"] >= 1 and "refused" in err
    assert main(["convert", "--fail-on", "bogus", str(src), str(dst)]) == 2
