"""One contract, two backends: every test here runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ledger import _factory as f
from trainguard.errors import LedgerIntegrityError
from trainguard.ledger import _merkle
from trainguard.ledger._ledger import Ledger, prepare
from trainguard.ledger.signing import SigningKey
from trainguard.ledger.storage import NODE_LEVEL, node_id, open_storage


def stored_nodes(size: int, node_level: int = NODE_LEVEL) -> int:
    """How many perfect subtrees of level ``node_level`` and up ``size`` leaves complete."""
    return sum(size >> level for level in range(node_level, size.bit_length()))


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
        assert ledger.storage.node_level() == NODE_LEVEL
        assert ledger.storage.node_count() == stored_nodes(pos)
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
        ledger.append(_records(64))
        ids = [i for i, _ in ledger.storage.nodes(0, 1 << 62)]
        assert ids == sorted(ids)
        assert ids[-1] == node_id(6, 0)  # the root of 64 leaves completes last
        assert node_id(NODE_LEVEL, 0) == ids[0]  # the first stored subtree
        assert len(ids) == stored_nodes(64) == (64 >> NODE_LEVEL) * 2 - 1


def test_levels_below_the_stored_ones_are_recomputed_from_leaves(ledger_url: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        records = _records(45)
        ledger.append(records)
        hashes = [prepare(r).leaf_hash for r in records]
        levels = _merkle.perfect_levels(hashes)
        keys = {(lv, i) for lv in range(6) for i in range(len(levels[lv]))}
        assert ledger.storage.perfect(keys) == {(lv, i): levels[lv][i] for lv, i in keys}
        assert ledger.storage.perfect({(3, 6)}) == {}  # leaves 48..55 do not exist yet


def test_a_ledger_made_before_node_level_stores_and_checks_every_level(ledger_url: str) -> None:
    """Ledgers created by earlier versions have no ``node_level``: they keep every level."""
    from tests.ledger.test_verify_tamper import raw
    from trainguard.ledger.verify import verify_ledger

    Ledger.open(ledger_url, create=True).close()
    raw(ledger_url, "DELETE FROM meta WHERE key = 'node_level'")
    records = _records(37)
    with Ledger.open(ledger_url) as ledger:
        assert ledger.storage.node_level() == 1
        for i in range(0, 37, 7):
            ledger.append(records[i : i + 7])
        assert ledger.storage.node_count() == stored_nodes(37, 1) == 37 - bin(37).count("1")
        proofs = ledger.inclusion_proofs(range(37), 37)
        for i in range(37):
            proofs[i].verify(ledger.root_at(37))
        assert verify_ledger(ledger, jobs=1).size == 37
        raw(ledger_url, "UPDATE nodes SET hash = ? WHERE id = ?", (b"\x00" * 32, node_id(1, 3)))
        with pytest.raises(LedgerIntegrityError, match="tree node at level 1"):
            verify_ledger(ledger, jobs=1)


def test_bulk_append_equals_batched_appends_and_restores_the_indexes(
    ledger_url: str, tmp_path: object
) -> None:
    from trainguard.ledger.verify import verify_ledger

    records = _records(50)
    with Ledger.open(ledger_url, create=True) as bulk:
        with bulk.deferred_indexes():
            assert _index_count(ledger_url) == 0
            bulk.append(records[:5])  # appends stay atomic and queryable meanwhile
            assert [r[1] for r in bulk.storage.select("runs", "run_id", ["r3"])] == ["r3"]
        assert _index_count(ledger_url) == 15
        result = bulk.bulk_append(records[5:], batch=8)
        assert _index_count(ledger_url) == 15
        plain = Ledger.open(f"sqlite:///{tmp_path}/plain.db", create=True)
        full = plain.append(records)
        assert (result.first, result.size, result.root) == (45, full.size, full.root)
        for table in ("runs", "run_hosts", "edges"):
            assert bulk.storage.rows(table, 0, 50) == plain.storage.rows(table, 0, 50)
        assert verify_ledger(bulk, jobs=1).root == result.root
        plain.close()


def test_batch_writer_commits_in_order_and_reraises_a_failed_commit(ledger_url: str) -> None:
    from trainguard.ledger._ledger import BatchWriter

    records = _records(30)
    with Ledger.open(ledger_url, create=True) as ledger:
        with BatchWriter(ledger.storage) as writer:
            for i in range(0, 30, 7):
                writer.submit([prepare(r) for r in records[i : i + 7]])
            result = writer.flush()
        assert result is not None and result.size == 30
        assert [e.data for e in ledger.entries(0, 30)] == [prepare(r).data for r in records]
        assert writer.append_seconds > 0
        # A commit that fails (an empty batch is refused) surfaces at the next submit
        # or at the end of the block; nothing after it is committed.
        with pytest.raises(ValueError, match="nothing to append"), BatchWriter(ledger.storage) as w:
            w.submit([])
            w.submit([prepare(records[0])])
        with pytest.raises(ValueError, match="nothing to append"), BatchWriter(ledger.storage) as w:
            w.submit([prepare(records[0])])
            w.submit([])
        # The batch in flight when the caller fails is still committed (acknowledged
        # entries are never dropped), and the error is the caller's.
        with pytest.raises(RuntimeError, match="caller"), BatchWriter(ledger.storage) as w:
            w.submit([prepare(records[1])])
            assert not gc.isenabled()  # paused for the import...
            raise RuntimeError("caller")
        assert ledger.size() == 32
        assert gc.isenabled()  # ...and back on however the block ends
        with BatchWriter(ledger.storage, pause_gc=False) as w:
            assert gc.isenabled()


def _index_count(url: str) -> int:
    """Query indexes on the derived tables (primary keys aside)."""
    from tests.ledger.test_verify_tamper import raw

    if url.startswith("sqlite"):
        sql = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        return int(raw(url, sql)[0][0])
    return int(
        raw(
            url,
            "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexname NOT LIKE '%%pkey'",
        )[0][0]
    )


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


def test_select_answers_in_leaf_order(ledger_url: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(30))
        store = ledger.storage
        runs = [f"r{i}" for i in range(0, 30, 3)]
        edges = store.select("edges", "run_id", runs)
        assert len(edges) == 20
        # Whatever the order (or repetition) of the values asked for: a report built
        # from these rows must not change between two runs.
        assert [r[0] for r in edges] == sorted(r[0] for r in edges)
        assert store.select("edges", "run_id", [*runs[::-1], *runs]) == edges
        assert store.select("edges", "digest", []) == []


def test_readers_are_other_runs_rows_naming_the_digests(ledger_url: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(30))  # r0, r3, ... each produce ckpt-(i+1) and read it back
        ledger.append(
            [
                f.used("x1", "ckpt-1"),
                f.used("x1", "ckpt-4"),
                f.produced("x2", "ckpt-4"),  # a second producer: named too
                f.used("x2", "ckpt-100"),
                f.produced("r6", "ckpt-1"),  # r6 produces what r0 did
            ]
        )
        store = ledger.storage
        digests = [f.digest("ckpt-4"), f.digest("ckpt-1"), f.digest("ckpt-4")]
        rows = store.readers(digests, ["r0", "r3", "r0"])
        assert [(r[1], r[2], r[3]) for r in rows] == [
            ("x1", "used", f.digest("ckpt-1")),
            ("x1", "used", f.digest("ckpt-4")),
            ("x2", "produced", f.digest("ckpt-4")),
            ("r6", "produced", f.digest("ckpt-1")),
        ]
        # Each row as select() gives it, in leaf order whatever the order asked in;
        # the named runs' own rows are left out, and only theirs.
        by_digest = store.select("edges", "digest", digests)
        assert rows == [r for r in by_digest if r[1] not in ("r0", "r3")]
        assert store.readers(digests[::-1], ["r3", "r0"]) == rows
        assert store.readers(digests, ["r0"]) == [r for r in by_digest if r[1] != "r0"]
        assert store.readers(digests, []) == by_digest
        assert store.readers([f.digest("nope")], ["r0"]) == store.readers([], ["r0"]) == []


def test_product_readers_come_with_what_the_produced_rows_say(ledger_url: str) -> None:
    import hashlib

    from tests.ledger.test_verify_tamper import raw

    def fingerprint(digests: list[str]) -> tuple[int, str]:
        return len(digests), hashlib.sha256("\n".join(digests).encode()).hexdigest()

    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(30))  # r0, r3, ... each produce ckpt-(i+1) and read it back
        ledger.append([f.used("x1", "ckpt-4"), f.used("x1", "ckpt-1"), f.produced("r3", "ckpt-9")])
        store = ledger.storage
        produced = [f.digest("ckpt-1"), f.digest("ckpt-4"), f.digest("ckpt-9")]  # by leaf
        rows, said = store.product_readers(["r3", "r0", "r3"])
        # The readers of every digest the runs' produced rows name, as readers() gives them.
        assert rows == store.readers(produced, ["r0", "r3"])
        assert [r[1] for r in rows] == ["x1", "x1"]
        assert said == fingerprint(produced)
        assert store.product_readers(["x1"]) == ([], fingerprint([]))
        assert store.product_readers(["nope"]) == ([], fingerprint([]))
        # A produced row altered in the table: its readers are not found, and the
        # fingerprint says what the rows said (the caller compares it with the entries).
        raw(ledger_url, "UPDATE edges SET digest = 'sha256:00' WHERE run_id = 'r0'")
        rows, said = store.product_readers(["r0", "r3"])
        assert [r[3] for r in rows] == [f.digest("ckpt-4")]
        assert said == fingerprint(["sha256:00", f.digest("ckpt-4"), f.digest("ckpt-9")])
        store.close()


def test_edge_entries_locate_a_runs_edges_and_bring_their_entries(ledger_url: str) -> None:
    from tests.ledger.test_verify_tamper import raw

    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(30))
        store = ledger.storage
        runs = [f"r{i}" for i in range(0, 30, 3)]
        joined = store.edge_entries([*runs, "nope", *runs])
        # The rows select() finds, in leaf order: the leaf and run id, then the entry.
        rows = store.select("edges", "run_id", runs)
        assert [r[:2] for r in joined] == [r[:2] for r in rows]
        assert len(joined) == 20
        entries = {e[0]: e for e in store.entries_at([r[0] for r in joined])}
        assert [r[2:] for r in joined] == [entries[r[0]][2:] for r in joined]
        assert store.edge_entries([]) == []
        # The rows' other columns are not read: an altered digest does not show here
        # (the entry says the digest), and an entry that is gone gives None for it.
        gone = joined[3][0]  # inside a run of consecutive leaves (r9's two)
        raw(ledger_url, "UPDATE edges SET digest = 'sha256:00' WHERE leaf = ?", (joined[0][0],))
        raw(ledger_url, "DELETE FROM entries WHERE leaf = ?", (gone,))
        after = store.edge_entries(runs)
        assert [r for r in after if r[0] != gone] == [r for r in joined if r[0] != gone]
        assert [r[2:] for r in after if r[0] == gone] == [(None, None)]
        store.close()


@pytest.mark.parametrize("table", ["edges", "runs"])
def test_rows_with_entries_bring_each_row_with_its_entry(ledger_url: str, table: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(30))
        store = ledger.storage
        runs = [f"r{i}" for i in range(0, 30, 3)]
        joined = store.rows_with_entries(table, "run_id", [*runs, "nope", *runs])
        # The rows select() gives, in leaf order, each with its stored entry.
        assert [r[:-3] for r in joined] == store.select(table, "run_id", runs)
        assert len(joined) == {"edges": 20, "runs": 10}[table]
        entries = {e[0]: e for e in store.entries_at([r[0] for r in joined])}
        assert [r[-3:] for r in joined] == [entries[r[0]][1:] for r in joined]
        assert store.rows_with_entries(table, "run_id", []) == []
        with pytest.raises(ValueError):
            store.rows_with_entries(table, "run_id; DROP TABLE runs", ["x"])


@pytest.mark.parametrize("table", ["edges", "runs"])
def test_rows_with_entries_give_none_for_an_entry_that_is_gone(ledger_url: str, table: str) -> None:
    from tests.ledger.test_verify_tamper import raw

    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(30))
        store = ledger.storage
        runs = [f"r{i}" for i in range(0, 30, 3)]
        before = store.rows_with_entries(table, "run_id", runs)
        gone = before[3][0]  # inside a run of consecutive leaves (edges: r9's two)
        raw(ledger_url, "DELETE FROM entries WHERE leaf = ?", (gone,))
        after = store.rows_with_entries(table, "run_id", runs)
        # Every row still comes, in leaf order; only the one whose entry is gone
        # lacks it (a caller then reports the row: it names no entry).
        assert [r[:-3] for r in after] == [r[:-3] for r in before]
        assert [r[-3:] for r in after if r[0] == gone] == [(None, None, None)]
        assert [r for r in after if r[0] != gone] == [r for r in before if r[0] != gone]


def test_serial_reads_read_the_same_rows_in_one_server_process(ledger_url: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(_records(30))
        store = ledger.storage
        want = store.counts(), store.run_totals(f.T0 + 100)
        with store.serial_reads():
            assert (store.counts(), store.run_totals(f.T0 + 100)) == want
            if ledger_url.startswith("postgresql"):
                shown = store._execute("SHOW max_parallel_workers_per_gather")  # type: ignore[attr-defined]
                assert shown == [("0",)]
        if ledger_url.startswith("postgresql"):
            shown = store._execute("SHOW max_parallel_workers_per_gather")  # type: ignore[attr-defined]
            assert shown != [("0",)]  # as the connection had it before


def test_newest_runs_pages_each_run_by_its_first_record(ledger_url: str) -> None:
    with Ledger.open(ledger_url, create=True) as ledger:
        ledger.append(
            [
                f.run("a", start=f.T0 + 10),
                f.run("b", start=f.T0 + 30),
                f.run("c", start=f.T0 + 20),
                f.run("d", start=f.T0 + 20),  # same start as c, later leaf: listed first
                f.run("a", start=f.T0 + 99),  # recorded again: its first record counts
            ]
        )
        store = ledger.storage
        total, rows = store.newest_runs(0, 10)
        assert total == 4
        assert [(r[0], r[1]) for r in rows] == [(1, "b"), (3, "d"), (2, "c"), (0, "a")]
        assert [r[1] for r in store.newest_runs(1, 2)[1]] == ["d", "c"]
        assert store.newest_runs(4, 2) == (4, [])


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


@pytest.mark.postgres
@pytest.mark.parametrize(
    "values",
    [
        [0, 1, -1, 2**63 - 1, -(2**63), 7, 7],
        ["sha256:00", "", "é€😀", "a,b", '"{}"', "NULL"],
    ],
)
def test_postgres_array_parameters_arrive_as_sent(postgres_url: str, values: list) -> None:
    # Probe lists are encoded in PostgreSQL's binary array format by trainguard, not
    # by psycopg's (slow) list dumper: the server must read back exactly the values.
    from trainguard.ledger.storage.postgres import array_param

    store = open_storage(postgres_url)
    try:
        store.init("test")
        param = array_param(values)
        assert type(param) is not list  # encoded here
        rows = store._execute(
            "SELECT v FROM unnest(%b) WITH ORDINALITY AS u(v, i) ORDER BY i", (param,)
        )
        assert [r[0] for r in rows] == values
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_digest_index_is_a_hash_index_and_a_b_tree_is_replaced_by_maintain(
    postgres_url: str,
) -> None:
    # A hash index on edges.digest, probed a value at a time (a bitmap scan of it
    # for ANY(array) compares each row with every value). A ledger made before has
    # a B-tree until maintain() makes it a hash index: both give the same rows.
    digests = [f.digest("ckpt-1"), f.digest("ckpt-4"), f.digest("nope")]

    def answers(store: Any) -> tuple[list[Any], list[Any]]:
        return store.select("edges", "digest", digests), store.readers(digests, ["r0", "r3"])

    with Ledger.open(postgres_url, create=True) as ledger:
        ledger.append(_records(30))
        ledger.append([f.used("x1", "ckpt-1"), f.produced("r6", "ckpt-1"), f.used("x1", "ckpt-4")])
        store: Any = ledger.storage
        assert store._digest_index() == "hash"
        want = answers(store)
        assert [r[1] for r in want[1]] == ["x1", "r6", "x1"]
        store._execute("DROP INDEX edges_digest")
        store._execute("CREATE INDEX edges_digest ON edges (digest)")
    with Ledger.open(postgres_url) as ledger:
        store = ledger.storage
        assert store._digest_index() == "btree"
        assert answers(store) == want
        store.maintain()
        assert store._digest_index() == "hash"
        assert answers(store) == want


@pytest.mark.parametrize("values", [[], [1, "a"], [True, 1], [2**63], [None], ["\ud800"], [1.5]])
def test_array_parameters_psycopg_must_judge_go_to_it_unchanged(values: list) -> None:
    from trainguard.ledger.storage.postgres import array_param

    assert array_param(values) == values and type(array_param(values)) is list


@settings(max_examples=800, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(st.sampled_from('ab09:"\\ \x00\x1f\x7fé€😀'), max_size=5),
            st.from_regex(r"sha256:[0-9a-f]{4}", fullmatch=True),
        ),
        max_size=6,
    )
)
def test_sqlite_probe_lists_are_the_json_of_the_values(values: list[str]) -> None:
    # The probe lists SQLite's json_each reads: plain strings are joined as they
    # are, anything that needs escaping goes through json.dumps; the same values back.
    import json

    from trainguard.ledger.storage.sqlite import _json_list

    assert json.loads(_json_list(values)) == values
