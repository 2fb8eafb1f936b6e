"""SQLite backend: the embedded default, one WAL-mode file.

Appends run in ``BEGIN IMMEDIATE`` transactions, which SQLite serializes
across processes (on one host; SQLite over a network file system is not
safe, use PostgreSQL there). ``synchronous=FULL`` makes a commit durable
before the append returns, so an acknowledged entry survives a crash of the
writer and of the machine (``?synchronous=normal``: of the writer only).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from trainguard.errors import StorageError
from trainguard.ledger.storage._base import SQLStorage, wrap
from trainguard.ledger.storage._url import LedgerURL

__all__ = ["SQLiteStorage"]

#: How long a writer waits for the append lock before giving up (milliseconds).
BUSY_TIMEOUT_MS = 120_000
#: Page cache per connection (KiB).
CACHE_KIB = 128 * 1024
#: Pages are read through a memory map up to this size (SQLite caps it at its
#: compile-time limit, 2 GiB by default): no read() call and copy per page, a
#: third of the time verification spends reading entries. A file truncated
#: under a reader makes that reader fail (SIGBUS), never pass.
MMAP_BYTES = 1 << 40


_PLAIN = {str, int}
_STR = {str}
_first = itemgetter(0)


def _sha256_hex(text: Any) -> str:
    """SHA-256 hex of ``text`` as UTF-8 (of nothing for ``None``: no rows were joined;
    of its ``str()`` for anything else SQLite gives back: it then matches nothing)."""
    raw = b"" if text is None else str(text).encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()


def _json_list(values: Sequence[Any]) -> str:
    """``values`` as one JSON array for ``json_each``. Probe values are read back from
    derived rows, and SQLite keeps any type in any column: a value JSON cannot carry
    (bytes, NaN, infinity; only a tampered row holds one) stands for nothing, since the
    row it came from fails the cross-check either way."""
    types = set(map(type, values))
    if types == _STR:
        # Digests and run ids need no escaping: joined as they are, a quarter of
        # json.dumps' time (85k digests: 7 ms against 32).
        joined = '","'.join(values)
        plain = joined.isascii() and joined.isprintable() and "\\" not in joined
        if plain and joined.count('"') == 2 * (len(values) - 1):  # the separators' own
            return f'["{joined}"]'
    if types <= _PLAIN:  # nearly always: no per-value check in Python
        return json.dumps(values)
    return json.dumps(
        [
            v if type(v) in _PLAIN or (type(v) is float and math.isfinite(v)) else None
            for v in values
        ]
    )


def _in_key_order(values: Sequence[Any]) -> Sequence[Any]:
    """``values`` sorted where they compare (any type can come back from a column).
    SQLite probes an index in the order of the list: in key order each index page
    is visited once, a third less time for 10^4-10^5 digests."""
    try:
        return sorted(values)
    except TypeError:
        return values


class SQLiteStorage(SQLStorage):
    """A ledger in one SQLite file (created, with its directory, on :meth:`init`)."""

    param = "?"
    blob = "BLOB"
    bigint = "INTEGER"
    separate_process = False

    def __init__(self, url: LedgerURL) -> None:
        super().__init__(url)
        if url.path is None:
            raise StorageError("a SQLite ledger URL needs a path", subject=url.text)
        self.path = url.path
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise wrap(exc, self.url, "creating the ledger directory") from exc
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,
                    # BatchWriter commits from its helper thread; one user at a time.
                    check_same_thread=False,
                )
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self.url.synchronous.upper()}")
                # Index inserts land at random pages of big tables: keep them cached.
                conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            except sqlite3.Error as exc:
                raise wrap(exc, self.url, "opening the database") from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise wrap(exc, self.url, "querying") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise wrap(exc, self.url, "taking the append lock") from exc
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        try:
            conn.commit()
        except sqlite3.Error as exc:
            raise wrap(exc, self.url, "committing") from exc

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        try:
            self.conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )
        except sqlite3.Error as exc:
            raise wrap(exc, self.url, f"inserting into {table}") from exc

    def _in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        # One statement for any number of values: the list travels as one JSON
        # parameter (SQLite's json_each), instead of hundreds of IN (?, ...) chunks.
        if not values:
            return []
        listed = _json_list(_in_key_order(values))
        return self._execute(
            sql.replace("IN ({inl})", "IN (SELECT value FROM json_each(?))"),
            (listed,) * sql.count("IN ({inl})"),
        )

    #: :meth:`readers`: one probe of the digest index per digest (in key order); the
    #: runs' own rows are told by their leaves from the run_id index (no table row
    #: is read for them: the producer of every digest asked for is one).
    _PROBE = (
        "SELECT u.leaf, u.run_id, u.direction, u.digest, u.artifact_kind FROM edges u"
        " WHERE u.digest IN ({digests}) AND u.leaf NOT IN"
        " (SELECT o.leaf FROM edges o WHERE o.run_id IN (SELECT value FROM json_each(?1)))"
    )
    _READERS = _PROBE.replace("{digests}", "SELECT value FROM json_each(?2)")

    def readers(self, digests: Collection[str], run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        if not digests:
            return []
        lists = (_json_list(_in_key_order(list(set(v)))) for v in (run_ids, digests))
        rows = self._execute(self._READERS, tuple(lists))
        rows.sort(key=_first)
        return rows

    #: :meth:`product_readers`: the produced rows once (MATERIALIZED), their readers,
    #: then one row with their number and digests in leaf order.
    _PRODUCT_READERS = (
        "WITH p AS MATERIALIZED (SELECT leaf, digest FROM edges"
        " WHERE run_id IN (SELECT value FROM json_each(?1)) AND direction = 'produced') "
        + _PROBE.replace("{digests}", "SELECT digest FROM p")
        + " UNION ALL SELECT NULL, count(*), group_concat(digest, char(10)), NULL, NULL"
        " FROM (SELECT digest FROM p ORDER BY leaf)"
    )

    def product_readers(
        self, run_ids: Collection[str]
    ) -> tuple[list[tuple[Any, ...]], tuple[int, str]]:
        rows = self._execute(
            self._PRODUCT_READERS, (_json_list(_in_key_order(list(set(run_ids)))),)
        )
        _, count, joined, _, _ = rows.pop()
        rows.sort(key=_first)
        return rows, (count, _sha256_hex(joined))

    def maintain(self) -> None:
        self._rebuild_indexes()
        self._execute("ANALYZE")
        self._execute("PRAGMA optimize")

    def _table_exists(self, table: str) -> bool:
        if not self.path.exists():
            return False
        rows = self._execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        )
        return bool(rows)

    def _prepare_schema(self) -> None:
        pass
