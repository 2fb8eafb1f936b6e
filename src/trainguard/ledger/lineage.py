"""Lineage: where a checkpoint came from and what was derived from it.

``lineage(ledger, digest)`` walks *upstream* (the run that produced it, what
that run used, who produced those...) and *downstream* (the runs that used
it, what they produced...), and returns a graph that renders as an indented
text tree, Graphviz DOT, Mermaid or JSON. Every edge names its ledger entry.
Like blast radius, the walk uses the derived tables cross-checked against
the log, and falls back to the log when they disagree.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from trainguard.errors import StorageError, UsageError
from trainguard.ledger import _canonical
from trainguard.ledger._canonical import normalize_digest
from trainguard.ledger._ledger import Ledger
from trainguard.ledger._query import Index, LogIndex, StorageIndex, cross_check
from trainguard.ledger.verify import check_index_counts

__all__ = ["LineageGraph", "lineage"]


@dataclass
class LineageGraph:
    """Artifacts and runs joined by ``used`` (artifact -> run) and ``produced`` (run -> artifact) edges."""

    root: str
    #: id -> {"type": "artifact" | "run", "label": str}
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (source, target, "used" | "produced", entry)
    edges: list[tuple[str, str, str, int]] = field(default_factory=list)
    truncated: bool = False
    answered_from: str = "derived tables (cross-checked with the log)"

    def _add(self, node: str, kind: str, label: str) -> None:
        self.nodes.setdefault(node, {"type": kind, "label": label})

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "nodes": [{"id": k, **v} for k, v in sorted(self.nodes.items())],
            "edges": [
                {"from": s, "to": t, "relation": r, "entries": [e]}
                for s, t, r, e in sorted(set(self.edges))
            ],
            "truncated": self.truncated,
            "answered_from": self.answered_from,
        }

    def to_dot(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;"]
        for node, info in sorted(self.nodes.items()):
            shape = "box" if info["type"] == "run" else "ellipse"
            style = ", style=bold" if node == self.root else ""
            lines.append(
                f"  {json.dumps(node)} [label={json.dumps(info['label'])}, shape={shape}{style}];"
            )
        for s, t, rel, entry in sorted(set(self.edges)):
            lines.append(
                f"  {json.dumps(s)} -> {json.dumps(t)} [label={json.dumps(f'{rel} #{entry}')}];"
            )
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        ids = {node: f"n{i}" for i, node in enumerate(sorted(self.nodes))}
        lines = ["flowchart LR"]
        for node, info in sorted(self.nodes.items()):
            label = info["label"].replace('"', "'")
            lines.append(
                f'  {ids[node]}["{label}"]'
                if info["type"] == "run"
                else f'  {ids[node]}(["{label}"])'
            )
        for s, t, rel, entry in sorted(set(self.edges)):
            lines.append(f"  {ids[s]} -->|{rel} #{entry}| {ids[t]}")
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        out_edges: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        in_edges: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        for s, t, rel, entry in sorted(set(self.edges)):
            out_edges[s].append((t, rel, entry))
            in_edges[t].append((s, rel, entry))
        lines = [self.nodes.get(self.root, {"label": self.root})["label"]]
        for title, adj, arrow in (("upstream", in_edges, "<-"), ("downstream", out_edges, "->")):
            lines.append(f"{title}:")
            seen = {self.root}

            def walk(
                node: str,
                depth: int,
                adj: dict[str, list[tuple[str, str, int]]] = adj,
                arrow: str = arrow,
                seen: set[str] = seen,
            ) -> None:
                for other, rel, entry in adj.get(node, []):
                    label = self.nodes[other]["label"]
                    again = " (see above)" if other in seen else ""
                    lines.append(f"{'  ' * depth}{arrow} {rel} #{entry}: {label}{again}")
                    if not again:
                        seen.add(other)
                        walk(other, depth + 1)

            before = len(lines)
            walk(self.root, 1)
            if len(lines) == before:
                lines.append("  (none recorded)")
        if self.truncated:
            lines.append("(graph truncated at --max-nodes)")
        return "\n".join(lines) + "\n"


def _artifact_label(digest: str, name: str | None) -> str:
    short = digest.split(":", 1)[1][:12]
    return f"{name} [{short}]" if name else f"{digest.split(':', 1)[0]}:{short}"


def _walk(
    index: Index, subject: str, *, up: bool, down: bool, max_nodes: int, max_depth: int | None
) -> LineageGraph:
    graph = LineageGraph(subject)
    is_run = not subject.startswith("sha256")
    if is_run:
        graph._add(subject, "run", subject)
    else:
        graph._add(subject, "artifact", _artifact_label(subject, None))
    for direction in ("up", "down") if up and down else ("up",) if up else ("down",):
        runs: set[str] = {subject} if is_run else set()
        arts: set[str] = set() if is_run else {subject}
        visited = {subject}
        depth = 0
        while (runs or arts) and (max_depth is None or depth < max_depth):
            depth += 1
            next_runs: set[str] = set()
            next_arts: set[str] = set()
            # up: artifact <-produced- run <-used- artifact; down: artifact -used-> run -produced-> artifact
            want_for_arts = "produced" if direction == "up" else "used"
            want_for_runs = "used" if direction == "up" else "produced"
            for leaf, run_id, rel, digest, _kind in index.select("edges", "digest", arts):
                if rel == want_for_arts and run_id not in visited:
                    visited.add(run_id)
                    next_runs.add(run_id)
                if rel == want_for_arts:
                    graph._add(run_id, "run", run_id)
                    graph.edges.append(
                        (run_id, digest, rel, leaf)
                        if rel == "produced"
                        else (digest, run_id, rel, leaf)
                    )
            for leaf, run_id, rel, digest, _kind in index.select("edges", "run_id", runs):
                if rel == want_for_runs:
                    if digest not in visited:
                        visited.add(digest)
                        next_arts.add(digest)
                    graph._add(digest, "artifact", _artifact_label(digest, None))
                    graph.edges.append(
                        (run_id, digest, rel, leaf)
                        if rel == "produced"
                        else (digest, run_id, rel, leaf)
                    )
            runs, arts = next_runs, next_arts
            if len(graph.nodes) > max_nodes:
                graph.truncated = True
                break
    return graph


def lineage(
    ledger: Ledger,
    subject: str,
    *,
    up: bool = True,
    down: bool = True,
    max_nodes: int = 500,
    max_depth: int | None = None,
) -> LineageGraph:
    """The lineage graph of a content digest (or, given a run id, of a run).

    Raises:
        UsageError: ``subject`` is neither a digest nor a run id in the ledger.
    """
    try:
        subject = normalize_digest(subject)
    except ValueError:
        if not ledger.storage.select("runs", "run_id", [subject]):
            raise UsageError(
                f"{subject!r} is neither a content digest nor a recorded run id", subject=subject
            ) from None
    problems = check_index_counts(ledger.storage)
    index: Index = (
        LogIndex(ledger.storage, ledger.size()) if problems else StorageIndex(ledger.storage)
    )
    try:
        graph = _walk(index, subject, up=up, down=down, max_nodes=max_nodes, max_depth=max_depth)
    except (TypeError, ValueError, StorageError) as exc:
        if not isinstance(index, StorageIndex):
            raise
        # A value of another type in a derived row (SQLite keeps any type in any
        # column) can trip the walk over it: the log answers (see blast radius).
        problems = [f"the derived tables hold a value the walk cannot use ({exc})"]
        index = LogIndex(ledger.storage, ledger.size())
        graph = _walk(index, subject, up=up, down=down, max_nodes=max_nodes, max_depth=max_depth)
    if isinstance(index, StorageIndex):
        problems = cross_check(ledger.storage, index.used)
        if problems:
            index = LogIndex(ledger.storage, ledger.size())
            graph = _walk(
                index, subject, up=up, down=down, max_nodes=max_nodes, max_depth=max_depth
            )
    if problems:
        graph.answered_from = (
            "the log (derived tables disagreed with it: " + "; ".join(problems[:3]) + ")"
        )
    for digest, name in _names(ledger, graph).items():
        graph.nodes[digest]["label"] = _artifact_label(digest, name)
    return graph


def _names(ledger: Ledger, graph: LineageGraph) -> dict[str, str]:
    """A display name per artifact: the file name its edges recorded (read from the entries)."""
    names: dict[str, str] = {}
    leaves = sorted({entry for *_, entry in graph.edges})
    for _leaf, _kind, data, _h in ledger.storage.entries_at(leaves):
        entry = _canonical.decode(data, strict=False)
        name = entry.get("name")
        if isinstance(name, str) and entry.get("digest") and entry["digest"] not in names:
            names[entry["digest"]] = PurePosixPath(name).name or name
    return names
