"""``trainguard ledger verify``: recompute the whole ledger from its entries.

What is checked, from the stored entries alone:

* leaf indexes run ``0 .. n-1`` with no gap (a deleted entry), each entry's
  leaf hash is recomputed from its bytes and must equal the stored one, and
  the ``kind`` column must match the entry (an edited entry);
* every stored Merkle node is recomputed (an edited node), and the node count
  is exact (an inserted one);
* the root at the size of every signed tree head (stored, or given by the
  caller as *previously seen*) must equal the signed root: an edited,
  reordered, inserted or deleted entry, and a rewritten tree, change it; a
  head larger than the log is a truncation;
* each head's Ed25519 signature, by a key the caller trusts (a swapped key or
  forged signature fails), and its origin;
* every derived index row is recomputed from its entry and compared (a
  deleted, inserted or altered index row), so a tampered index cannot hide a
  run from a blast-radius answer.

The work is split in aligned chunks of :data:`CHUNK` leaves, verified in
parallel processes (``jobs``), each a perfect subtree whose root the parent
folds into the tree: the same answer as one pass, at the speed of the cores.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from trainguard.errors import LedgerIntegrityError, UsageError
from trainguard.ledger import _fast, _merkle
from trainguard.ledger._index import PRIMARY, SECONDARY, TABLES, rows_of
from trainguard.ledger._ledger import Ledger
from trainguard.ledger.signing import PublicKey, SignedTreeHead
from trainguard.ledger.storage import LedgerURL, Storage, node_id, open_storage

__all__ = ["CHUNK", "VerifyResult", "check_index_counts", "verify_ledger"]

#: Leaves per verification chunk (a power of two: each chunk is a perfect subtree).
CHUNK_LEVEL = 16
CHUNK = 1 << CHUNK_LEVEL
_SCANNER: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
#: Reported problems are capped; the first ones locate the tampering.
_MAX_PROBLEMS = 20


@dataclass(frozen=True)
class VerifyResult:
    """What a successful verification established.

    Attributes:
        size: entries verified.
        root: the Merkle root of all of them.
        heads_checked: signed tree heads whose root and signature were checked.
        signatures_checked: ``False`` when no trusted key was given (then only
            roots were checked: a forger with database access could re-sign).
        signed_size: entries covered by the largest verified signed head.
        derived_rows: derived index rows recomputed and compared.
        seconds: wall time.
        cpu_seconds: CPU time of the chunk work, summed over all processes
            (the database server's own time aside).
        compiled: the per-entry work ran in the C extension (else pure Python).
    """

    size: int
    root: bytes
    heads_checked: int
    signatures_checked: bool
    signed_size: int
    derived_rows: int
    seconds: float
    jobs: int
    caveats: tuple[str, ...] = ()
    cpu_seconds: float = 0.0
    compiled: bool = False

    @property
    def unsigned_entries(self) -> int:
        return self.size - self.signed_size

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "size": self.size,
            "root": self.root.hex(),
            "heads_checked": self.heads_checked,
            "signatures_checked": self.signatures_checked,
            "signed_size": self.signed_size,
            "unsigned_entries": self.unsigned_entries,
            "derived_rows": self.derived_rows,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "jobs": self.jobs,
            "compiled": self.compiled,
            "caveats": list(self.caveats),
        }


@dataclass
class _Chunk:
    lo: int
    hi: int
    root: bytes = _merkle.EMPTY_ROOT
    #: Root of ``[lo, s)`` for each requested head size ``s`` in ``(lo, hi]``.
    partial: dict[int, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    derived_rows: int = 0
    #: CPU seconds this chunk took (in whichever process verified it).
    cpu: float = 0.0
    #: Stored nodes above the chunk level whose id falls in the chunk (checked by the parent).
    high_nodes: dict[int, bytes] = field(default_factory=dict)


def _locate_gap(leaves: Sequence[int], lo: int, hi: int) -> str:
    expected = lo
    for index in leaves:
        if index < expected:
            return f"entry {index} is stored twice or out of order"
        if index != expected:
            return f"entries {expected}..{index - 1} are missing (deleted)"
        expected += 1
    return f"entries {expected}..{hi - 1} are missing (deleted or truncated)"


def _node_problems(computed: dict[int, bytes], stored: dict[int, bytes]) -> list[str]:
    problems = []
    for nid in sorted(computed.keys() | stored.keys()):
        level, leaf = nid & 63, nid >> 6
        if nid not in computed:
            problems.append(f"tree node {nid} (level {level}) is stored but not part of the tree")
        elif nid not in stored:
            problems.append(f"tree node at level {level} ending at leaf {leaf} is missing")
        elif computed[nid] != stored[nid]:
            problems.append(
                f"tree node at level {level} ending at leaf {leaf} does not match the entries below it"
            )
        if len(problems) >= 5:
            break
    return problems


@contextmanager
def _accounted(chunk: _Chunk) -> Iterator[None]:
    """Charge the block's CPU time to ``chunk``, with the garbage collector paused
    (a chunk allocates ~10 tuples per entry and no cycles)."""
    started = time.process_time()
    try:
        with _fast.gc_paused():
            yield
    finally:
        chunk.cpu = time.process_time() - started


def _verify_chunk(
    store: Storage,
    lo: int,
    hi: int,
    sizes: Sequence[int],
    derived: bool,
    chunk_level: int,
    node_level: int,
) -> _Chunk:
    """Verify leaves ``[lo, hi)``: an aligned perfect subtree, or the log's last partial one."""
    chunk = _Chunk(lo, hi)
    with _accounted(chunk):
        _check_chunk(store, chunk, sizes, derived, chunk_level, node_level)
    return chunk


def _check_chunk(
    store: Storage,
    chunk: _Chunk,
    sizes: Sequence[int],
    derived: bool,
    chunk_level: int,
    node_level: int,
) -> None:
    lo, hi = chunk.lo, chunk.hi
    problems = chunk.problems
    rows = store.entries(lo, hi)
    n = hi - lo
    # Exactly lo .. hi-1, in order: no gap, and no index stored twice (a
    # dropped key constraint would allow it).
    indexes = [r[0] for r in rows]
    if indexes != list(range(lo, hi)):
        problems.append(_locate_gap(indexes, lo, hi))
        return
    try:
        leaves = _fast.leaf_hashes([r[2] for r in rows])
    except TypeError:  # a data column that is not binary
        bad = [r[0] for r in rows if not isinstance(r[2], bytes)]
        problems.append(f"entries {bad[:5]} hold data that is not bytes (edited)")
        return
    if leaves != [r[3] for r in rows]:
        for (index, _k, _d, stored), h in zip(rows, leaves, strict=True):
            if h != stored:
                problems.append(f"entry {index} does not match its stored leaf hash (edited)")
                if len(problems) >= 5:
                    break
    levels = _fast.perfect_levels(leaves)
    chunk.root = _merkle.fold([levels[lv][j] for lv, j in _merkle.decompose(0, n)])
    for s in sizes:
        chunk.partial[s] = _merkle.fold([levels[lv][j] for lv, j in _merkle.decompose(0, s - lo)])
    # Every level is recomputed (the root needs them); the stored ones are compared.
    computed = {
        ((((lo >> lv) + j + 1) << lv) - 1) << 6 | lv: h
        for lv in range(node_level, len(levels))
        for j, h in enumerate(levels[lv])
    }
    stored_nodes = dict(store.nodes(lo << 6, hi << 6))
    # Nodes above the chunk level can only end at the chunk's last leaf; the parent checks them.
    for lv in range(chunk_level + 1, 64):
        nid = ((hi - 1) << 6) | lv
        if nid in stored_nodes:
            chunk.high_nodes[nid] = stored_nodes.pop(nid)
    if computed != stored_nodes:
        problems.extend(_node_problems(computed, stored_nodes))
    if derived:
        _check_derived(store, chunk, rows)


def _check_derived(
    store: Storage, chunk: _Chunk, rows: list[tuple[int, str, bytes, bytes]]
) -> None:
    expected: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
    # The bulk of a log, edge entries in their canonical form, in one call; the
    # rest through the C scanner directly (json.loads adds encoding detection and
    # two regex matches per call, a third of the time for entries this small).
    edges, others = _fast.edge_rows(rows)
    expected["edges"] = edges
    # Run entries in their canonical form (most of the rest) also in one call.
    runs_at = [p for p in others if rows[p][1] == "run"]
    run_fields = dict(zip(runs_at, _fast.run_fields([rows[p][2] for p in runs_at]), strict=True))
    late_edges = False
    scan = _SCANNER
    for position in others:
        index, kind, data, _h = rows[position]
        fields = run_fields.get(position)
        if fields is not None:
            hosts = fields[8]
            expected["runs"].append((index, *fields[:8], len(hosts)))
            expected["run_hosts"].extend([(index, host) for host in hosts])
            continue
        try:
            text = data.decode("utf-8")
            entry, end = scan(text, 0)
            if end != len(text) or not isinstance(entry, dict):
                raise ValueError("not one JSON object")
            derived_rows = rows_of(entry)
        # RecursionError: JSON nested deeper than the parser goes (only a tampered
        # entry holds that).
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            StopIteration,
            RecursionError,
        ) as exc:
            chunk.problems.append(f"entry {index} is not a valid record ({exc})")
            continue
        if kind != entry["kind"]:
            chunk.problems.append(f"entry {index}: kind column {kind!r} != {entry['kind']!r}")
        for table, values in derived_rows:
            expected[table].append((index, *values))
            late_edges = late_edges or table == "edges"
    if late_edges:  # an edge entry in another form: back into leaf order
        edges.sort(key=itemgetter(0))
    for table, want in expected.items():
        got = store.rows(table, chunk.lo, chunk.hi)
        chunk.derived_rows += len(got)
        # Several rows per entry (secondary tables): compared as multisets where
        # they are not in the order the entry names them (stored as appended, they
        # are: no sort of ~10^4 rows per chunk).
        same = got == want or (table not in PRIMARY and _multiset(got) == _multiset(want))
        if not same:
            chunk.problems.append(_row_diff(table, want, got))


