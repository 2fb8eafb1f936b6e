"""One contract, two backends: every test here runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from tests.ledger import _factory as f
from trainguard.errors import LedgerIntegrityError
from trainguard.ledger import _merkle
from trainguard.ledger._ledger import Ledger, prepare
from trainguard.ledger.signing import SigningKey
from trainguard.ledger.storage import node_id, open_storage


def _records(n: int) -> list:
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(f.run(f"r{i}", hosts=("gpu-001", f"gpu-{i:03d}"), start=f.T0 + i))
        elif i % 3 == 1:
            out.append(f.produced(f"r{i - 1}", f"ckpt-{i}"))
        else:
            out.append(f.used(f"r{i - 2}", f"ckpt-{i - 1}"))
    return out


def test_init_is_idempotent_and_keeps_the_origin(ledger_url: str) -> None:
    store = open_storage(ledger_url)
    assert store.origin() is None
    assert store.init("log-a") == "log-a"
    assert open_storage(ledger_url).init("log-b") == "log-a"
    assert store.origin() == "log-a"
    store.close()


def test_opening_an_uninitialised_ledger_is_an_error(ledger_url: str) -> None:
    from trainguard.errors import UsageError

    with pytest.raises(UsageError):
        Ledger.open(ledger_url)


@pytest.mark.parametrize("batches", [[1], [5, 1, 7], [64, 1, 2, 3, 60]])
def test_append_assigns_consecutive_indexes_and_the_rfc_root(
    ledger_url: str, batches: list[int]
) -> None:
    records = _records(sum(batches))
    with Ledger.open(ledger_url, create=True) as ledger:
        pos = 0
        for b in batches:
            res = ledger.append(records[pos : pos + b])
            assert res.first == pos and res.size == pos + b
            pos += b
            hashes = [prepare(r).leaf_hash for r in records[:pos]]
            cr = _merkle.CompactRange()
            cr.extend(hashes)
            assert res.root == cr.root() == ledger.root_at(pos)
        stored = ledger.storage.entries(0, pos)
        assert [i for i, _, _, _ in stored] == list(range(pos))
        assert [d for _, _, d, _ in stored] == [prepare(r).data for r in records]
        assert [k for _, k, _, _ in stored] == [r.kind for r in records]
        assert ledger.storage.node_count() == pos - bin(pos).count("1")
        assert [e.record for e in ledger.entries(0, pos)] == records


def test_every_proof_from_storage_verifies(ledger_url: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        records = _records(37)
        for i in range(0, 37, 5):
            ledger.append(records[i : i + 5])
        for size in (1, 2, 5, 16, 31, 37):
            root = ledger.root_at(size)
            proofs = ledger.inclusion_proofs(range(size), size)
            for i in range(size):
                proofs[i].verify(root)
                assert proofs[i] == ledger.inclusion_proof(i, size)
            for old in range(1, size + 1):
                proof = ledger.consistency_proof(old, size)
                _merkle.verify_consistency(old, size, ledger.root_at(old), root, proof)
        with pytest.raises(LedgerIntegrityError):
            ledger.inclusion_proof(3, 37).verify(ledger.root_at(36))


def test_nodes_are_keyed_in_completion_order(ledger_url: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(16))
        ids = [i for i, _ in ledger.storage.nodes(0, 1 << 62)]
        assert ids == sorted(ids)
        assert ids[-1] == node_id(4, 0)  # the root of 16 leaves completes last
        assert node_id(1, 0) == ids[0]


def test_derived_rows_and_queries(ledger_url: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(9))
        ledger.append([f.end("r0", f.T0 + 99)])
        store = ledger.storage
        runs = store.select("runs", "run_id", ["r0", "r3", "nope"])
        assert sorted(r[1] for r in runs) == ["r0", "r3"]
        assert sorted(store.rows("run_hosts", 0, 1)) == [(0, "gpu-000"), (0, "gpu-001")]
        used = store.select("edges", "digest", [f.digest("ckpt-1")])
        assert sorted((r[1], r[2]) for r in used) == [("r0", "produced"), ("r0", "used")]
        assert [r[1] for r in store.select("run_hosts", "host", ["gpu-003"])] == ["gpu-003"]
        assert [r[1] for r in store.select("run_ends", "run_id", ["r0"])] == ["r0"]
        window = store.runs_in_window(f.T0 + 1, f.T0 + 4)
        assert sorted(r[1] for r in window) == ["r0", "r3"]
        counts = store.counts()
        assert counts["entries"] == 10
        assert sum(counts[t] for t in ("runs", "run_ends", "edges", "artifacts", "events")) == 10
        assert counts["run_hosts"] == counts["n_hosts"] == 6
        assert counts["out_of_range"] == 0
        with pytest.raises(ValueError):
            store.select("runs; DROP TABLE runs", "run_id", ["x"])


def test_signed_heads_round_trip(ledger_url: str) -> None:
    key = SigningKey.generate()
    with Ledger.open(ledger_url, create=True) as ledger:
        assert ledger.latest_signed_head() is None
        ledger.append(_records(3))
        first = ledger.sign(key, timestamp=1)
        ledger.storage.add_head(first)  # idempotent
        ledger.append(_records(2))
        second = ledger.sign(key, timestamp=2)
        assert ledger.signed_heads() == [first, second]
        assert ledger.latest_signed_head() == second
        second.verify([key.public_key])
        assert second.root == ledger.root_at(5) and second.origin == ledger.origin
