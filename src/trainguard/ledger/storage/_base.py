"""The SQL both backends share: schema, append algorithm, reads.

A backend supplies the connection, the placeholder style, how to take the
append lock and how to insert many rows fast; everything else is here so the
two backends cannot drift apart.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from operator import itemgetter
from typing import Any

from trainguard.errors import LedgerIntegrityError, StorageError
from trainguard.ledger import _fast, _merkle
from trainguard.ledger._index import INDEXES, INTEGER_COLUMNS, PRIMARY, TABLES
from trainguard.ledger.signing import SignedTreeHead
from trainguard.ledger.storage import (
    NODE_LEVEL,
    AppendResult,
    PreparedEntry,
    node_id,
)
from trainguard.ledger.storage._url import LedgerURL

_first = itemgetter(0)

#: "2": tree nodes from ``meta.node_level`` up (version 1 stored every level).
SCHEMA_VERSION = "2"


def _check_name(table: str, column: str | None = None) -> None:
    # Table and column names are interpolated into SQL: only the known ones pass.
    if table not in TABLES or (column is not None and column not in TABLES[table]):
        raise ValueError(f"unknown derived column {table}.{column}")


class SQLStorage(ABC):
    """Shared implementation of :class:`~trainguard.ledger.storage.Storage` over DB-API."""

    #: ``"?"`` or ``"%s"``.
    param: str
    separate_process: bool
    blob: str
    bigint: str

    def __init__(self, url: LedgerURL) -> None:
        self.url = url
        self._node_level: int | None = None

    # -- backend hooks -------------------------------------------------------------

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (in the current transaction, if any) and fetch all rows."""

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A bulk read (entries, nodes, derived rows); a backend may fetch it in a faster format."""
        return self._execute(sql, params)

    @abstractmethod
    def _locked(self) -> AbstractContextManager[None]:
        """A write transaction holding the ledger-wide append lock; commits on exit."""

    @abstractmethod
    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert many rows inside the current transaction."""

    @abstractmethod
    def _table_exists(self, table: str) -> bool: ...

    @abstractmethod
    def _prepare_schema(self) -> None:
        """Backend-specific set-up before the tables are created (PostgreSQL: the schema)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def maintain(self) -> None: ...

    # -- schema --------------------------------------------------------------------

    def _ddl(self) -> list[str]:
        b, big = self.blob, self.bigint
        stmts = [
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS entries (leaf {big} PRIMARY KEY, kind TEXT NOT NULL,"
            f" data {b} NOT NULL, leaf_hash {b} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS nodes (id {big} PRIMARY KEY, hash {b} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS heads (size {big} NOT NULL, timestamp {big} NOT NULL,"
            " key_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (size, timestamp, key_id))",
        ]
        for table, columns in TABLES.items():
            cols = ", ".join(f"{c} {big if c in INTEGER_COLUMNS else 'TEXT'}" for c in columns)
            if table in PRIMARY:
                # One row per entry: the leaf is the key (in SQLite, the rowid itself).
                cols = cols.replace(f"leaf {big}", f"leaf {big} PRIMARY KEY", 1)
                stmts.append(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
            else:
                stmts.append(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        return stmts + self._index_ddl()

    @staticmethod
    def _indexes() -> list[tuple[str, str]]:
        """``(table, column)`` of every query index: the leaf of multi-row tables, then INDEXES."""
        return [(t, "leaf") for t in TABLES if t not in PRIMARY] + list(INDEXES)

    def _index_ddl(self) -> list[str]:
        return [f"CREATE INDEX IF NOT EXISTS {t}_{c} ON {t} ({c})" for t, c in self._indexes()]

    @contextmanager
    def deferred_indexes(self) -> Iterator[None]:
        with self._locked():
            for table, column in self._indexes():
                self._execute(f"DROP INDEX IF EXISTS {table}_{column}")
        try:
            yield
        finally:
            self._rebuild_indexes()

    def _rebuild_indexes(self) -> None:
        with self._locked():
            for stmt in self._index_ddl():
                self._execute(stmt)

    def init(self, origin: str) -> str:
        self._prepare_schema()
        with self._locked():
            for stmt in self._ddl():
                self._execute(stmt)
            rows = self._execute(f"SELECT value FROM meta WHERE key = {self.param}", ("origin",))
            if rows:
                existing: str = rows[0][0]
                return existing
            p = self.param
            for key, value in (
                ("origin", origin),
                ("schema_version", SCHEMA_VERSION),
                ("node_level", str(NODE_LEVEL)),
            ):
                self._execute(f"INSERT INTO meta (key, value) VALUES ({p}, {p})", (key, value))
        self._node_level = None
        return origin

    def node_level(self) -> int:
        if self._node_level is None:
            rows = self._execute(
                f"SELECT value FROM meta WHERE key = {self.param}", ("node_level",)
            )
            # Ledgers made before node_level existed store every level.
            text = str(rows[0][0]) if rows else "1"
            if not text.isdigit() or not 1 <= int(text) <= 16:
                raise LedgerIntegrityError(
                    "the ledger's node_level setting is not a level from 1 to 16",
                    subject=self.url.text,
                    found=repr(text),
                    hint="run `trainguard ledger verify`; the meta table was edited",
                )
            self._node_level = int(text)
        return self._node_level

    def origin(self) -> str | None:
        if not self._table_exists("meta"):
            return None
        rows = self._execute(f"SELECT value FROM meta WHERE key = {self.param}", ("origin",))
        return str(rows[0][0]) if rows else None

    # -- append --------------------------------------------------------------------

    def _size_locked(self) -> int:
        rows = self._execute("SELECT MAX(leaf) FROM entries")
        return 0 if rows[0][0] is None else int(rows[0][0]) + 1

    def append(self, entries: Sequence[PreparedEntry]) -> AppendResult:
        if not entries:
            raise ValueError("nothing to append")
        with self._locked():
            first = self._size_locked()
            keys = _merkle.decompose(0, first) if first else []
            found = self.perfect(keys)
            if len(found) != len(keys):
                missing = [k for k in keys if k not in found]
                raise LedgerIntegrityError(
                    "the stored Merkle tree is missing subtrees needed to append",
                    subject=self.url.text,
                    expected=f"perfect subtrees {keys}",
                    found=f"missing {missing}",
                    hint="run `trainguard ledger verify`: entries or nodes were deleted",
                )
            leaves = [e.leaf_hash for e in entries]
            completed, root = _merkle.extend(
                first, [found[k] for k in keys], leaves, self.node_level()
            )
            new_nodes = sorted((node_id(level, index), h) for level, index, h in completed)
            entry_rows = [
                (leaf, e.kind, e.data, e.leaf_hash) for leaf, e in enumerate(entries, first)
            ]
            derived: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
            for leaf, e in enumerate(entries, first):
                for table, values in e.rows:
                    derived[table].append((leaf, *values))
            self._insert("entries", ("leaf", "kind", "data", "leaf_hash"), entry_rows)
            if new_nodes:
                self._insert("nodes", ("id", "hash"), new_nodes)
            for table, rows in derived.items():
                if rows:
                    self._insert(table, TABLES[table], rows)
        return AppendResult(first, first + len(entries), root)

    # -- reads ---------------------------------------------------------------------

    def size(self) -> int:
        return self._size_locked()

    def entries(self, start: int, stop: int) -> list[tuple[int, str, bytes, bytes]]:
        p = self.param
        rows = self._read(
            f"SELECT leaf, kind, data, leaf_hash FROM entries WHERE leaf >= {p} AND leaf < {p}"
            " ORDER BY leaf",
            (start, stop),
        )
        return rows  # (int, str, bytes, bytes) from both drivers, no conversion needed

    def entries_at(self, leaves: Collection[int]) -> list[tuple[int, str, bytes, bytes]]:
        rows = self._in(
            "SELECT leaf, kind, data, leaf_hash FROM entries WHERE leaf IN ({inl})",
            sorted(set(leaves)),
        )
        return sorted(rows)  # (int, str, bytes, bytes) from both drivers: no conversion needed

    def nodes(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        p = self.param
        rows = self._read(
            f"SELECT id, hash FROM nodes WHERE id >= {p} AND id < {p} ORDER BY id", (start, stop)
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    @abstractmethod
    def _in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run ``sql``, each ``IN ({inl})`` in it standing for ``IN`` all of ``values``
        (one statement, whatever their number); no rows for no values."""

    def perfect(self, keys: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        stored_from = self.node_level()
        level0: list[int] = []
        leaves: set[int] = set()
        low: dict[int, list[int]] = {}
        inner: dict[int, tuple[int, int]] = {}
        for key in keys:
            level, index = key
            if level == 0:
                level0.append(index)
            elif level < stored_from:  # not stored: recomputed from its leaves
                low.setdefault(level, []).append(index)
                leaves.update(range(index << level, (index + 1) << level))
            else:
                inner[node_id(level, index)] = key
        leaves.update(level0)
        # (int, bytes) rows from both drivers: no conversion needed.
        sql = "SELECT leaf, leaf_hash FROM entries WHERE leaf IN ({inl})"
        hashes: dict[int, bytes] = dict(self._in(sql, sorted(leaves)))
        out = {(0, i): hashes[i] for i in level0 if i in hashes}
        # The subtrees of one level, their leaves laid end to end, are that level of
        # one list's perfect subtrees: one compiled call per level (~10^4 subtrees).
        for level, indexes in low.items():
            spans: list[bytes] = []
            kept = []
            for index in indexes:
                span = [hashes.get(leaf) for leaf in range(index << level, (index + 1) << level)]
                if None not in span:  # (a missing leaf: the key stays absent)
                    spans.extend(span)  # type: ignore[arg-type]
                    kept.append(index)
            if kept:
                roots = _fast.perfect_levels(spans)[level]
                out.update(((level, index), h) for index, h in zip(kept, roots, strict=True))
        for nid, h in self._in("SELECT id, hash FROM nodes WHERE id IN ({inl})", sorted(inner)):
            out[inner[int(nid)]] = bytes(h)
        return out

    def rows(self, table: str, start: int, stop: int) -> list[tuple[Any, ...]]:
        _check_name(table)
        cols = ", ".join(TABLES[table])
        p = self.param
        # (Both drivers give rows as tuples: no copy.)
        return self._read(
            f"SELECT {cols} FROM {table} WHERE leaf >= {p} AND leaf < {p} ORDER BY leaf",
            (start, stop),
        )

    def select(self, table: str, column: str, values: Collection[Any]) -> list[tuple[Any, ...]]:
        _check_name(table, column)
        cols = ", ".join(TABLES[table])
        # In leaf order: PostgreSQL's parallel scans return rows in any order, and a
        # report (the first reasons found per run) must not change between two runs.
        sql = f"SELECT {cols} FROM {table} t WHERE {column} IN ({{inl}}) ORDER BY t.leaf"
        return self._in(sql, list(set(values)))

    #: How :meth:`rows_with_entries` joins each row ``t`` to its entry ``e``.
    _entry_join = "LEFT JOIN entries e ON e.leaf = t.leaf"

    def rows_with_entries(
        self, table: str, column: str, values: Collection[Any]
    ) -> list[tuple[Any, ...]]:
        # One read for the rows and the entries they name: the entries are what a
        # blast radius proves, and what each row is checked against.
        _check_name(table, column)
        cols = ", ".join(f"t.{c}" for c in TABLES[table])
        sql = (
            f"SELECT {cols}, e.kind, e.data, e.leaf_hash FROM {table} t {self._entry_join}"
            f" WHERE t.{column} IN ({{inl}})"
        )
        # Sorted here: an ORDER BY sorts the entries' bytes with the rows (SQLite: a
        # temporary B-tree, a third of the query's time for 10^4-10^5 rows).
        rows = self._in(sql, list(set(values)))
        rows.sort(key=_first)
        return rows

    def edge_entries(self, run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        # The run_id index gives each row's leaf (SQLite: no table row read), then
        # its entry: the entry's text says the rest (SQLite, the 99k edges of a
        # large blast radius: 114-124 ms, against 209-218 reading the rows too).
        sql = (
            "SELECT t.leaf, t.run_id, e.data, e.leaf_hash FROM edges t"
            f" {self._entry_join} WHERE t.run_id IN ({{inl}})"
        )
        rows = self._in(sql, list(set(run_ids)))
        rows.sort(key=_first)
        return rows

    @abstractmethod
    def readers(
        self, digests: Collection[str], run_ids: Collection[str]
    ) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def product_readers(
        self, run_ids: Collection[str]
    ) -> tuple[list[tuple[Any, ...]], tuple[int, str]]: ...

    def runs_in_window(self, start: int, stop: int) -> list[tuple[Any, ...]]:
        cols = ", ".join(TABLES["runs"])
        p = self.param
        # Runs with a recorded end before the window are dropped in SQL; the
        # rest (ended later, or ended in a run_end entry) are checked by the caller.
        return self._execute(
            f"SELECT {cols} FROM runs WHERE started_at < {p} AND (ended_at IS NULL OR ended_at >= {p})",
            (stop, start),
        )

    def runs_started(self, start: int, stop: int, limit: int) -> list[tuple[Any, ...]]:
        cols = ", ".join(TABLES["runs"])
        p = self.param
        return self._execute(
            f"SELECT {cols} FROM runs WHERE started_at >= {p} AND started_at < {p}"
            f" ORDER BY started_at, leaf LIMIT {p}",
            (start, stop, limit),
        )

    def newest_runs(self, offset: int, limit: int) -> tuple[int, list[tuple[Any, ...]]]:
        cols = ", ".join(f"r.{c}" for c in TABLES["runs"])
        p = self.param
        # Walks the started_at index backwards and keeps a row only if no earlier
        # record has its run id: a page costs its own rows, not the whole table.
        rows = self._execute(
            f"SELECT {cols} FROM runs r WHERE NOT EXISTS (SELECT 1 FROM runs e"
            " WHERE e.run_id = r.run_id AND e.leaf < r.leaf)"
            f" ORDER BY r.started_at DESC, r.leaf DESC LIMIT {p} OFFSET {p}",
            (limit, offset),
        )
        total = self._execute("SELECT COUNT(DISTINCT run_id) FROM runs")[0][0]
        return int(total), rows

    def run_totals(self, as_of: int) -> list[tuple[str, int, int]]:
        p = self.param
        rows = self._execute(
            "SELECT accelerator_type, COUNT(*), SUM(accelerator_count * (end_at - started_at))"
            " FROM (SELECT r.accelerator_type, r.accelerator_count, r.started_at,"
            " COALESCE(r.ended_at, (SELECT MAX(e.ended_at) FROM run_ends e"
            f" WHERE e.run_id = r.run_id), {p}) AS end_at FROM runs r) t"
            " GROUP BY accelerator_type ORDER BY accelerator_type",
            (as_of,),
        )
        return [(str(t), int(n), int(s or 0)) for t, n, s in rows]

    def counts(self) -> dict[str, int]:
        # Counting the entries themselves would read every (large) row: the leaf
        # index bound stands in for it; gaps below it are verify's to find.
        size = self._size_locked()
        p = self.param
        names = [*TABLES, "n_hosts", "n_files", "out_of_range"]
        parts = [f"(SELECT COUNT(*) FROM {t})" for t in TABLES]
        parts += [
            "(SELECT COALESCE(SUM(n_hosts), 0) FROM runs)",
            "(SELECT COALESCE(SUM(n_files), 0) FROM events)",
            " + ".join(f"(SELECT COUNT(*) FROM {t} WHERE leaf < 0 OR leaf >= {p})" for t in TABLES),
        ]
        row = self._execute("SELECT " + ", ".join(parts), (size,) * len(TABLES))[0]
        return {"entries": size, **{n: int(v) for n, v in zip(names, row, strict=True)}}

    def node_count(self) -> int:
        return int(self._execute("SELECT COUNT(*) FROM nodes")[0][0])

    def serial_reads(self) -> AbstractContextManager[None]:
        return nullcontext()  # (SQLite reads in the calling thread only)

    # -- tree heads ----------------------------------------------------------------

    def add_head(self, head: SignedTreeHead) -> None:
        p = self.param
        body = json.dumps(head.to_json(), sort_keys=True)
        with self._locked():
            exists = self._execute(
                f"SELECT 1 FROM heads WHERE size = {p} AND timestamp = {p} AND key_id = {p}",
                (head.size, head.timestamp, head.key_id),
            )
            if not exists:
                self._execute(
                    f"INSERT INTO heads (size, timestamp, key_id, body) VALUES ({p}, {p}, {p}, {p})",
                    (head.size, head.timestamp, head.key_id, body),
                )

    def heads(self) -> list[SignedTreeHead]:
        rows = self._execute(
            "SELECT size, timestamp, key_id, body FROM heads ORDER BY size, timestamp, key_id"
        )
        out = []
        for size, ts, key_id, body in rows:
            try:
                head = SignedTreeHead.from_json(json.loads(body))
            except json.JSONDecodeError as exc:
                raise LedgerIntegrityError(
                    "a stored tree head is not JSON", subject=f"tree head size {size}"
                ) from exc
            if (head.size, head.timestamp, head.key_id) != (size, ts, key_id):
                raise LedgerIntegrityError(
                    "a stored tree head disagrees with its row",
                    subject=f"tree head size {size}",
                    expected=f"size {size}, timestamp {ts}, key {key_id}",
                    found=f"size {head.size}, timestamp {head.timestamp}, key {head.key_id}",
                )
            out.append(head)
        return out


def wrap(exc: Exception, url: LedgerURL, action: str) -> StorageError:
    """A storage error for people, from a backend exception."""
    return StorageError(
        f"ledger storage failed while {action}: {exc}",
        subject=url.text,
        hint="check that the ledger URL is right and the database is reachable",
    )
