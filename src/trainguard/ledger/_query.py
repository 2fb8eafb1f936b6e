"""Where forensic queries get their rows: the derived tables, or the log itself.

:class:`StorageIndex` asks the database's derived tables (fast, indexed) and
remembers every row it handed out, so the answer can later be cross-checked
against the entries those rows claim to come from. :class:`LogIndex` builds
the same tables in memory from the log (slow, but it trusts nothing but the
entries) and is the fallback when the derived tables disagree with the log.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from typing import Any, Protocol, TypeVar

from trainguard.errors import LedgerIntegrityError, StorageError
from trainguard.ledger import _canonical, _fast, _merkle
from trainguard.ledger._index import TABLES, rows_of
from trainguard.ledger.storage import LedgerURL, Storage, open_storage

_T = TypeVar("_T")

__all__ = [
    "Checked",
    "Index",
    "LogIndex",
    "SideConnection",
    "StorageIndex",
    "cross_check",
    "read_checked",
    "used_leaves",
]

_by_leaf = itemgetter(0)
#: What :meth:`Storage.product_readers` returns.
_ProductReaders = tuple[list[tuple[Any, ...]], tuple[int, str]]

#: Entries read per batch when building a :class:`LogIndex`.
_BATCH = 50_000
#: From this many digests, :meth:`StorageIndex.readers` shares them with the side
#: connection where the database has processes of its own (below, waiting for it
#: costs more than it saves).
_SPLIT_FROM = 2_000
#: From this many runs, :meth:`StorageIndex.run_edges` has the side connection read
#: the readers of what they produced meanwhile (see :meth:`Storage.product_readers`).
_SPECULATE_FROM = 100


class Index(Protocol):
    """The queries blast radius and lineage make."""

    #: Every row returned so far, as ``(table, rows)`` batches (rows include their leaf).
    used: list[tuple[str, list[tuple[Any, ...]]]]

    def select(self, table: str, column: str, values: Collection[Any]) -> list[tuple[Any, ...]]:
        """Rows whose ``column`` is one of ``values``, by leaf."""
        ...

    def run_edges(self, run_ids: Collection[str]) -> list[_fast.CheckedEdge]:
        """The edges of ``run_ids``, each with its entry's file name: ``(leaf,
        run_id, direction, digest, artifact_kind, name or None)``, by leaf."""
        ...

    def readers(self, digests: Collection[str], run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        """The ``edges`` rows naming one of ``digests``, except those of ``run_ids``
        (:meth:`run_edges` has them), by leaf."""
        ...

    def run_records(self, run_ids: Collection[str]) -> list[_fast.CheckedRun]:
        """The ``runs`` rows of ``run_ids``, each with its hosts, by leaf."""
        ...

    def prefetch_run_records(self, run_ids: Collection[str]) -> None:
        """Start reading what :meth:`run_records` will need for ``run_ids``, if it can
        be read meanwhile (a later :meth:`run_records` uses what was read for the
        ids it asks for, and reads the rest)."""
        ...

    def runs_in_window(self, start: int, stop: int) -> list[tuple[Any, ...]]: ...

    def runs_started(self, start: int, stop: int, limit: int) -> list[tuple[Any, ...]]: ...

    def run_totals(self, as_of: int) -> list[tuple[str, int, int]]: ...


class SideConnection:
    """A second connection to a ledger, used by one worker thread: reads that run
    while this thread works on what it has (the database releases the GIL).

    :meth:`submit` returns a future; where the connection cannot be opened its
    futures raise :class:`StorageError`, and callers ask their own connection.
    """

    def __init__(self, url: LedgerURL) -> None:
        self._url = url
        self._storage: Storage | None = None
        self._refused: StorageError | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="trainguard-side")
        self._closed = False

    def submit(self, work: Callable[[Storage], _T]) -> Future[_T]:
        return self._pool.submit(self._run, work)

    def _run(self, work: Callable[[Storage], _T]) -> _T:
        if self._refused is not None:  # tried once: every later read fails at once
            raise self._refused
        if self._storage is None:  # opened in the worker: a SQLite connection stays in its thread
            try:
                self._storage = open_storage(self._url)
            except StorageError as exc:
                self._refused = exc
                raise
        return work(self._storage)

    def close(self) -> None:
        """Wait for the submitted work, then close the connection (in its thread)."""
        if not self._closed:
            self._closed = True
            self._pool.submit(self._close)
            self._pool.shutdown(wait=True)

    def _close(self) -> None:
        if self._storage is not None:
            self._storage.close()
            self._storage = None

    def __enter__(self) -> SideConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StorageIndex:
    """Queries answered by the derived tables of a storage backend.

    With a :class:`SideConnection`, the rows of a closure's next step are read
    on it while this connection reads (and checks) the runs' own edges.
    """

    def __init__(self, storage: Storage, side: SideConnection | None = None) -> None:
        self.storage = storage
        self.side = side
        #: Runs records read ahead on the side: ``(run ids, their rows with entries)``.
        self._runs_later: list[tuple[list[str], Future[list[tuple[Any, ...]]]]] = []
        self._runs_asked: set[str] = set()
        self.used: list[tuple[str, list[tuple[Any, ...]]]] = []
        #: Entries read (and hashed) along with the rows that name them.
        self.checked: Checked = {}
        #: runs rows checked against their entries as they were read, by leaf.
        self._vouched: dict[Any, tuple[Any, ...]] = {}
        #: The side's product_readers for the run ids of the last run_edges, if asked.
        self._speculated: tuple[list[str], Future[_ProductReaders]] | None = None
        #: The digests the entries of the last run_edges said were produced, by leaf.
        self._produced: list[Any] = []

    def unchecked(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """:attr:`used`, less the runs rows equal to one checked as it was read
        (the seeds by user or environment are the affected runs' own records)."""
        vouched = self._vouched
        return [
            (table, [r for r in rows if vouched.get(r[0]) != r] if table == "runs" else rows)
            for table, rows in self.used
        ]

    def _note(self, table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        self.used.append((table, rows))
        return rows

    def select(self, table: str, column: str, values: Collection[Any]) -> list[tuple[Any, ...]]:
        if not values:
            return []
        return self._note(table, self.storage.select(table, column, values))

    def run_edges(self, run_ids: Collection[str]) -> list[_fast.CheckedEdge]:
        # The run_id index locates the runs' edges; their entries (the bulk of what a
        # large answer proves) say the rest, each hashed and parsed in one compiled
        # pass. The table's other columns are never used for these rows, so a row
        # altered there cannot mislead the answer (nor is it looked at: verify's job).
        if not run_ids:
            return []
        ids = list(run_ids)
        self._speculated = None
        if self.side is not None and self.storage.separate_process and len(ids) >= _SPECULATE_FROM:
            # The readers of what the table says these runs produced, read on the
            # side meanwhile; readers() uses them only if the entries say the same.
            # (Not for SQLite: those reads would hold this process's GIL, and cost
            # more than the readers of the entries' digests read after the edges.)
            self._speculated = (ids, self.side.submit(lambda side: side.product_readers(ids)))
        rows = self.storage.edge_entries(ids)
        edges, others = _fast.checked_edges(rows, self.checked)
        if others:
            # An entry that is not intact, not a canonical edge, or names another
            # run: its table row goes to the full row cross-check, which names what
            # is wrong (or accepts an entry in another valid form).
            odd = self.select("edges", "leaf", [rows[i][0] for i in others])
            edges.extend((*r, _name_of(self.checked.get(r[0], (b"",))[0])) for r in odd)
            edges.sort(key=_by_leaf)
        if self._speculated is not None:  # (what readers() compares the read-ahead with)
            self._produced = [e[3] for e in edges if e[2] == "produced"]
        return edges

    def _speculated_readers(self, run_ids: Collection[str]) -> list[tuple[Any, ...]] | None:
        """The side's readers of the digests the rows said were produced, where the
        entries of :meth:`run_edges` said the same for the same runs."""
        speculated, self._speculated = self._speculated, None
        if speculated is None or set(speculated[0]) != set(run_ids):
            return None
        got = _result(speculated[1])
        if got is None:
            return None
        rows, (count, fingerprint) = got
        produced = self._produced
        try:
            joined = "\n".join(produced)
        except TypeError:  # a value of another type (only a tampered row holds one)
            return None
        # The same number of digests, none holding the separator (entries cannot),
        # joined the same: the same digests in the same order.
        if count != len(produced) or joined.count("\n") != max(count - 1, 0):
            return None
        if hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest() != fingerprint:
            return None
        return rows

    def readers(self, digests: Collection[str], run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        if not digests:
            if self._speculated is not None:  # not needed: dropped unless it started
                self._speculated[1].cancel()
                self._speculated = None
            return []
        speculated = self._speculated_readers(run_ids)
        if speculated is not None:
            return self._note("edges", speculated)
        asked = list(digests)  # (in the order given: see Storage.readers)
        if self.side is None or not self.storage.separate_process or len(asked) < _SPLIT_FROM:
            return self._note("edges", self.storage.readers(asked, run_ids))
        # Half the digests are probed on the side connection meanwhile (not on
        # SQLite: its rows are made under this process's GIL; 5-15% slower, seen).
        half = len(asked) // 2
        ids = list(run_ids)
        later = self.side.submit(lambda side: side.readers(asked[:half], ids))
        rows = self.storage.readers(asked[half:], ids)
        theirs = _result(later)
        rows.extend(self.storage.readers(asked[:half], ids) if theirs is None else theirs)
        rows.sort(key=_by_leaf)
        return self._note("edges", rows)

    def prefetch_run_records(self, run_ids: Collection[str]) -> None:
        ids = [r for r in run_ids if r not in self._runs_asked]
        if self.side is not None and ids:
            self._runs_asked.update(ids)
            self._runs_later.append(
                (ids, self.side.submit(lambda side: side.rows_with_entries("runs", "run_id", ids)))
            )

    def run_records(self, run_ids: Collection[str]) -> list[_fast.CheckedRun]:
        # As run_edges: read with their entries and checked as read; the hosts of
        # a row that passes come from its entry (no run_hosts rows to read or check).
        if not run_ids:
            return []
        wanted = set(run_ids)
        rows: list[tuple[Any, ...]] = []
        # What was read ahead for the ids asked for (rows of one run id all come
        # together: a run's records are all read, or none); the rest is read here.
        later, self._runs_later = self._runs_later, []
        self._runs_asked.clear()
        for ids, future in later:
            if wanted.issuperset(ids) and (got := _result(future)) is not None:
                rows.extend(got)
                wanted.difference_update(ids)
        if wanted:
            rows.extend(self.storage.rows_with_entries("runs", "run_id", wanted))
        if later:
            rows.sort(key=_by_leaf)
        records, others = _fast.checked_runs(rows, self.checked)
        self._vouched.update((row[0], row) for row, _ in records)
        if others:
            width = len(TABLES["runs"])
            odd = self._note("runs", [rows[i][:width] for i in others])
            records.extend(_with_hosts(odd, self.select("run_hosts", "leaf", [r[0] for r in odd])))
            records.sort(key=_by_first_leaf)
        return records

    def runs_in_window(self, start: int, stop: int) -> list[tuple[Any, ...]]:
        return self._note("runs", self.storage.runs_in_window(start, stop))

    def runs_started(self, start: int, stop: int, limit: int) -> list[tuple[Any, ...]]:
        return self._note("runs", self.storage.runs_started(start, stop, limit))

    def run_totals(self, as_of: int) -> list[tuple[str, int, int]]:
        return self.storage.run_totals(as_of)


class LogIndex:
    """The derived tables rebuilt in memory from the log's entries (each leaf hash checked)."""

    def __init__(self, storage: Storage, size: int) -> None:
        self.used: list[tuple[str, list[tuple[Any, ...]]]] = []
        self._tables: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
        self._by: dict[tuple[str, str], dict[Any, list[tuple[Any, ...]]]] = {}
        self._names: dict[int, str] = {}
        expected = 0
        for start in range(0, size, _BATCH):
            for leaf, _kind, data, stored in storage.entries(start, min(start + _BATCH, size)):
                if leaf != expected or _merkle.leaf_hash(data) != stored:
                    raise LedgerIntegrityError(
                        "the log itself is damaged; no answer can be trusted",
                        subject=f"entry {expected}",
                        hint="run `trainguard ledger verify` to locate the damage",
                    )
                expected += 1
                entry = _canonical.decode(data, strict=False)
                for table, values in rows_of(entry):
                    self._tables[table].append((leaf, *values))
                    if table == "edges" and isinstance(name := entry.get("name"), str):
                        self._names[leaf] = name
        if expected != size:
            raise LedgerIntegrityError(
                "entries are missing from the log", subject=f"entry {expected}"
            )

    def _column(self, table: str, column: str) -> dict[Any, list[tuple[Any, ...]]]:
        key = (table, column)
        if key not in self._by:
            pos = TABLES[table].index(column)
            by: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
            for row in self._tables[table]:
                by[row[pos]].append(row)
            self._by[key] = by
        return self._by[key]

    def select(self, table: str, column: str, values: Collection[Any]) -> list[tuple[Any, ...]]:
        by = self._column(table, column)
        rows = [r for v in set(values) for r in by.get(v, ())]
        rows.sort(key=_by_leaf)  # in leaf order, as the storage answers: the same report twice
        self.used.append((table, rows))
        return rows

    def run_edges(self, run_ids: Collection[str]) -> list[_fast.CheckedEdge]:
        names = self._names
        return [(*r, names.get(r[0])) for r in self.select("edges", "run_id", run_ids)]

    def readers(self, digests: Collection[str], run_ids: Collection[str]) -> list[tuple[Any, ...]]:
        ids = set(run_ids)
        return [r for r in self.select("edges", "digest", digests) if r[1] not in ids]

    def prefetch_run_records(self, run_ids: Collection[str]) -> None:
        pass  # (in memory already)

    def run_records(self, run_ids: Collection[str]) -> list[_fast.CheckedRun]:
        rows = self.select("runs", "run_id", run_ids)
        return _with_hosts(rows, self.select("run_hosts", "leaf", [r[0] for r in rows]))

    def runs_in_window(self, start: int, stop: int) -> list[tuple[Any, ...]]:
        rows = [r for r in self._tables["runs"] if r[6] < stop and (r[7] is None or r[7] >= start)]
        self.used.append(("runs", rows))
        return rows

    def runs_started(self, start: int, stop: int, limit: int) -> list[tuple[Any, ...]]:
        rows = sorted(
            (r for r in self._tables["runs"] if start <= r[6] < stop), key=lambda r: (r[6], r[0])
        )[:limit]
        self.used.append(("runs", rows))
        return rows

    def run_totals(self, as_of: int) -> list[tuple[str, int, int]]:
        ends: dict[str, int] = {}
        for _, run_id, ended in self._tables["run_ends"]:
            ends[run_id] = max(ended, ends.get(run_id, ended))
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in self._tables["runs"]:
            end = r[7] if r[7] is not None else ends.get(r[1], as_of)
            t = totals[r[3]]
            t[0] += 1
            t[1] += r[4] * (end - r[6])
        return [(k, v[0], v[1]) for k, v in sorted(totals.items())]


def _result(later: Future[_T]) -> _T | None:
    """A side connection's answer; ``None`` where it failed (this connection then
    asks again, and answers or fails alike)."""
    try:
        return later.result()
    except StorageError:
        return None


def _by_first_leaf(record: _fast.CheckedRun) -> Any:
    return record[0][0]


def _with_hosts(
    runs: list[tuple[Any, ...]], host_rows: list[tuple[Any, ...]]
) -> list[_fast.CheckedRun]:
    """Each ``runs`` row with the hosts its ``run_hosts`` rows name."""
    hosts: dict[Any, list[str]] = defaultdict(list)
    for leaf, host in host_rows:
        hosts[leaf].append(host)
    return [(row, tuple(hosts.get(row[0], ()))) for row in runs]


_SCANNER: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

#: Entries by leaf: ``(data, leaf hash)``, the hash recomputed from the data, or
#: ``None`` where it differs from the stored one (the entry was altered).
Checked = _fast.CheckedEntries


def _name_of(data: Any) -> str | None:
    """The ``name`` an entry records, or ``None`` (also for anything not an entry)."""
    try:
        entry = _SCANNER(data.decode("utf-8"), 0)[0]
    except (AttributeError, ValueError, StopIteration, RecursionError):
        return None
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) else None


def read_checked(storage: Storage, leaves: Collection[int]) -> Checked:
    """Read entries and recompute their leaf hashes once, for every later use."""
    rows = storage.entries_at(leaves)
    hashes: Sequence[bytes | None]
    try:
        hashes = _fast.leaf_hashes([r[2] for r in rows])
    except TypeError:  # SQLite keeps any type in any column: only bytes are entries
        hashes = [_merkle.leaf_hash(r[2]) if type(r[2]) is bytes else None for r in rows]
    out: Checked = {}
    for (leaf, _kind, data, stored), h in zip(rows, hashes, strict=True):
        if h is not None and h == stored:
            out[leaf] = (data, h)
        else:
            out[leaf] = (data if type(data) is bytes else b"", None)
    return out


def _expected_rows(leaf: int, data: bytes) -> set[tuple[str, tuple[Any, ...]]]:
    return {(t, (leaf, *v)) for t, v in rows_of(_SCANNER(data.decode("utf-8"), 0)[0])}


def used_leaves(used: Iterable[tuple[str, Sequence[tuple[Any, ...]]]]) -> set[Any]:
    """The leaf column of every row handed out (any type: SQLite keeps any in any column)."""
    return {row[0] for _, rows in used for row in rows}


def cross_check(
    storage: Storage,
    used: Iterable[tuple[str, Sequence[tuple[Any, ...]]]],
    entries: Mapping[int, tuple[bytes, bytes | None]] | None = None,
) -> list[str]:
    """Problems where a derived row handed out does not follow from the entry it names.

    ``used`` holds ``(table, rows)`` batches (see :attr:`Index.used`);
    ``entries`` (see :func:`read_checked`) may hold entries already read, the
    others are read here.
    """
    used = list(used)
    leaves = used_leaves(used)
    # A leaf column of another type (SQLite keeps any type in any column) is tampering.
    odd = {v for v in leaves if type(v) is not int}
    leaves -= odd
    problems = [
        f"index rows name entry {v}, which is not an entry index"
        for v in sorted(map(repr, odd))[:5]
    ]
    found = dict(entries or {})
    missing = [leaf for leaf in leaves if leaf not in found]
    if missing:
        found.update(read_checked(storage, missing))
    absent = sorted(leaf for leaf in leaves if leaf not in found)
    problems.extend(f"index rows name entry {leaf}, which does not exist" for leaf in absent)
    altered = sorted(leaf for leaf in leaves if leaf in found and found[leaf][1] is None)
    problems.extend(f"entry {leaf} does not match its leaf hash" for leaf in altered)
    present = [leaf for leaf in leaves if leaf in found and found[leaf][1] is not None]
    # Plain edges (most rows used) are read in one batch without building a dict, and an
    # edges row handed out is accepted when it equals its entry's row (leaf types were
    # checked above: 5.0 == 5 cannot pass); every other row is checked against its
    # entry's full parse. (The kind column is not read here: an edge entry's text says
    # its kind.)
    plain, _ = _fast.edge_rows([(leaf, "edge", found[leaf][0]) for leaf in present])
    expected = {row[0]: row for row in plain}
    good = set(present)
    others: dict[int, list[tuple[str, tuple[Any, ...]]]] = defaultdict(list)
    for table, rows in used:
        for row in rows:
            leaf = row[0]
            edge = expected.get(leaf)
            if edge is not None:
                if table != "edges" or edge != row:
                    problems.append(f"{table} row for entry {leaf} does not match the entry")
            elif leaf in good:
                others[leaf].append((table, row))
    # Run entries in their canonical form (most of the rest) are read in one batch too.
    checking = sorted(others.items())
    run_fields = _fast.run_fields([found[leaf][0] for leaf, _ in checking])
    for (leaf, claimed), fields in zip(checking, run_fields, strict=True):
        if fields is not None:
            hosts = fields[8]
            wanted = {("runs", (leaf, *fields[:8], len(hosts)))}
            wanted.update(("run_hosts", (leaf, host)) for host in hosts)
        else:
            try:
                wanted = _expected_rows(leaf, found[leaf][0])
            except (ValueError, KeyError, TypeError, AttributeError, StopIteration, RecursionError):
                # (RecursionError: nested deeper than the parser goes, a tampered entry)
                problems.append(f"entry {leaf} is not a valid record")
                continue
        for table, row in claimed:
            if (table, row) not in wanted:
                problems.append(f"{table} row for entry {leaf} does not match the entry")
    return problems
