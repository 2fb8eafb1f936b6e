"""Blast radius: from one indicator to every affected run, artifact, GPU-hour and dollar.

Starting from an indicator (a content digest, a tampered file's digest from
``env verify``, an environment baseline, a user, a host, a run, a time
window) the seed runs are found in the ledger; then the closure over
*run produced artifact -> run used artifact* edges gives every derived
checkpoint and every run downstream. GPU-hours are the runs' accelerator
counts times their durations; cost comes from a :class:`PriceTable`. Runs
outside the closure are the complement, each listed with why it is clean.

Every claim names the ledger entries behind it, and the report carries those
entries with inclusion proofs (see :mod:`._evidence`), so an auditor can
re-check it without access to the database (``trainguard ledger check-report``).

The answer comes from the derived tables, cross-checked against the log row by
row for every row used (the bulk of them as they are read; the affected runs'
edges are taken from their entries, the index only locates them) and by row
counts of whole tables (read on a second connection meanwhile); if either
disagrees, the answer is recomputed from the log itself and the report says so.
A deleted or forged index row cannot hide a run; a deletion made up for by a
forged row of another table (the same row counts) can, until a full
``verify_ledger`` (which reads every entry) finds it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import nullcontext
from functools import partial
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

from trainguard.errors import StorageError
from trainguard.ledger import _fast
from trainguard.ledger._blast_search import Search
from trainguard.ledger._blast_types import (
    DEFAULT_PRICES,
    AffectedArtifact,
    AffectedRun,
    BlastRadius,
    CleanRun,
    Indicator,
    PriceTable,
    RunFacts,
)
from trainguard.ledger._evidence import Evidence, collect_evidence
from trainguard.ledger._ledger import Ledger, TreeHead
from trainguard.ledger._query import (
    Index,
    LogIndex,
    SideConnection,
    StorageIndex,
    cross_check,
    read_checked,
    used_leaves,
)
from trainguard.ledger.storage import Storage
from trainguard.ledger.verify import check_index_counts

__all__ = [
    "DEFAULT_PRICES",
    "AffectedArtifact",
    "AffectedRun",
    "BlastRadius",
    "CleanRun",
    "Indicator",
    "PriceTable",
    "RunFacts",
    "blast_radius",
]


#: ``(accelerator type, runs, GPU-seconds)`` of every run in the ledger.
_RunTotals = list[tuple[str, int, int]]
#: What :func:`_compute` finds: the search, affected runs and artifacts, clean runs.
_Answer = tuple[Search, list[AffectedRun], list[AffectedArtifact], list[CleanRun]]


def _compute(
    index: Index,
    indicator: Indicator,
    as_of: int,
    prices: PriceTable,
    max_clean: int,
    max_depth: int | None,
    after_closure: Callable[[Search], object] = lambda search: None,
) -> _Answer:
    search = Search(index, indicator, as_of, max_depth)
    search.seeds()
    search.closure()
    # The affected runs' records not read during the closure (its last frontier,
    # where max_depth stopped it) are read on the side while the artifacts are listed.
    index.prefetch_run_records(list(search.reasons))
    after_closure(search)
    used_by: dict[str, int] = defaultdict(int)
    for reasons in search.reasons.values():
        for reason in reasons:
            if reason.via:
                used_by[reason.via] += 1
    found = search.artifacts
    for digest, n in used_by.items():
        found[digest] = found[digest]._replace(used_by=n)
    # In the order they were reached: by depth, then by the first entry producing
    # them (the indicated ones by digest). No sort of 10^5 digests.
    artifacts = list(found.values())
    facts = search.run_facts(list(search.reasons))
    # By depth, start and id (ids are unique: the runs themselves are never compared).
    price: dict[str | None, float | None] = {}
    keyed = []
    for run_id, reasons in search.reasons.items():
        f = facts[run_id]
        kind = f.accelerator_type
        if kind not in price:
            price[kind] = prices.price(kind) if kind else None
        each = price[kind]
        cost = None if each is None else each * f.gpu_hours
        key = (min(map(_depth_of, reasons)), f.started_at or 0, run_id)
        keyed.append((key, _make(AffectedRun, (f, tuple(reasons), cost))))
    keyed.sort(key=_first)
    affected = list(map(_second, keyed))
    clean = search.clean_runs(facts, max_clean)
    return search, affected, artifacts, clean


def _totals(
    all_runs: _RunTotals, affected: list[AffectedRun], prices: PriceTable
) -> dict[str, Any]:
    runs_total = sum(n for _, n, _ in all_runs)
    hours_total = sum(s for _, _, s in all_runs) / 3600
    cost_total = sum((prices.price(t) or 0.0) * s / 3600 for t, _, s in all_runs)
    unpriced = sorted({t for t, _, _ in all_runs if prices.price(t) is None})
    a_hours = sum(a.facts.gpu_hours for a in affected)
    a_cost = sum(a.cost or 0.0 for a in affected)
    by_type: dict[str, dict[str, float]] = defaultdict(lambda: {"runs": 0, "gpu_hours": 0.0})
    for a in affected:
        t = by_type[a.facts.accelerator_type or "unknown"]
        t["runs"] += 1
        t["gpu_hours"] += a.facts.gpu_hours
    return {
        "runs": runs_total,
        "gpu_hours": round(hours_total, 3),
        "cost": round(cost_total, 2),
        "affected_runs": len(affected),
        "affected_gpu_hours": round(a_hours, 3),
        "affected_cost": round(a_cost, 2),
        "affected_by_accelerator": {
            k: {"runs": v["runs"], "gpu_hours": round(v["gpu_hours"], 3)}
            for k, v in sorted(by_type.items())
        },
        "clean_runs": runs_total - len([a for a in affected if a.facts.entry is not None]),
        "clean_gpu_hours": round(hours_total - a_hours, 3),
        "clean_cost": round(cost_total - a_cost, 2),
        "unpriced_accelerators": unpriced,
    }


_entries_of = attrgetter("entries")
_end_entries_of = attrgetter("end_entries")
_depth_of = attrgetter("depth")
_first, _second = itemgetter(0), itemgetter(1)
#: Artifacts and runs reached from which the whole-table reads run in one server
#: process. PostgreSQL, scale-1 history, 2 cores: the environment baseline (93k)
#: and the tampered file (61k) answered 2-7% sooner so, the insider user (26k) and
#: the checkpoint indicators (< 1k) 2% and 30% later.
_SERIAL_FROM = 40_000
#: Makes a named tuple from a tuple of all its fields (its ``__new__`` is Python).
_make = tuple.__new__


def _cited(result: _Answer) -> set[int]:
    """Every entry a claim of the answer rests on."""
    search, affected, _, clean = result
    facts = [a.facts for a in affected]
    # The reasons and artifacts in the order they were made, not the answer's: that
    # is their order in memory (5x faster for 10^5 artifacts than the sorted list).
    cited = set(chain.from_iterable(map(_entries_of, chain.from_iterable(search.reasons.values()))))
    cited.update(f.entry for f in facts if f.entry is not None)
    cited.update(chain.from_iterable(map(_end_entries_of, facts)))
    cited.update(chain.from_iterable(map(_entries_of, search.artifacts.values())))
    for c in clean:
        cited.update(c.entries)
    for s in search.sources:
        cited.update(s["entries"])
    return cited


def blast_radius(
    ledger: Ledger,
    indicator: Indicator,
    *,
    prices: PriceTable | None = None,
    as_of: int | None = None,
    max_clean: int = 50,
    max_depth: int | None = None,
    from_log: bool = False,
) -> BlastRadius:
    """Everything affected by ``indicator``, with GPU-hours, cost, complement and evidence.

    Args:
        prices: the price table (default :data:`DEFAULT_PRICES`).
        as_of: "now" for runs still going (Unix seconds; default: the current time).
        max_clean: clean runs listed individually with their reasons (the totals cover all).
        max_depth: stop following derivations after this many hops (default: no limit).
        from_log: answer from the log itself, ignoring the derived tables.

    Raises:
        LedgerIntegrityError: the log itself (not just an index) is damaged.
    """
    with _fast.gc_paused():  # ~10^5-10^6 rows and tuples for a large answer, no cycles
        return _blast_radius(ledger, indicator, prices, as_of, max_clean, max_depth, from_log)


def _blast_radius(
    ledger: Ledger,
    indicator: Indicator,
    prices: PriceTable | None,
    as_of: int | None,
    max_clean: int,
    max_depth: int | None,
    from_log: bool,
) -> BlastRadius:
    started = time.perf_counter()
    prices = prices or PriceTable(DEFAULT_PRICES)
    as_of = int(time.time()) if as_of is None else as_of
    size = ledger.size()
    head = TreeHead(size, ledger.root_at(size))

    def from_the_log() -> tuple[LogIndex, _Answer, Evidence, _RunTotals]:
        log = LogIndex(ledger.storage, size)
        answer = _compute(log, indicator, as_of, prices, max_clean, max_depth)
        evidence = collect_evidence(ledger, _cited(answer), head)
        return log, answer, evidence, log.run_totals(as_of)

    problems: list[str] = []
    index: Index
    if from_log:
        index, result, evidence, run_totals = from_the_log()
    else:
        with SideConnection(ledger.url) as side:
            index = StorageIndex(ledger.storage, side)
            whole = _WholeTables(ledger, as_of, side)
            found: tuple[_Answer, Evidence] | None = None
            try:
                problems, found = _answer_from_index(
                    ledger, index, head, whole, indicator, as_of, prices, max_clean, max_depth
                )
            except (TypeError, ValueError, StorageError) as exc:
                # A value of another type in a derived row (SQLite keeps any type in
                # any column) can trip the search over it; the log answers then. (A
                # bug of the search itself fails again there, and surfaces.)
                problems = [f"the derived tables hold a value the search cannot use ({exc})"]
            # The whole-table checks are awaited last: they ran on the side meanwhile.
            # (Where they fail, they are what the report names.)
            counted = whole.problems()
            if counted:
                problems = counted + (problems if found is None else [])
            if not problems and found is not None:
                (result, evidence), run_totals = found, whole.run_totals()
        if problems:
            index, result, evidence, run_totals = from_the_log()
    search, affected, artifacts, clean = result
    totals = _totals(run_totals, affected, prices)
    caveats = _caveats(evidence, affected, totals, index, problems)
    answered = (
        "derived tables (cross-checked with the log)"
        if isinstance(index, StorageIndex)
        else ("the log (derived tables disagreed with it)" if problems else "the log")
    )
    return BlastRadius(
        indicator,
        as_of,
        prices,
        affected,
        artifacts,
        search.sources,
        clean,
        totals,
        evidence,
        answered,
        problems,
        caveats,
        time.perf_counter() - started,
    )


def _answer_from_index(
    ledger: Ledger,
    index: StorageIndex,
    head: TreeHead,
    whole: _WholeTables,
    indicator: Indicator,
    as_of: int,
    prices: PriceTable,
    max_clean: int,
    max_depth: int | None,
) -> tuple[list[str], tuple[_Answer, Evidence] | None]:
    """The answer from the derived tables, every row used cross-checked with the
    log: ``(problems, (answer, evidence))``, or the rows that disagree and ``None``."""
    result = _compute(index, indicator, as_of, prices, max_clean, max_depth, whole.start)
    cited = _cited(result)
    # The entries the rows came with, and one more read (one leaf hash per entry)
    # for the rest, serve the row cross-check and the evidence.
    fetched = index.checked
    used = index.unchecked()
    leaves = {v for v in used_leaves(used) if type(v) is int}  # others: tampered
    fetched.update(read_checked(ledger.storage, [v for v in cited | leaves if v not in fetched]))
    problems = cross_check(ledger.storage, used, fetched)
    if problems:
        return problems, None
    return [], (result, collect_evidence(ledger, cited, head, fetched))


class _WholeTables:
    """The two reads of whole derived tables a blast radius needs (row counts, the
    cheap completeness check, and every run's GPU-seconds for the totals), made on
    the side connection once the closure no longer needs it, while this process
    works on the answer: the database does that work (0.2 s at 2.7M entries), not
    this process.
    """

    def __init__(self, ledger: Ledger, as_of: int, side: SideConnection) -> None:
        self._ledger, self._as_of, self._side = ledger, as_of, side
        self._future: Future[tuple[list[str], _RunTotals]] | None = None
        self._value: tuple[list[str], _RunTotals] | None = None

    def start(self, search: Search | None = None) -> None:
        if self._future is None:
            # In one server process where this answer's own work after the closure
            # (proportional to what it reached) outlasts them: parallel workers would
            # take the cores it needs. For a small answer they finish sooner.
            reached = len(search.artifacts) + len(search.reasons) if search else 0
            serial = reached >= _SERIAL_FROM
            self._future = self._side.submit(
                partial(_read_whole_tables, as_of=self._as_of, serial=serial)
            )

    def _get(self) -> tuple[list[str], _RunTotals]:
        if self._value is None:
            self.start()
            assert self._future is not None
            try:
                self._value = self._future.result()
            except StorageError:  # a database another connection cannot open: ask this one
                storage = self._ledger.storage
                self._value = (check_index_counts(storage), storage.run_totals(self._as_of))
        return self._value

    def problems(self) -> list[str]:
        return self._get()[0]

    def run_totals(self) -> _RunTotals:
        return self._get()[1]


def _read_whole_tables(storage: Storage, as_of: int, serial: bool) -> tuple[list[str], _RunTotals]:
    with storage.serial_reads() if serial else nullcontext():
        return check_index_counts(storage), storage.run_totals(as_of)


def _caveats(
    evidence: Evidence,
    affected: list[AffectedRun],
    totals: Mapping[str, Any],
    index: Index,
    problems: list[str],
) -> list[str]:
    out = []
    if problems:
        out.append(
            "the ledger's derived tables disagree with its log ("
            + "; ".join(problems[:3])
            + "): this answer was computed from the log; run `trainguard ledger verify`"
        )
    if evidence.signed_head is None:
        out.append(
            "no signed tree head: the proofs show consistency, not that the log was not rewritten"
        )
    elif evidence.unsigned:
        out.append(
            f"{len(evidence.unsigned)} cited entries were appended after the last signed tree head "
            f"(size {evidence.signed_head.size}); sign a new head to commit them"
        )
    if any(a.facts.ongoing for a in affected):
        out.append("some affected runs are still going: their GPU-hours are counted up to as_of")
    if any(a.facts.entry is None for a in affected):
        out.append("some affected runs have edges but no run record: their GPU-hours are unknown")
    if totals["unpriced_accelerators"]:
        out.append("no price for accelerator types " + ", ".join(totals["unpriced_accelerators"]))
    out.append(
        "clean means: not reachable from the indicator through recorded edges, seeds and "
        "preflight observations; content a run read without the ledger hooks is invisible here"
    )
    return out
