"""Every tampering of the stored ledger is caught by ``verify`` (on both backends).

Each test edits the database behind the ledger's back, as an insider with
write access would, and expects :class:`LedgerIntegrityError`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ledger import _factory as f
from trainguard.errors import LedgerIntegrityError
from trainguard.ledger._ledger import Ledger
from trainguard.ledger.signing import SigningKey
from trainguard.ledger.storage import node_id, parse_url
from trainguard.ledger.verify import check_index_counts, verify_ledger

N = 40


def raw(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL (with ``?`` placeholders) directly on the ledger's database."""
    parsed = parse_url(url)
    if parsed.scheme == "sqlite":
        conn = sqlite3.connect(parsed.path)  # type: ignore[arg-type]
        try:
            with conn:
                return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(parsed.dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f'SET search_path TO "{parsed.schema}"')
        cur = conn.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def history() -> list[Any]:
    out: list[Any] = []
    for i in range(N // 4):
        out += [
            f.run(f"r{i}", start=f.T0 + i, hosts=("gpu-001", f"gpu-{i + 2:03d}")),
            f.used(f"r{i}", f"ckpt-{i - 1}"),
            f.produced(f"r{i}", f"ckpt-{i}"),
            f.end(f"r{i}", f.T0 + i + 100),
        ]
    return out


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def signed(ledger_url: str, key: SigningKey) -> Iterator[tuple[str, Ledger]]:
    """A ledger of N entries appended in batches, signed at 17 and at N."""
    with Ledger.open(ledger_url, create=True) as ledger:
        records = history()
        ledger.append(records[:17])
        ledger.sign(key, timestamp=1)
        for i in range(17, N, 6):
            ledger.append(records[i : i + 6])
        ledger.sign(key, timestamp=2)
        yield ledger_url, ledger


def check(ledger: Ledger, key: SigningKey, **kwargs: Any) -> None:
    verify_ledger(ledger, trusted_keys=[key.public_key], jobs=1, **kwargs)


def test_an_untouched_ledger_verifies(signed: tuple[str, Ledger], key: SigningKey) -> None:
    _, ledger = signed
    result = verify_ledger(ledger, trusted_keys=[key.public_key], jobs=1, require_signed=True)
    assert result.size == N and result.root == ledger.head().root
    assert result.heads_checked == 2 and result.signatures_checked
    assert result.unsigned_entries == 0 and not result.caveats
    assert result.derived_rows == N + 2 * (N // 4)  # one row per entry plus two hosts per run


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("chunk_level", [2, 3, 6])
def test_chunked_and_parallel_verification_agree(
    signed: tuple[str, Ledger], key: SigningKey, jobs: int, chunk_level: int
) -> None:
    _, ledger = signed
    result = verify_ledger(
        ledger, trusted_keys=[key.public_key], jobs=jobs, chunk_level=chunk_level
    )
    assert result.root == ledger.head().root and result.heads_checked == 2


def test_without_a_trusted_key_the_result_says_signatures_were_not_checked(
    signed: tuple[str, Ledger],
) -> None:
    _, ledger = signed
    result = verify_ledger(ledger, jobs=1)
    assert not result.signatures_checked and "not checked" in result.caveats[0]


def test_unsigned_tail_is_reported_and_can_be_required(
    signed: tuple[str, Ledger], key: SigningKey
) -> None:
    _, ledger = signed
    ledger.append([f.run("late")])
    result = verify_ledger(ledger, trusted_keys=[key.public_key], jobs=1)
    assert result.unsigned_entries == 1
    with pytest.raises(LedgerIntegrityError, match="not covered"):
        check(ledger, key, require_signed=True)


def test_edited_entry_is_caught(signed: tuple[str, Ledger], key: SigningKey) -> None:
    url, ledger = signed
    data = bytes(raw(url, "SELECT data FROM entries WHERE leaf = 4")[0][0])
    assert b'"ana"' in data
    raw(url, "UPDATE entries SET data = ? WHERE leaf = 4", (data.replace(b"ana", b"eve"),))
    with pytest.raises(LedgerIntegrityError, match="entry 4"):
        check(ledger, key)


def test_an_entry_nested_deeper_than_the_parser_goes_is_a_finding(
    signed: tuple[str, Ledger], key: SigningKey
) -> None:
    # JSON nested 10^5 deep makes the parser give up with RecursionError: that must
    # be reported as a damaged entry, not crash verify (or blast radius).
    from trainguard.ledger import Indicator, blast_radius

    url, ledger = signed
    raw(url, "UPDATE entries SET data = ? WHERE leaf = 5", (b"[" * 100_000 + b"]" * 100_000,))
    with pytest.raises(LedgerIntegrityError, match="entry 5"):
        check(ledger, key)
    with pytest.raises(LedgerIntegrityError):
        blast_radius(ledger, Indicator(runs=("r1",)))


def test_edited_entry_with_recomputed_leaf_hash_is_caught(
    signed: tuple[str, Ledger], key: SigningKey
) -> None:
    from trainguard.ledger._merkle import leaf_hash

    url, ledger = signed
    data = bytes(raw(url, "SELECT data FROM entries WHERE leaf = 4")[0][0]).replace(b"ana", b"eve")
    assert b'"eve"' in data
    raw(url, "UPDATE entries SET data = ?, leaf_hash = ? WHERE leaf = 4", (data, leaf_hash(data)))
    with pytest.raises(LedgerIntegrityError, match="tree node"):
        check(ledger, key)


def test_a_full_rewrite_of_log_and_tree_is_caught_by_the_signed_head(
    signed: tuple[str, Ledger], key: SigningKey, tmp_path: Any
) -> None:
    """The insider rebuilds entries *and* every tree node consistently: only the signature is left."""
    url, ledger = signed
    forged_records = history()
    forged_records[4] = f.run("r1", user="eve", start=f.T0 + 1, hosts=("gpu-001", "gpu-003"))
    with Ledger.open(f"sqlite:///{tmp_path / 'forged.db'}", create=True) as forged:
        forged.append(forged_records)
        entries = forged.storage.entries(0, N)
        nodes = forged.storage.nodes(0, 1 << 62)
    raw(url, "DELETE FROM entries")
    raw(url, "DELETE FROM nodes")
    for leaf, kind, data, h in entries:
        raw(url, "INSERT INTO entries VALUES (?, ?, ?, ?)", (leaf, kind, data, h))
    for nid, h in nodes:
        raw(url, "INSERT INTO nodes VALUES (?, ?)", (nid, h))
    raw(url, "UPDATE runs SET user_name = 'eve' WHERE leaf = 4")
    with pytest.raises(LedgerIntegrityError, match="does not match a signed tree head"):
        check(ledger, key)


def test_deleted_entry_is_caught(signed: tuple[str, Ledger], key: SigningKey) -> None:
    url, ledger = signed
    raw(url, "DELETE FROM entries WHERE leaf = 9")
    with pytest.raises(LedgerIntegrityError, match="missing"):
        check(ledger, key)


def test_reordered_entries_are_caught(signed: tuple[str, Ledger], key: SigningKey) -> None:
    url, ledger = signed
    a = raw(url, "SELECT kind, data, leaf_hash FROM entries WHERE leaf = 1")[0]
    b = raw(url, "SELECT kind, data, leaf_hash FROM entries WHERE leaf = 2")[0]
    raw(url, "UPDATE entries SET kind = ?, data = ?, leaf_hash = ? WHERE leaf = 1", tuple(b))
    raw(url, "UPDATE entries SET kind = ?, data = ?, leaf_hash = ? WHERE leaf = 2", tuple(a))
    with pytest.raises(LedgerIntegrityError):
        check(ledger, key)


def test_inserted_entry_is_caught(signed: tuple[str, Ledger], key: SigningKey) -> None:
    """An entry slipped in at index 3, later ones shifted up, stored tree rebuilt honestly."""
    url, ledger = signed
    rows = raw(url, "SELECT leaf, kind, data, leaf_hash FROM entries ORDER BY leaf")
    fake = ledger.storage.entries(0, 1)[0]
    raw(url, "DELETE FROM entries")
    shifted = [*rows[:3], (3, fake[1], fake[2], fake[3]), *[(r[0] + 1, *r[1:]) for r in rows[3:]]]
    for row in shifted:
        raw(url, "INSERT INTO entries VALUES (?, ?, ?, ?)", tuple(row))
    with pytest.raises(LedgerIntegrityError):
        check(ledger, key)


def test_truncation_is_caught_from_stored_heads(
    signed: tuple[str, Ledger], key: SigningKey
) -> None:
    url, ledger = signed
    raw(url, "DELETE FROM entries WHERE leaf >= 30")
    raw(url, "DELETE FROM nodes WHERE id >= ?", (30 << 6,))
    with pytest.raises(LedgerIntegrityError, match="truncation"):
        check(ledger, key, derived=False)


def test_truncation_with_heads_removed_is_caught_from_a_previously_seen_head(
    signed: tuple[str, Ledger], key: SigningKey
) -> None:
    url, ledger = signed
    seen = ledger.latest_signed_head()
    assert seen is not None
    raw(url, "DELETE FROM entries WHERE leaf >= 30")
    raw(url, "DELETE FROM nodes WHERE id >= ?", (30 << 6,))
    raw(url, "DELETE FROM heads")
    for table in ("runs", "run_hosts", "run_ends", "edges", "artifacts", "events", "file_obs"):
        raw(url, f"DELETE FROM {table} WHERE leaf >= 30")
    check(ledger, key)  # consistent on its own...
    with pytest.raises(LedgerIntegrityError, match="truncation"):
        check(ledger, key, known_heads=[seen])  # ...but not with what the auditor saw before


def test_forged_signature_is_caught(signed: tuple[str, Ledger], key: SigningKey) -> None:
    url, ledger = signed
    body = raw(url, "SELECT body FROM heads WHERE timestamp = 2")[0][0]
    import json

    head = json.loads(body)
    head["root"] = "00" * 32
    raw(url, "UPDATE heads SET body = ? WHERE timestamp = 2", (json.dumps(head),))
    with pytest.raises(LedgerIntegrityError, match="signature is invalid"):
        check(ledger, key)


def test_swapped_key_is_caught(signed: tuple[str, Ledger], key: SigningKey) -> None:
    """The insider edits the log and signs a fresh head with their own key."""
    url, ledger = signed
    raw(url, "DELETE FROM heads")
    raw(url, "UPDATE runs SET user_name = 'eve' WHERE leaf = 0")
    mallory = SigningKey.generate()
    ledger.sign(mallory)
    with pytest.raises(LedgerIntegrityError, match="not trusted"):
        check(ledger, key, derived=False)


@pytest.mark.parametrize("level", [4, 5])
def test_edited_tree_node_is_caught(
    signed: tuple[str, Ledger], key: SigningKey, level: int
) -> None:
    url, ledger = signed
    assert raw(url, "SELECT COUNT(*) FROM nodes WHERE id = ?", (node_id(level, 0),))[0][0] == 1
    raw(url, "UPDATE nodes SET hash = ? WHERE id = ?", (b"\x00" * 32, node_id(level, 0)))
    with pytest.raises(LedgerIntegrityError, match="tree node"):
        check(ledger, key)


def test_deleted_tree_node_is_caught(signed: tuple[str, Ledger], key: SigningKey) -> None:
    url, ledger = signed
    raw(url, "DELETE FROM nodes WHERE id = ?", (node_id(4, 1),))
    with pytest.raises(LedgerIntegrityError, match="missing"):
        check(ledger, key)


@pytest.mark.parametrize("value", ["1", "6", "x"])
def test_an_edited_node_level_is_caught(
    signed: tuple[str, Ledger], key: SigningKey, value: str
) -> None:
    """Claiming other stored levels than the tree holds fails (1: missing nodes; 6: extra ones)."""
    url, _ = signed
    raw(url, "UPDATE meta SET value = ? WHERE key = 'node_level'", (value,))
    with Ledger.open(url) as reopened, pytest.raises(LedgerIntegrityError):
        check(reopened, key)


def test_entry_data_that_is_not_bytes_is_caught(sqlite_url: str, key: SigningKey) -> None:
    """SQLite keeps any type in any column: text where the entry's bytes belong fails cleanly."""
    with Ledger.open(sqlite_url, create=True) as ledger:
        ledger.append(history())
        ledger.sign(key)
        data = bytes(raw(sqlite_url, "SELECT data FROM entries WHERE leaf = 6")[0][0]).decode()
        raw(sqlite_url, "UPDATE entries SET data = ? WHERE leaf = 6", (data,))
        with pytest.raises(LedgerIntegrityError, match="not bytes"):
            check(ledger, key)


def test_inserted_tree_node_is_caught(signed: tuple[str, Ledger], key: SigningKey) -> None:
    url, ledger = signed
    raw(url, "INSERT INTO nodes VALUES (?, ?)", (node_id(20, 0), b"\x00" * 32))
    with pytest.raises(LedgerIntegrityError, match="nodes"):
        check(ledger, key)


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("DELETE FROM edges WHERE leaf = 5", ()),
        ("DELETE FROM run_hosts WHERE leaf = 4 AND host = 'gpu-003'", ()),
        ("UPDATE edges SET digest = ? WHERE leaf = 5", (f.digest("elsewhere"),)),
        ("UPDATE runs SET user_name = 'eve' WHERE leaf = 0", ()),
        ("INSERT INTO edges VALUES (3, 'r0', 'used', ?, 'checkpoint')", (f.digest("x"),)),
        ("INSERT INTO edges VALUES (999, 'r0', 'used', ?, 'checkpoint')", (f.digest("x"),)),
        ("UPDATE entries SET kind = 'alert' WHERE leaf = 0", ()),
        ("UPDATE entries SET kind = 'run' WHERE leaf = 1", ()),
        ("UPDATE edges SET leaf = 7 WHERE leaf = 6", ()),
        ("UPDATE run_hosts SET host = 'gpu-999' WHERE leaf = 4 AND host = 'gpu-001'", ()),
    ],
    ids=[
        "delete-edge",
        "delete-host",
        "alter-edge",
        "alter-run",
        "insert-row",
        "insert-far-row",
        "kind",
        "kind-of-edge",
        "move-edge-row",
        "alter-host",
    ],
)
def test_tampered_derived_tables_are_caught(
    signed: tuple[str, Ledger], key: SigningKey, sql: str, params: tuple[Any, ...]
) -> None:
    url, ledger = signed
    raw(url, sql, params)
    with pytest.raises(LedgerIntegrityError):
        check(ledger, key)


