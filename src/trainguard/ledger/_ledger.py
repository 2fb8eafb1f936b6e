"""The :class:`Ledger`: records in, proofs out, over any :class:`Storage`."""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from trainguard.errors import LedgerIntegrityError, UsageError
from trainguard.ledger import _canonical, _merkle, _multiproof
from trainguard.ledger._canonical import MAX_INT
from trainguard.ledger._fast import gc_paused
from trainguard.ledger._index import rows_of
from trainguard.ledger.records import VERSION, Edge, Record, record_from_json
from trainguard.ledger.signing import SignedTreeHead, SigningKey
from trainguard.ledger.storage import (
    AppendResult,
    LedgerURL,
    PreparedEntry,
    Storage,
    open_storage,
)

__all__ = ["BatchWriter", "Entry", "InclusionProof", "Ledger", "TreeHead", "prepare"]


@dataclass(frozen=True)
class TreeHead:
    """An unsigned tree head: the first ``size`` entries have Merkle root ``root``."""

    size: int
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root.hex()}


@dataclass(frozen=True)
class Entry:
    """One log entry: its leaf index, canonical bytes and the record they hold."""

    index: int
    data: bytes
    record: Record


@dataclass(frozen=True)
class InclusionProof:
    """Evidence that entry ``index`` (with ``leaf_hash``) is in the tree of ``size`` leaves."""

    index: int
    size: int
    leaf_hash: bytes
    path: tuple[bytes, ...]

    def verify(self, root: bytes) -> None:
        """Raises :class:`LedgerIntegrityError` unless the proof leads to ``root``."""
        _merkle.verify_inclusion(self.index, self.size, self.leaf_hash, self.path, root)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size": self.size,
            "leaf_hash": self.leaf_hash.hex(),
            "path": [p.hex() for p in self.path],
        }

    @classmethod
    def from_json(cls, data: Any) -> InclusionProof:
        try:
            return cls(
                int(data["index"]),
                int(data["size"]),
                bytes.fromhex(data["leaf_hash"]),
                tuple(bytes.fromhex(p) for p in data["path"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerIntegrityError(f"malformed inclusion proof: {exc}") from exc


#: Printable ASCII without ``"`` or ``\\``: text that JSON writes as-is.
_PLAIN = re.compile(r"[ !#-\[\]-~]*").fullmatch


def _prepare_edge(e: Edge) -> PreparedEntry | None:
    """An edge (the bulk of a log) of plain text, encoded without building a dict.

    The bytes are those of the general path (a property test checks it);
    anything unusual (an escape, non-ASCII text, a non-int number) returns
    ``None`` and takes the general path.
    """
    run_id, direction, digest, kind, at, size, name = (
        e.run_id,
        e.direction,
        e.digest,
        e.artifact_kind,
        e.at,
        e.size,
        e.name,
    )
    if not (
        type(run_id) is str
        and type(direction) is str
        and type(digest) is str
        and type(kind) is str
        and type(at) is int
        and 0 <= at <= MAX_INT
        and (size is None or (type(size) is int and 0 <= size <= MAX_INT))
        and (name is None or type(name) is str)
        and _PLAIN(run_id + direction + digest + kind + (name or ""))
    ):
        return None
    text = (
        f'{{"artifact_kind":"{kind}","at":{at},"digest":"{digest}","direction":"{direction}"'
        + ',"kind":"edge"'
        + ("" if name is None else f',"name":"{name}"')
        + f',"run_id":"{run_id}"'
        + ("" if size is None else f',"size":{size}')
        + f',"v":{VERSION}}}'
    )
    data = text.encode("ascii")
    return PreparedEntry(
        "edge", data, _merkle.leaf_hash(data), (("edges", (run_id, direction, digest, kind)),)
    )


def prepare(record: Record) -> PreparedEntry:
    """Encode a record canonically and compute its leaf hash and derived rows."""
    if type(record) is Edge:
        fast = _prepare_edge(record)
        if fast is not None:
            return fast
    obj = record.to_json()
    try:
        data = _canonical.encode(obj)
    except ValueError as exc:
        raise UsageError(f"record cannot be encoded: {exc}", subject=record.kind) from exc
    return PreparedEntry(record.kind, data, _merkle.leaf_hash(data), tuple(rows_of(obj)))


class BatchWriter:
    """Commits prepared batches in order on one helper thread.

    The caller prepares the next batch (encoding and hashing: Python work)
    while the previous one is committed: SQLite and the PostgreSQL driver do
    their part with the GIL released, and the server and the disk work on
    their own. At most one batch is in flight, so batches commit in order, and
    :meth:`submit` re-raises a failed commit before taking the next batch. On
    leaving the ``with`` block the batch in flight is waited for (it is
    committed, or its error raised).

    Inside the ``with`` block the cyclic garbage collector is paused
    (``pause_gc``): an import allocates millions of acyclic objects, and the
    collections they trigger walk every live object, so their cost grows with
    the process (a quarter of a 2.6M-entry import); cycles made meanwhile are
    collected after the block.
    """

    def __init__(self, storage: Storage, *, pause_gc: bool = True) -> None:
        self._storage = storage
        self._gc: AbstractContextManager[None] = (
            gc_paused() if pause_gc else contextlib.nullcontext()
        )
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="trainguard-ledger-append")
        self._inflight: Future[AppendResult] | None = None
        #: The last committed batch's result.
        self.result: AppendResult | None = None
        #: Seconds spent in the storage's append (the part writers serialize on).
        self.append_seconds = 0.0

    def _append(self, entries: Sequence[PreparedEntry]) -> AppendResult:
        started = time.perf_counter()
        try:
            return self._storage.append(entries)
        finally:
            self.append_seconds += time.perf_counter() - started

    def submit(self, entries: Sequence[PreparedEntry]) -> None:
        """Commit ``entries`` after the batch in flight (raising that one's error)."""
        self.flush()
        self._inflight = self._pool.submit(self._append, entries)

    def flush(self) -> AppendResult | None:
        """Wait for the batch in flight; returns the last result."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            self.result = inflight.result()
        return self.result

    def __enter__(self) -> BatchWriter:
        self._gc.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if et is None:
                self.flush()
            elif self._inflight is not None:
                self._inflight.exception()  # committed or not: never left running
        finally:
            self._pool.shutdown(wait=True)
            self._gc.__exit__(None, None, None)


class Ledger:
    """A tamper-evident, append-only log of provenance records.

    Open one with :meth:`open` (the URL rule of
    :func:`~trainguard.ledger.storage.resolve_url`), :meth:`append` records
    in batches, :meth:`sign` tree heads, and ask for proofs. Verification,
    blast radius and lineage are functions over a ledger
    (:func:`~trainguard.ledger.verify_ledger`, ...).
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        origin = storage.origin()
        if origin is None:
            raise UsageError(
                "no ledger has been initialised here",
                subject=storage.url.text,
                hint="run `trainguard ledger init` (or open with create=True)",
            )
        self.origin = origin

    @classmethod
    def open(
        cls, url: str | LedgerURL | None = None, *, create: bool = False, origin: str | None = None
    ) -> Ledger:
        """Open the ledger at ``url``; ``create`` initialises it if it does not exist yet.

        ``origin`` names a new log in its signed tree heads (default: a random
        ``trainguard.ledger/<hex>`` name, so heads of two logs never mix).
        """
        storage = open_storage(url)
        if create and storage.origin() is None:
            storage.init(origin or f"trainguard.ledger/{secrets.token_hex(8)}")
        return cls(storage)

    @property
    def url(self) -> LedgerURL:
        return self.storage.url

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------

    def append(self, records: Iterable[Record]) -> AppendResult:
        """Append records atomically, in order; returns once they are durable."""
        prepared = [prepare(r) for r in records]
        if not prepared:
            raise UsageError("nothing to append")
        return self.storage.append(prepared)

    def append_prepared(self, entries: Sequence[PreparedEntry]) -> AppendResult:
        """Append already prepared entries (bulk importers prepare in parallel)."""
        return self.storage.append(entries)

    def deferred_indexes(self) -> AbstractContextManager[None]:
        """For a bulk import: query indexes are dropped, and rebuilt once on exit.

        Appends inside stay atomic and durable; queries meanwhile are correct
        but slow. An import killed part-way leaves the indexes missing until
        ``trainguard ledger maintain`` rebuilds them.
        """
        return self.storage.deferred_indexes()

    def bulk_append(self, records: Iterable[Record], *, batch: int = 20_000) -> AppendResult:
        """Append many records in atomic batches of ``batch``, indexes rebuilt once at the end.

        Each batch is committed on a helper thread while the next one is
        prepared (see :class:`BatchWriter`).
        """
        with self.deferred_indexes(), BatchWriter(self.storage) as writer:
            pending: list[PreparedEntry] = []
            for record in records:
                pending.append(prepare(record))
                if len(pending) >= batch:
                    writer.submit(pending)
                    pending = []
            if pending:
                writer.submit(pending)
            result = writer.flush()
        if result is None:
            raise UsageError("nothing to append")
        return result

    def sign(self, key: SigningKey, *, timestamp: int | None = None) -> SignedTreeHead:
        """Sign the current tree head and store the signature in the ledger.

        The new head must extend the latest head this key signed before (a
        consistency proof is checked), so a signer never endorses a rewritten log.

        Raises:
            LedgerIntegrityError: the log no longer extends the key's previous head.
        """
        head = self.head()
        mine = [h for h in self.signed_heads() if h.key_id == key.public_key.key_id]
        previous = max(mine, key=lambda h: (h.size, h.timestamp)) if mine else None
        if previous is not None:
            previous.verify([key.public_key])
            if previous.size > head.size:
                raise LedgerIntegrityError(
                    "the log is shorter than a head this key signed: refusing to sign",
                    subject=self.url.text,
                    expected=f"at least {previous.size} entries",
                    found=f"{head.size} entries",
                )
            if previous.size:
                _merkle.verify_consistency(
                    previous.size,
                    head.size,
                    previous.root,
                    head.root,
                    self.consistency_proof(previous.size, head.size),
                )
        sth = key.sign_head(self.origin, head.size, head.root, timestamp=timestamp)
        self.storage.add_head(sth)
        return sth

    # -- reading -------------------------------------------------------------------

    def size(self) -> int:
        return self.storage.size()

    def _perfect(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        wanted = set(keys)
        found = self.storage.perfect(wanted)
        if len(found) != len(wanted):
            missing = sorted(wanted - set(found))[:5]
            raise LedgerIntegrityError(
                "the stored Merkle tree is missing subtrees",
                subject=self.url.text,
                found=f"missing (level, index) {missing}",
                hint="run `trainguard ledger verify`",
            )
        return found

    def root_at(self, size: int) -> bytes:
        """The Merkle root of the first ``size`` entries, from O(log size) stored subtrees."""
        if size == 0:
            return _merkle.EMPTY_ROOT
        found = self._perfect(_merkle.decompose(0, size))
        return _merkle.root_of(size, lambda level, index: found[(level, index)])

    def head(self) -> TreeHead:
        """The current (unsigned) tree head."""
        size = self.size()
        return TreeHead(size, self.root_at(size))

    def signed_heads(self) -> list[SignedTreeHead]:
        return self.storage.heads()

    def latest_signed_head(self) -> SignedTreeHead | None:
        heads = self.storage.heads()
        return max(heads, key=lambda h: (h.size, h.timestamp)) if heads else None

    def entries(self, start: int, stop: int) -> list[Entry]:
        """Entries ``[start, stop)``, each checked against its leaf hash and validated."""
        out = []
        for index, _kind, data, stored in self.storage.entries(start, stop):
            if _merkle.leaf_hash(data) != stored:
                raise LedgerIntegrityError(
                    "an entry does not match its stored leaf hash",
                    subject=f"entry {index}",
                    hint="run `trainguard ledger verify`",
                )
            try:
                record = record_from_json(_canonical.decode(data))
            except (ValueError, UsageError) as exc:
                raise LedgerIntegrityError(
                    f"entry {index} is not a valid record: {exc}", subject=f"entry {index}"
                ) from exc
            out.append(Entry(index, data, record))
        return out

    def entry(self, index: int) -> Entry:
        found = self.entries(index, index + 1)
        if not found:
            raise LedgerIntegrityError("no such entry", subject=f"entry {index}")
        return found[0]

    def inclusion_proofs(self, indexes: Iterable[int], size: int) -> dict[int, InclusionProof]:
        """Inclusion proofs of many entries in the tree of ``size``, with one batched read."""
        wanted = set(indexes)
        leaves: dict[int, bytes] = {}

        def fetch(keys: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
            found = self._perfect(keys | {(0, i) for i in wanted})
            leaves.update({i: found[(0, i)] for i in wanted})
            return found

        paths = _merkle.inclusion_proofs(sorted(wanted), size, fetch)
        return {i: InclusionProof(i, size, leaves[i], tuple(paths[i])) for i in sorted(wanted)}

    def batch_proof(self, indexes: Iterable[int], size: int) -> tuple[bytes, ...]:
        """One batch inclusion proof of many entries in the tree of ``size``.

        Shared hashes are listed once (see :mod:`._multiproof`); check it with
        :func:`~trainguard.ledger._multiproof.verify_batch`.
        """
        plan = _multiproof.batch_plan(indexes, size)
        found = self._perfect(key for group in plan for key in group)
        # Nearly every group is one subtree (~10^4 for a large answer): no fold call.
        return tuple(
            [
                found[group[0]] if len(group) == 1 else _merkle.fold([found[key] for key in group])
                for group in plan
            ]
        )

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """The inclusion proof of entry ``index`` in the tree of ``size`` (default: now)."""
        size = self.size() if size is None else size
        return self.inclusion_proofs([index], size)[index]

    def consistency_proof(self, old: int, new: int | None = None) -> tuple[bytes, ...]:
        """The proof that the tree of ``old`` entries is a prefix of the tree of ``new``."""
        new = self.size() if new is None else new
        ranges = _merkle.consistency_ranges(old, new)
        found = self._perfect(k for lo, hi in ranges for k in _merkle.decompose(lo, hi))
        return tuple(
            _merkle.fold([found[k] for k in _merkle.decompose(lo, hi)]) for lo, hi in ranges
        )