def _multiset(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]] | Counter[tuple[Any, ...]]:
    try:
        return sorted(rows)
    except TypeError:  # values of mixed types (a tampered row): count instead of sorting
        return Counter(rows)


def _sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, str(type(v)), v) for v in row)


def _row_diff(table: str, want: list[tuple[Any, ...]], got: list[tuple[Any, ...]]) -> str:
    ws, gs = set(want), set(got)
    missing, extra = sorted(ws - gs, key=_sort_key), sorted(gs - ws, key=_sort_key)
    parts = []
    if missing:
        parts.append(f"missing or altered rows for entries {[r[0] for r in missing[:5]]}")
    if extra:
        parts.append(f"rows that no entry produces, claiming entries {[r[0] for r in extra[:5]]}")
    if not parts:
        parts.append("duplicated rows")
    return f"derived table {table} disagrees with the log: " + "; ".join(parts)


def _worker(args: tuple[LedgerURL, int, int, tuple[int, ...], bool, int, int]) -> _Chunk:
    url, lo, hi, sizes, derived, chunk_level, node_level = args
    store = open_storage(url)
    try:
        return _verify_chunk(store, lo, hi, sizes, derived, chunk_level, node_level)
    finally:
        store.close()


def _chunks(
    ledger: Ledger,
    size: int,
    sizes: Sequence[int],
    derived: bool,
    jobs: int,
    chunk_level: int,
    node_level: int,
) -> Generator[_Chunk, None, None]:
    step = 1 << chunk_level
    bounds = [(lo, min(lo + step, size)) for lo in range(0, size, step)]

    def plan(lo: int, hi: int) -> tuple[int, ...]:
        return tuple(s for s in sizes if lo < s <= hi)

    if jobs <= 1 or len(bounds) <= 1:
        for lo, hi in bounds:
            yield _verify_chunk(
                ledger.storage, lo, hi, plan(lo, hi), derived, chunk_level, node_level
            )
        return
    # forkserver: workers never inherit the parent's open database connections.
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(min(jobs, len(bounds))) as pool:
        yield from pool.imap(
            _worker,
            [
                (ledger.url, lo, hi, plan(lo, hi), derived, chunk_level, node_level)
                for lo, hi in bounds
            ],
        )