def test_a_runs_hosts_stored_in_another_order_still_verify(
    signed: tuple[str, Ledger], key: SigningKey
) -> None:
    # A run's run_hosts rows are compared as a multiset: the same hosts, stored in
    # an order other than the entry names them (a restore, a rewrite), are fine.
    url, ledger = signed
    hosts = [r[0] for r in raw(url, "SELECT host FROM run_hosts WHERE leaf = 4")]
    assert sorted(hosts) == ["gpu-001", "gpu-003"]
    raw(url, "DELETE FROM run_hosts WHERE leaf = 4")
    for host in reversed(hosts):
        raw(url, "INSERT INTO run_hosts VALUES (4, ?)", (host,))
    assert [r[0] for r in raw(url, "SELECT host FROM run_hosts WHERE leaf = 4")] == hosts[::-1]
    check(ledger, key)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM edges WHERE leaf = 5",
        "DELETE FROM run_hosts WHERE leaf = 4 AND host = 'gpu-003'",
        "INSERT INTO runs (leaf, run_id, user_name, n_hosts) VALUES (1000, 'ghost', 'x', 0)",
    ],
)
def test_index_counts_catch_deleted_and_inserted_rows_cheaply(
    signed: tuple[str, Ledger], sql: str
) -> None:
    url, ledger = signed
    assert check_index_counts(ledger.storage) == []
    raw(url, sql)
    assert check_index_counts(ledger.storage)


