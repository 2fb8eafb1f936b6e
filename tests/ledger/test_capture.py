"""Capture at the source: save/load wrappers, hooks, digests and unknown provenance."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

from trainguard.errors import UnsafeArtifactError
from trainguard.ledger import Alert, Edge, Ledger, Run, RunEnd, _canonical, capture
from trainguard.ledger.capture import (
    RunRecorder,
    UnknownProvenanceError,
    UnknownProvenanceWarning,
    digest_bytes,
    digest_file,
    hooks,
    load,
    save,
)


@pytest.fixture
def ledger(sqlite_url: str) -> Ledger:
    return Ledger.open(sqlite_url, create=True)


def records(ledger: Ledger) -> list[object]:
    return [e.record for e in ledger.entries(0, ledger.size())]


def test_small_file_digest_is_plain_sha256(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"hello")
    assert digest_file(p) == ("sha256:" + hashlib.sha256(b"hello").hexdigest(), 5)
    assert digest_bytes(b"hello") == digest_file(p)[0]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert digest_file(empty)[0] == "sha256:" + hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("threads", [1, 3])
def test_sharded_digest_of_a_large_file(tmp_path: Path, threads: int) -> None:
    """A sparse file of two shards and a bit: the parallel digest equals the definition."""
    size = 2 * _canonical.SHARD_SIZE + 5
    p = tmp_path / "big.bin"
    with open(p, "wb") as f:
        f.truncate(size)
        f.seek(_canonical.SHARD_SIZE + 7)
        f.write(b"x")
    data = p.read_bytes()
    shards = [
        hashlib.sha256(data[o : o + _canonical.SHARD_SIZE]).digest()
        for o in range(0, size, _canonical.SHARD_SIZE)
    ]
    header = b"trainguard.sha256-shards.v1\x00" + size.to_bytes(8, "big")
    expected = "sha256-shards:" + hashlib.sha256(header + b"".join(shards)).hexdigest()
    assert digest_file(p, threads=threads) == (expected, size)
    assert digest_bytes(data, threads=threads) == expected
    # One changed byte anywhere changes the digest.
    assert digest_bytes(data[:-1] + b"y") != expected


def test_save_and_load_record_edges_with_known_provenance(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    with RunRecorder.start(ledger, run_id="train-1", hosts=("n1",)) as rec:
        digest = save({"w": torch.ones(3)}, path)
        assert load(path)["w"].tolist() == [1.0, 1.0, 1.0]
        assert capture.current() is rec
    assert capture.current() is None
    run, produced, used, end = records(ledger)
    assert isinstance(run, Run) and run.run_id == "train-1" and run.hosts == ("n1",)
    assert (
        isinstance(produced, Edge)
        and produced.direction == "produced"
        and produced.digest == digest
    )
    assert isinstance(used, Edge) and used.direction == "used" and used.digest == digest
    assert isinstance(end, RunEnd) and end.status == "completed"
    assert digest == digest_file(path)[0]


def test_loading_content_no_run_produced_is_flagged(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with RunRecorder.start(ledger, run_id="train-2") as rec:
        with pytest.warns(UnknownProvenanceWarning):
            load(path)
        rec.register(path)  # someone vouches for it: now it is known
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load(path)
    alerts = [r for r in records(ledger) if isinstance(r, Alert)]
    assert [a.rule for a in alerts] == ["ledger.unknown-provenance"]
    assert alerts[0].evidence["digest"] == digest_file(path)[0]


def test_strict_recorder_refuses_unknown_provenance(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(UnknownProvenanceError), RunRecorder.start(ledger, strict=True):
        load(path)
    assert isinstance(records(ledger)[-1], RunEnd) and records(ledger)[-1].status == "failed"  # type: ignore[attr-defined]


def test_a_malicious_checkpoint_is_refused_before_anything_is_recorded(
    ledger: Ledger, tmp_path: Path, marker_dir: Path
) -> None:
    import pickle

    class Payload:
        def __reduce__(self) -> tuple[object, ...]:
            return (open, (str(marker_dir / "pwned"), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload()))
    with RunRecorder.start(ledger, run_id="victim"), pytest.raises(UnsafeArtifactError):
        load(path)
    assert not (marker_dir / "pwned").exists()
    assert not [r for r in records(ledger) if isinstance(r, Edge)]


def test_only_rank_zero_writes_the_run(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("TRAINGUARD_RUN_ID", "job-7")
    with RunRecorder.start(ledger) as rec:
        assert rec.run.world_size == 8 and rec.run.run_id == "job-7"
        save({"x": torch.ones(1)}, tmp_path / "shard3.pt")
    assert [type(r).__name__ for r in records(ledger)] == ["Edge"]


def test_hooks_record_torch_and_safetensors_and_restore_the_originals(
    ledger: Ledger, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    original_save, original_load = torch.save, torch.load
    with RunRecorder.start(ledger, run_id="hooked"), hooks():
        assert torch.save is not original_save
        torch.save({"a": torch.ones(2)}, tmp_path / "a.pt")
        assert torch.load(tmp_path / "a.pt")["a"].tolist() == [1.0, 1.0]
        import safetensors.torch as st

        st.save_file({"b": torch.zeros(2)}, str(tmp_path / "b.safetensors"))
        assert st.load_file(str(tmp_path / "b.safetensors"))["b"].tolist() == [0.0, 0.0]
    assert torch.save is original_save and torch.load is original_load
    import safetensors.torch as st

    assert st.save_file is save_file and st.load_file is load_file
    edges = [(r.direction, Path(r.name or "").name) for r in records(ledger) if isinstance(r, Edge)]
    assert edges == [
        ("produced", "a.pt"),
        ("used", "a.pt"),
        ("produced", "b.safetensors"),
        ("used", "b.safetensors"),
    ]


@pytest.mark.slow
def test_hugging_face_save_and_load_pretrained_are_recorded(ledger: Ledger, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
    )
    model = transformers.BertModel(config)
    with RunRecorder.start(ledger, run_id="hf"), hooks():
        model.save_pretrained(tmp_path / "m")
        again = transformers.BertModel.from_pretrained(tmp_path / "m")
    assert type(again) is transformers.BertModel
    assert "from_pretrained" not in vars(transformers.BertModel)
    edges = [r for r in records(ledger) if isinstance(r, Edge)]
    produced = {r.digest for r in edges if r.direction == "produced"}
    used = {r.digest for r in edges if r.direction == "used"}
    assert produced and produced == used