def check_index_counts(store: Storage) -> list[str]:
    """Cheap completeness check of the derived tables (row counts only).

    Detects a deleted or inserted index row (every entry has exactly one
    primary row; secondary row counts are recorded in the primary rows), not an
    altered one: that needs :func:`verify_ledger`.
    """
    counts = store.counts()
    problems = []
    primary = sum(counts[t] for t in PRIMARY)
    if primary != counts["entries"]:
        problems.append(
            f"derived tables hold {primary} primary rows for {counts['entries']} entries"
        )
    for table, (_, column) in SECONDARY.items():
        if counts[table] != counts[column]:
            problems.append(
                f"{table} has {counts[table]} rows, its parents record {counts[column]}"
            )
    if counts["out_of_range"]:
        problems.append(f"{counts['out_of_range']} derived rows point outside the log")
    return problems


def _check_heads(
    heads: Iterable[SignedTreeHead], origin: str, size: int, trusted: Sequence[PublicKey]
) -> None:
    for head in heads:
        if head.origin != origin:
            raise LedgerIntegrityError(
                "a tree head belongs to another log",
                subject=f"tree head size {head.size}",
                expected=origin,
                found=head.origin,
            )
        if trusted:
            head.verify(trusted)
        if head.size > size:
            raise LedgerIntegrityError(
                "the log is shorter than a signed tree head: entries were removed (truncation)",
                subject=f"tree head size {head.size}",
                expected=f"at least {head.size} entries",
                found=f"{size} entries",
                hint="restore the ledger from a backup; the removed entries are evidence",
            )


