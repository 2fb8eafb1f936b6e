"""PostgreSQL backend: the cluster ledger, shared by every node (psycopg 3).

Appends take a transaction-scoped advisory lock named after the ledger's
schema before reading the tree size, so concurrent writers on many hosts are
serialized: leaf indexes have no gaps or duplicates, and a writer that dies
mid-append leaves nothing behind (its transaction is rolled back and its lock
released). An append returns after ``COMMIT``: acknowledged means durable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from trainguard.errors import ConfigError, StorageError
from trainguard.ledger._index import INTEGER_COLUMNS, TABLES
from trainguard.ledger.storage import AppendResult, PreparedEntry
from trainguard.ledger.storage._base import SQLStorage, wrap
from trainguard.ledger.storage._url import LedgerURL

__all__ = ["PostgresStorage"]

#: Below this many entries, scans are cheap and statistics do not matter.
_ANALYZE_FROM = 1 << 16


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            "a PostgreSQL ledger needs psycopg 3", hint="pip install 'trainguard[postgres]'"
        ) from exc
    return psycopg


class PostgresStorage(SQLStorage):
    """A ledger in one schema of a PostgreSQL database."""

    param = "%s"
    blob = "BYTEA"
    bigint = "BIGINT"

    def __init__(self, url: LedgerURL) -> None:
        super().__init__(url)
        if url.dsn is None:
            raise StorageError(
                "a PostgreSQL ledger URL needs a connection string", subject=url.text
            )
        self.schema = url.schema
        # A 64-bit advisory lock key private to this ledger's schema.
        digest = hashlib.sha256(f"trainguard.ledger:{self.schema}".encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], "big", signed=True)
        self._conn: Any = None
        self._psycopg = _psycopg()

    @property
    def conn(self) -> Any:
        if self._conn is None:
            try:
                conn = self._psycopg.connect(self.url.dsn, autocommit=True)
                conn.execute(f'SET search_path TO "{self.schema}"')
            except self._psycopg.Error as exc:
                raise wrap(exc, self.url, "connecting") from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _execute(
        self, sql: str, params: Sequence[Any] = (), binary: bool = False
    ) -> list[tuple[Any, ...]]:
        try:
            cur = self.conn.execute(sql, params or None, binary=binary)
            return cur.fetchall() if cur.description is not None else []
        except self._psycopg.Error as exc:
            raise wrap(exc, self.url, "querying") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # Binary results: entry bytes and hashes arrive as they are, not as hex
        # text to decode (half the client's time reading entries).
        return self._execute(sql, params, binary=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            with self.conn.transaction():
                self._execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                yield
        except self._psycopg.Error as exc:
            raise wrap(exc, self.url, "committing") from exc

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        # Binary COPY: hashes and entry bytes travel as they are, not as hex
        # text the server must decode (half the server's work for entries).
        types = [self._column_type(table, c) for c in columns]
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        try:
            with self.conn.cursor().copy(sql) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        except self._psycopg.Error as exc:
            raise wrap(exc, self.url, f"inserting into {table}") from exc

    @staticmethod
    def _column_type(table: str, column: str) -> str:
        if table in ("entries", "nodes") and column in ("data", "leaf_hash", "hash"):
            return "bytea"
        if column in INTEGER_COLUMNS or (table, column) == ("nodes", "id"):
            return "int8"
        return "text"

    def append(self, entries: Sequence[PreparedEntry]) -> AppendResult:
        result = super().append(entries)
        # Without statistics the planner takes an index lookup of a few hundred
        # digests for a scan of millions of rows. Autovacuum refreshes them in
        # normal operation; when the log doubles, refresh them here too (a
        # sampled ANALYZE, O(log n) times over the life of the ledger).
        if result.size >= _ANALYZE_FROM and result.first.bit_length() != result.size.bit_length():
            self._analyze()
        return result

    def _analyze(self) -> None:
        for table in ("entries", "nodes", *TABLES):
            self._execute(f"ANALYZE {table}")

    def maintain(self) -> None:
        self._rebuild_indexes()
        for table in ("entries", "nodes", *TABLES):
            self._execute(f"VACUUM (ANALYZE) {table}")

    def _table_exists(self, table: str) -> bool:
        rows = self._execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (self.schema, table),
        )
        return bool(rows)

    def _prepare_schema(self) -> None:
        # Concurrent CREATE SCHEMA IF NOT EXISTS can still race on the catalog;
        # the advisory lock makes the first creator win cleanly.
        with self._locked():
            self._execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def _in(self, sql: str, values: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        # One array parameter, sent in binary (%b): the text form costs the client
        # its quoting and the server its parsing, half the time of a 10^5-value probe.
        if values:
            yield from self._read(sql.replace("IN ({inl})", "= ANY(%b)"), (list(values),))

    def _in_except(
        self, sql: str, values: Sequence[Any], held: Sequence[int]
    ) -> Iterator[tuple[Any, ...]]:
        # An anti-join (hashed): ``NOT (leaf = ANY(...))`` would compare every row
        # with every held leaf.
        if values:
            yield from self._read(
                sql.replace(
                    "IN ({inl})",
                    "= ANY(%b) AND NOT EXISTS"
                    " (SELECT 1 FROM unnest(%b::bigint[]) AS h(leaf) WHERE h.leaf = t.leaf)",
                ),
                (list(values), list(held)),
            )
