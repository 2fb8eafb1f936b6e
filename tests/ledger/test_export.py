"""Exports: OpenLineage run events and OpenSSF model-signing statements."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from tests.ledger import _factory as f
from trainguard.ledger import Ledger
from trainguard.ledger._canonical import SHARD_SIZE, digest_of_shards
from trainguard.ledger.capture import digest_file
from trainguard.ledger.export import model_signing_statement, openlineage_events
from trainguard.ledger.export.openlineage import SCHEMA_URL, run_uuid


@pytest.fixture
def ledger(sqlite_url: str) -> Ledger:
    ledger = Ledger.open(sqlite_url, create=True)
    ledger.append(
        [
            f.run("a", start=f.T0, hours=1),
            f.used("a", "base"),
            f.produced("a", "ckpt"),
            f.run("b", start=f.T0 + 5, hours=None),
            f.used("b", "ckpt"),
            f.end("b", f.T0 + 99, "failed"),
            f.run("c", start=f.T0 + 9, hours=None),
        ]
    )
    return ledger


def test_openlineage_events(ledger: Ledger) -> None:
    events = openlineage_events(ledger)
    assert [(e["eventType"], e["run"]["facets"]["trainguard_run"]["runId"]) for e in events] == [
        ("START", "a"),
        ("COMPLETE", "a"),
        ("START", "b"),
        ("FAIL", "b"),
        ("START", "c"),
    ]
    for e in events:
        assert e["schemaURL"] == SCHEMA_URL and e["producer"].startswith("https://")
        assert uuid.UUID(e["run"]["runId"]).version == 5
        assert e["eventTime"].endswith("Z") and e["job"] == {
            "namespace": "trainguard",
            "name": e["run"]["facets"]["trainguard_run"]["runId"],
        }
        for facet in e["run"]["facets"].values():
            assert facet["_producer"] and facet["_schemaURL"]
    complete = events[1]
    assert [d["name"] for d in complete["inputs"]] == [f.digest("base")]
    assert [d["name"] for d in complete["outputs"]] == [f.digest("ckpt")]
    # The checkpoint links run a's output to run b's input, as the same dataset.
    assert events[3]["inputs"][0]["name"] == complete["outputs"][0]["name"]
    assert complete["outputs"][0]["facets"]["trainguard_artifact"]["path"] == "ckpt"
    assert events[0]["run"]["runId"] == run_uuid(ledger.origin, "a") == events[1]["run"]["runId"]
    assert openlineage_events(ledger, ["b"]) == events[2:4]


def _model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"a": 1}')
    (model / "sub" / "w.bin").write_bytes(b"x" * 1000)
    (model / "empty").write_bytes(b"")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref")
    return model


def test_model_signing_statement_files(tmp_path: Path) -> None:
    st = model_signing_statement(_model(tmp_path), method="files")
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://model_signing/signature/v1.0"
    res = st["predicate"]["resources"]
    assert [r["name"] for r in res] == ["config.json", "empty", "sub/w.bin"]  # sorted, .git ignored
    assert res[2]["digest"] == hashlib.sha256(b"x" * 1000).hexdigest()
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in res)).hexdigest()
    assert st["subject"] == [{"name": "model", "digest": {"sha256": root}}]
    assert st["predicate"]["serialization"] == {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore"],
    }


def test_model_signing_statement_shards_match_the_ledger_digest(tmp_path: Path) -> None:
    model = _model(tmp_path)
    st = model_signing_statement(model, shard_size=300)
    names = [r["name"] for r in st["predicate"]["resources"]]
    # Shards sort by (path, start), numerically; the empty file has none, as in model_signing.
    assert names == [
        "config.json:0:8",
        "sub/w.bin:0:300",
        "sub/w.bin:300:600",
        "sub/w.bin:600:900",
        "sub/w.bin:900:1000",
    ]
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(SHARD_SIZE + 3)
    one = model_signing_statement(big)
    shards = [bytes.fromhex(r["digest"]) for r in one["predicate"]["resources"]]
    assert digest_of_shards(SHARD_SIZE + 3, shards) == digest_file(big)[0]


def test_statement_is_accepted_by_model_signing_if_installed(tmp_path: Path) -> None:
    signing = pytest.importorskip(
        "model_signing._signing.signing", reason="model-signing not installed"
    )
    hashing = pytest.importorskip("model_signing.hashing")
    model = _model(tmp_path)
    for method in ("files", "shards"):
        st = model_signing_statement(model, method=method, shard_size=300)
        ours = signing.dsse_payload_to_manifest(st)
        config = hashing.Config()
        if method == "shards":
            config.use_shard_serialization(shard_size=300)
        assert config.hash(model) == ours