def verify_ledger(
    ledger: Ledger,
    *,
    trusted_keys: Sequence[PublicKey] = (),
    known_heads: Sequence[SignedTreeHead] = (),
    require_signed: bool = False,
    derived: bool = True,
    jobs: int | None = None,
    chunk_level: int = CHUNK_LEVEL,
) -> VerifyResult:
    """Verify everything the ledger stores against its own entries and signed heads.

    Args:
        trusted_keys: public keys whose signatures are accepted; without any,
            signatures are not checked (reported in ``caveats``).
        known_heads: tree heads seen earlier (kept outside the database), so a
            truncated or rewritten log is caught even if its stored heads were removed.
        require_signed: fail unless every entry is covered by a verified signed head.
        derived: also recompute and compare every derived index row.
        jobs: worker processes (default: the CPU count).
        chunk_level: each worker verifies ``2**chunk_level`` leaves at a time.

    Raises:
        LedgerIntegrityError: the first problems found, located by entry.
    """
    started = time.perf_counter()
    jobs = jobs or os.cpu_count() or 1
    if require_signed and not trusted_keys:
        raise UsageError("--require-signed needs at least one trusted public key")
    size = ledger.size()
    heads = [*ledger.signed_heads(), *known_heads]
    _check_heads(heads, ledger.origin, size, trusted_keys)
    sizes = sorted({h.size for h in heads if h.size > 0})
    problems: list[str] = []
    roots: dict[int, bytes] = {}
    derived_rows = 0
    cpu = 0.0
    high_computed: dict[int, bytes] = {}
    high_stored: dict[int, bytes] = {}
    node_level = ledger.storage.node_level()

    def on_node(level: int, index: int, h: bytes) -> None:
        if level + chunk_level >= node_level:
            high_computed[node_id(level + chunk_level, index)] = h

    top = _merkle.CompactRange(on_node=on_node)
    chunks = _chunks(ledger, size, sizes, derived, jobs, chunk_level, node_level)
    try:
        for chunk in chunks:
            problems.extend(chunk.problems)
            if len(problems) > _MAX_PROBLEMS:
                break
            derived_rows += chunk.derived_rows
            cpu += chunk.cpu
            high_stored.update(chunk.high_nodes)
            before = [h for _, h in top.pieces()]
            for s, partial in chunk.partial.items():
                roots[s] = _merkle.fold([*before, partial])
            if chunk.hi - chunk.lo == 1 << chunk_level:
                top.push(chunk.root)
            else:
                roots[size] = _merkle.fold([*before, chunk.root])
    finally:
        chunks.close()  # stops the worker pool early when tampering was found
    if size and size % (1 << chunk_level) == 0:
        roots[size] = top.root()
    if not problems:
        if high_stored != high_computed:
            problems.append("tree nodes above the chunk level do not match the entries")
        if derived:
            outside = ledger.storage.counts()["out_of_range"]
            if outside:
                problems.append(f"{outside} derived rows claim entries outside the log")
        nodes = ledger.storage.node_count()
        need = sum(size >> level for level in range(node_level, size.bit_length()))
        if nodes != need:
            problems.append(
                f"the tree has {nodes} stored nodes, {size} entries need {need}"
                " (nodes inserted or deleted)"
            )
    if problems:
        raise LedgerIntegrityError(
            problems[0],
            subject=ledger.url.text,
            expected="a log whose entries, tree, heads and indexes all agree",
            found="; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""),
            hint="the ledger was tampered with or damaged: keep a copy as evidence",
        )
    root = roots.get(size, _merkle.EMPTY_ROOT)
    for head in heads:
        got = roots[head.size] if head.size else _merkle.EMPTY_ROOT
        if got != head.root:
            raise LedgerIntegrityError(
                "the log does not match a signed tree head: entries were edited, "
                "reordered, inserted or deleted before it",
                subject=f"tree head size {head.size} (signed by {head.key_id})",
                expected=head.root.hex(),
                found=got.hex(),
                hint="restore the ledger from a backup; compare entries with an earlier export",
            )
    signed_size = max((h.size for h in heads), default=0) if trusted_keys else 0
    caveats = []
    if not trusted_keys:
        caveats.append(
            "signatures were not checked (no trusted public key): someone with write access "
            "to the database could have rewritten the log and re-signed it"
        )
    if size > signed_size:
        caveats.append(
            f"{size - signed_size} entries after the last verified signed head are "
            "consistent but not yet committed by a signature"
        )
        if require_signed:
            raise LedgerIntegrityError(
                "entries are not covered by a signed tree head",
                subject=ledger.url.text,
                expected=f"a signed head of size {size}",
                found=f"largest verified signed head: {signed_size}",
                hint="run `trainguard ledger sign --key KEY`",
            )
    return VerifyResult(
        size=size,
        root=root,
        heads_checked=len(heads),
        signatures_checked=bool(trusted_keys),
        signed_size=signed_size,
        derived_rows=derived_rows,
        seconds=time.perf_counter() - started,
        jobs=jobs,
        caveats=tuple(caveats),
        cpu_seconds=cpu,
        compiled=_fast.COMPILED,
    )