def test_a_deletion_made_up_for_by_a_row_elsewhere_is_caught_by_verify_not_the_counts(
    signed: tuple[str, Ledger], key: SigningKey
) -> None:
    # The documented limit of the cheap check: an edge row deleted and a forged
    # run_ends row put at its leaf keep every row count. verify reads every entry.
    url, ledger = signed
    raw(url, "DELETE FROM edges WHERE leaf = 5")
    raw(url, "INSERT INTO run_ends VALUES (5, 'r0', 0)")
    assert check_index_counts(ledger.storage) == []
    with pytest.raises(LedgerIntegrityError):
        check(ledger, key)


def test_a_head_from_another_log_is_rejected(signed: tuple[str, Ledger], key: SigningKey) -> None:
    _, ledger = signed
    other = key.sign_head("another-log", 1, b"\x11" * 32)
    with pytest.raises(LedgerIntegrityError, match="another log"):
        check(ledger, key, known_heads=[other])


def test_the_signer_refuses_to_sign_a_rewritten_log(
    signed: tuple[str, Ledger], key: SigningKey, tmp_path: Any
) -> None:
    """Rewrite entry 4 and the whole tree consistently: the next signature is refused."""
    url, ledger = signed
    forged = history()
    forged[4] = f.run("r1", user="eve", start=f.T0 + 1, hosts=("gpu-001", "gpu-003"))
    with Ledger.open(f"sqlite:///{tmp_path / 'forged.db'}", create=True) as other:
        other.append(forged)
        entries, nodes = other.storage.entries(0, N), other.storage.nodes(0, 1 << 62)
    raw(url, "DELETE FROM entries")
    raw(url, "DELETE FROM nodes")
    for row in entries:
        raw(url, "INSERT INTO entries VALUES (?, ?, ?, ?)", tuple(row))
    for row in nodes:
        raw(url, "INSERT INTO nodes VALUES (?, ?)", tuple(row))
    with pytest.raises(LedgerIntegrityError, match="different roots"):
        ledger.sign(key)  # same size as the last signed head
    ledger.append([f.run("later")])
    with pytest.raises(LedgerIntegrityError, match="consistency proof"):
        ledger.sign(key)  # and after an honest append on top
