"""The blast-radius search: seeds from an indicator, closure over derivations, run facts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from operator import itemgetter
from typing import Any

from trainguard.ledger import _fast
from trainguard.ledger._blast_types import (
    AffectedArtifact,
    CleanRun,
    Indicator,
    Reason,
    RunFacts,
    iso,
)
from trainguard.ledger._query import Index

__all__ = ["Search"]

_by_leaf = itemgetter(0)
#: Makes a named tuple from a tuple of all its fields (its own ``__new__`` is Python:
#: a large answer holds 10^5 artifacts and 10^4 runs and reasons).
_make = tuple.__new__


def _sorted(names: tuple[str, ...]) -> tuple[str, ...]:
    return names if len(names) < 2 else tuple(sorted(names))


#: Reasons kept per affected run (the first ones found, shortest paths first).
_MAX_REASONS = 3


class Search:
    """One blast-radius computation over one :class:`Index`."""

    def __init__(self, index: Index, indicator: Indicator, as_of: int, max_depth: int | None):
        self.index = index
        self.ind = indicator
        self.as_of = as_of
        self.max_depth = max_depth
        self.reasons: dict[str, list[Reason]] = defaultdict(list)
        #: Every artifact reached, by digest, in the order reached (``used_by`` is
        #: filled in by the caller).
        self.artifacts: dict[str, AffectedArtifact] = {}
        self.sources: list[dict[str, Any]] = []

    # seeds ----------------------------------------------------------------------

    def _seed(self, run_id: str, text: str, entries: Iterable[int]) -> None:
        if len(self.reasons[run_id]) < _MAX_REASONS:
            self.reasons[run_id].append(Reason(text, tuple(entries), 0))

    def _runs_by_leaf(self, leaves: Collection[int]) -> list[tuple[Any, ...]]:
        return self.index.select("runs", "leaf", leaves)

    def seeds(self) -> None:
        ind, idx = self.ind, self.index
        content = set(ind.artifacts) | set(ind.files)
        for leaf, run_id, direction, digest, kind in idx.select("edges", "digest", content):
            if direction == "used":
                label = "the indicated artifact" if digest in ind.artifacts else "a tampered file"
                self._seed(run_id, f"used {label} {digest}", [leaf])
            else:
                self.sources.append(
                    {"digest": digest, "produced_by": run_id, "kind": kind, "entries": [leaf]}
                )
        for digest in sorted(content):
            self.artifacts.setdefault(digest, AffectedArtifact(digest, None, None, 0, (), 0, ()))
        for leaf, digest, kind in idx.select("artifacts", "digest", content):
            self.sources.append({"digest": digest, "registered_as": kind, "entries": [leaf]})
        if ind.files:
            self._file_observations()
        if ind.env_baselines:
            for row in idx.select("runs", "env_baseline", ind.env_baselines):
                self._seed(row[1], f"ran on environment baseline {row[8]}", [row[0]])
            for leaf, kind, run_id, host, digest, _n, _at in idx.select(
                "events", "digest", ind.env_baselines
            ):
                if kind == "preflight" and run_id:
                    self._seed(
                        run_id, f"preflight on {host} used environment baseline {digest}", [leaf]
                    )
        for row in idx.select("runs", "user_name", ind.users):
            self._seed(row[1], f"run by user {row[2]}", [row[0]])
        if ind.hosts:
            named: dict[Any, list[str]] = defaultdict(list)
            for leaf, host in idx.select("run_hosts", "host", ind.hosts):
                named[leaf].append(host)
            for row in self._runs_by_leaf(named):
                self._seed(row[1], f"ran on host {', '.join(sorted(named[row[0]]))}", [row[0]])
        for row in idx.select("runs", "run_id", ind.runs):
            self._seed(row[1], "named by the indicator", [row[0]])
        window = ind.window
        if window is not None:
            in_window = self._in_window(idx.runs_in_window(*window), window)
            if any(ind._sets()):
                for run_id in [r for r in self.reasons if r not in in_window]:
                    del self.reasons[run_id]
            else:
                for run_id, leaf in in_window.items():
                    self._seed(run_id, f"ran during {iso(window[0])} .. {iso(window[1])}", [leaf])

    def _in_window(self, rows: list[tuple[Any, ...]], window: tuple[int, int]) -> dict[str, int]:
        open_ended = [r[1] for r in rows if r[7] is None]
        ends: dict[str, int] = {}
        for _, run_id, ended in self.index.select("run_ends", "run_id", open_ended):
            ends[run_id] = max(ended, ends.get(run_id, ended))
        return {
            r[1]: r[0]
            for r in rows
            if (r[7] if r[7] is not None else ends.get(r[1], self.as_of)) >= window[0]
        }

    def _file_observations(self) -> None:
        obs = self.index.select("file_obs", "digest", self.ind.files)
        paths = {leaf: path for leaf, _d, path in obs}
        digests = {leaf: d for leaf, d, _p in obs}
        for leaf, _kind, run_id, host, _b, _n, seen_at in self.index.select(
            "events", "leaf", paths
        ):
            what = f"tampered file {paths[leaf]} ({digests[leaf]})"
            if run_id:
                self._seed(run_id, f"preflight on {host} found {what}", [leaf])
                continue
            # A host-wide observation: the host is implicated from then until a
            # later preflight on it that flagged no file.
            clean = [
                e
                for e in self.index.select("events", "host", [host])
                if e[1] == "preflight" and e[5] == 0 and e[6] >= seen_at and e[0] > leaf
            ]
            clean_at = min((e[6] for e in clean), default=None)
            host_rows = self.index.select("run_hosts", "host", [host])
            for row in self._runs_by_leaf({r[0] for r in host_rows}):
                start = row[6]
                if start >= seen_at and (clean_at is None or start < clean_at):
                    self._seed(
                        row[1],
                        f"ran on {host} after a preflight found {what}"
                        + (" and before it was clean again" if clean_at is not None else ""),
                        [leaf, row[0]],
                    )

    # closure --------------------------------------------------------------------

    def closure(self) -> None:
        frontier = set(self.reasons)
        depth = 0
        while frontier and (self.max_depth is None or depth < self.max_depth):
            depth += 1
            edges = self.index.run_edges(frontier)
            # These runs are affected: their records are read on the side while
            # this step's edges are followed here.
            self.index.prefetch_run_records(frontier)
            # The artifacts first reached here (compiled: 10^5 of them for a large
            # answer), and the rows naming one: the frontier's own (in hand) and
            # other runs' (read now, for the digests the entries say were produced).
            new, again, own = _fast.reach(edges, self.artifacts, depth, AffectedArtifact)
            for row in again:
                self._merge(row)
            others = self.index.readers(new, frontier)
            next_frontier: set[str] = set()
            reasons = self.reasons
            readers = [r for r in others if r[3] in new]
            if own:
                readers.extend(own)
                readers.sort(key=_by_leaf)
            for leaf, run_id, direction, digest, *_ in readers:
                first = new.get(digest)
                if direction != "used" or first is None:
                    continue
                p_leaf, parent = first[0], first[1]
                if parent == run_id:
                    continue
                if run_id not in reasons:
                    next_frontier.add(run_id)
                if len(reasons[run_id]) < _MAX_REASONS:
                    text = f"used {digest}, produced by affected run {parent}"
                    reasons[run_id].append(
                        _make(Reason, (text, (p_leaf, leaf), depth, digest, parent))
                    )
            frontier = next_frontier

    def _merge(self, row: _fast.CheckedEdge) -> None:
        """Another producer (or edge) of an artifact first reached at this depth."""
        leaf, run_id, _d, digest, _kind, name = row
        got = self.artifacts[digest]
        runs = got.produced_by
        self.artifacts[digest] = got._replace(
            name=got.name if got.name is not None else name,  # the first named producer's
            produced_by=runs if run_id in runs else (*runs, run_id),
            entries=(*got.entries, leaf),
        )

    # facts ----------------------------------------------------------------------

    def run_facts(self, run_ids: Collection[str]) -> dict[str, RunFacts]:
        first: dict[str, tuple[Any, ...]] = {}
        hosts: dict[int, tuple[str, ...]] = {}
        for row, row_hosts in self.index.run_records(run_ids):  # by leaf: the first record
            if row[1] not in first:
                first[row[1]] = row
                hosts[row[0]] = row_hosts
        ends: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for leaf, run_id, ended in self.index.select("run_ends", "run_id", run_ids):
            ends[run_id].append((ended, leaf))
        out = {}
        as_of = self.as_of
        for run_id in run_ids:
            record = first.get(run_id)
            end_rows = sorted(ends[run_id]) if run_id in ends else []
            if record is None:
                out[run_id] = RunFacts(
                    run_id,
                    None,
                    None,
                    (),
                    None,
                    0,
                    0,
                    None,
                    None,
                    False,
                    None,
                    tuple(leaf for _, leaf in end_rows),
                )
                continue
            # (leaf, run_id, user, accelerator type, count, world size, started, ended,
            # env baseline, n_hosts): RunFacts' fields, in its order.
            leaf, _, user, a_type, count, world, started, ended, env = record[:9]
            end = ended if ended is not None else (end_rows[-1][0] if end_rows else None)
            out[run_id] = _make(
                RunFacts,
                (
                    run_id,
                    leaf,
                    user,
                    _sorted(hosts[leaf]),
                    a_type,
                    count,
                    world,
                    started,
                    end if end is not None else max(as_of, started),
                    end is None,
                    env,
                    tuple(leaf for _, leaf in end_rows) if ended is None else (),
                ),
            )
        return out

    def clean_runs(self, affected: Mapping[str, RunFacts], limit: int) -> list[CleanRun]:
        if limit <= 0:
            return []
        starts = [f.started_at for f in affected.values() if f.started_at is not None]
        ends = [f.ended_at for f in affected.values() if f.ended_at is not None]
        window = self.ind.window or ((min(starts), max(ends)) if starts and ends else None)
        if window is None:
            return []
        # The first clean runs that started in the period. Enough rows to skip every
        # affected one is the most it takes; a first page of twice the limit is
        # usually enough, and every row read is cross-checked later (10^3 of them
        # for a large answer, most of them neither listed nor affected).
        most = limit + len(affected)
        want = min(2 * limit, most)
        while True:
            rows = self.index.runs_started(window[0], window[1], want)
            chosen = list(dict.fromkeys(r[1] for r in rows if r[1] not in affected))[:limit]
            if len(chosen) == limit or len(rows) < want or want == most:
                break
            want = min(8 * want, most)
        facts = self.run_facts(chosen)
        used: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for leaf, run_id, direction, digest, _k in self.index.select("edges", "run_id", chosen):
            if direction == "used":
                used[run_id].append((leaf, digest))
        out = []
        for run_id in chosen:
            f = facts[run_id]
            inputs = used.get(run_id, [])
            parts = [
                f"used {len(inputs)} recorded inputs, none the indicator or derived from it"
                if inputs
                else "used no recorded inputs"
            ]
            if self.ind.env_baselines:
                parts.append(
                    f"environment baseline {f.env_baseline or 'unrecorded'} is not implicated"
                )
            if self.ind.users:
                parts.append(f"run by {f.user}, not an implicated user")
            if self.ind.hosts:
                parts.append(f"ran on {', '.join(f.hosts)}, no implicated host")
            if self.ind.files:
                parts.append("no preflight tied to it found the tampered file")
            entries = tuple(e for e in (f.entry, *f.end_entries) if e is not None)
            out.append(CleanRun(f, "; ".join(parts), entries + tuple(leaf for leaf, _ in inputs)))
        return out
