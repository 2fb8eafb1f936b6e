"""Read-only queries behind the dashboard pages. Nothing here writes to the ledger.

Lists come from the ledger's derived tables (indexed, fast); every record a
page shows in detail is read from the log itself and checked against its
stored leaf hash on the way (the verification page checks everything else).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainguard.errors import LedgerIntegrityError, UsageError
from trainguard.findings import Severity
from trainguard.ledger import (
    Alert,
    Edge,
    Indicator,
    Ledger,
    Run,
    RunEnd,
    blast_radius,
    lineage,
)
from trainguard.ledger._blast_types import parse_time
from trainguard.ledger._canonical import DIGEST_RE, decode
from trainguard.ledger._merkle import leaf_hash
from trainguard.ledger.records import Record, record_from_json

__all__ = [
    "RUNS_PER_PAGE",
    "AlertView",
    "RunDetail",
    "RunSummary",
    "RunsPage",
    "blast",
    "indicator_from_query",
    "lineage_graph",
    "read_records",
    "recent_artifacts",
    "run_detail",
    "runs_page",
]

RUNS_PER_PAGE = 100
#: Alert entries read for one page of runs (their severities); more are only counted.
MAX_ALERTS_READ = 5_000
#: Alerts listed on a run page.
MAX_ALERTS_SHOWN = 1_000
#: Lineage graphs are cut at this many nodes (the page says so).
MAX_LINEAGE_NODES = 300
#: Length of one indicator field of the blast-radius form.
_MAX_FIELD = 4_096


def read_records(ledger: Ledger, leaves: Collection[int]) -> dict[int, Record]:
    """The records at ``leaves``, each checked against its stored leaf hash.

    Raises:
        LedgerIntegrityError: an entry does not match its leaf hash or is not a valid record.
    """
    out: dict[int, Record] = {}
    for leaf, _kind, data, stored in ledger.storage.entries_at(leaves):
        if leaf_hash(data) != stored:
            raise LedgerIntegrityError(
                "an entry does not match its stored leaf hash",
                subject=f"entry {leaf}",
                hint="run `trainguard ledger verify`",
            )
        try:
            out[leaf] = record_from_json(decode(data))
        except (ValueError, UsageError) as exc:
            raise LedgerIntegrityError(
                f"entry {leaf} is not a valid record: {exc}", subject=f"entry {leaf}"
            ) from exc
    return out


def _severity(label: str) -> Severity:
    try:
        return Severity.parse(label)
    except ValueError:
        return Severity.INFO


@dataclass(frozen=True)
class RunSummary:
    """One line of the runs list."""

    run: Run
    leaf: int
    status: str
    ended_at: int | None
    alarms: int
    severities: Mapping[str, int]

    @property
    def worst(self) -> str | None:
        if not self.severities:
            return None
        return max(self.severities, key=_severity)

    @property
    def gpu_hours(self) -> float | None:
        if self.ended_at is None:
            return None
        return self.run.accelerator_count * max(0, self.ended_at - self.run.started_at) / 3600


@dataclass(frozen=True)
class RunsPage:
    runs: list[RunSummary]
    total: int
    page: int
    pages: int


def _ends(ledger: Ledger, run_ids: Collection[str]) -> dict[str, RunEnd]:
    rows = ledger.storage.select("run_ends", "run_id", run_ids)
    latest: dict[str, RunEnd] = {}
    for record in read_records(ledger, [int(r[0]) for r in rows]).values():
        if isinstance(record, RunEnd):
            known = latest.get(record.run_id)
            if known is None or record.ended_at >= known.ended_at:
                latest[record.run_id] = record
    return latest


def _status(run: Run, end: RunEnd | None) -> tuple[str, int | None]:
    if end is not None:
        return end.status, end.ended_at
    if run.ended_at is not None:
        return "ended", run.ended_at
    return "running", None


def runs_page(ledger: Ledger, page: int = 1) -> RunsPage:
    """Runs, newest first, with their status and alarm counts, ``RUNS_PER_PAGE`` at a time."""
    # A run id recorded twice: its first record describes the run.
    page = max(page, 1)
    total, chosen = ledger.storage.newest_runs((page - 1) * RUNS_PER_PAGE, RUNS_PER_PAGE)
    pages = max(1, math.ceil(total / RUNS_PER_PAGE))
    if page > pages:  # past the end: the last page
        page = pages
        total, chosen = ledger.storage.newest_runs((page - 1) * RUNS_PER_PAGE, RUNS_PER_PAGE)
    run_ids = [str(r[1]) for r in chosen]
    records = read_records(ledger, [int(r[0]) for r in chosen])
    ends = _ends(ledger, run_ids)
    alert_leaves: dict[str, list[int]] = defaultdict(list)
    for leaf, kind, run_id, *_ in ledger.storage.select("events", "run_id", run_ids):
        if kind == "alert":
            alert_leaves[str(run_id)].append(int(leaf))
    wanted = sorted(leaf for leaves in alert_leaves.values() for leaf in leaves)[:MAX_ALERTS_READ]
    alerts = read_records(ledger, wanted)
    severities: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record in alerts.values():
        if isinstance(record, Alert):
            severities[record.run_id][record.severity] += 1
    out = []
    for row in chosen:
        run = records.get(int(row[0]))
        if not isinstance(run, Run):
            raise LedgerIntegrityError(
                "a runs index row names an entry that is not a run", subject=f"entry {row[0]}"
            )
        status, ended = _status(run, ends.get(run.run_id))
        out.append(
            RunSummary(
                run,
                int(row[0]),
                status,
                ended,
                len(alert_leaves.get(run.run_id, ())),
                dict(severities.get(run.run_id, {})),
            )
        )
    return RunsPage(out, total, page, pages)


@dataclass(frozen=True)
class AlertView:
    """An alarm with its evidence laid out for reading."""

    number: int
    leaf: int
    alert: Alert
    #: (key, text, is a block: multi-line or long, is a content digest)
    evidence: list[tuple[str, str, bool, bool]]
    #: Ranks that recorded a relayed copy of this detection.
    relayed_by: tuple[int, ...] = ()

    @property
    def rank(self) -> Any:
        return self.alert.evidence.get("rank")

    @property
    def host(self) -> Any:
        return self.alert.evidence.get("host")


def _relayed(alert: Alert) -> bool:
    reporter, rank = alert.evidence.get("reporter"), alert.evidence.get("rank")
    return reporter is not None and rank is not None and reporter != rank


def fold_relayed(alerts: list[tuple[int, Alert]]) -> list[tuple[int, Alert, tuple[int, ...]]]:
    """The alarms to show, in entry order, each with the ranks that relayed it.

    In a distributed job a rank that did not see a peer's detection itself
    records a relayed copy (``reporter`` != ``rank`` in its evidence). A copy
    is folded into the detecting rank's own record of the same check and rank
    (the nearest by step); a copy with no such record (the detecting rank died
    before writing it) is shown as it is: it is then the only record.
    """
    shown: list[tuple[int, Alert, list[int]]] = []
    own: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    copies = []
    for leaf, alert in alerts:
        if _relayed(alert):
            copies.append((leaf, alert))
            continue
        own[(alert.evidence.get("check"), alert.evidence.get("rank"))].append(len(shown))
        shown.append((leaf, alert, []))
    for leaf, alert in copies:
        targets = own.get((alert.evidence.get("check"), alert.evidence.get("rank")))
        if not targets:
            shown.append((leaf, alert, []))
            continue
        step = alert.step or 0
        nearest = min(targets, key=lambda i: abs((shown[i][1].step or 0) - step))
        shown[nearest][2].append(int(alert.evidence["reporter"]))
    shown.sort(key=lambda item: item[0])
    return [(leaf, alert, tuple(sorted(set(by)))) for leaf, alert, by in shown]


def _evidence_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _evidence(evidence: Mapping[str, Any]) -> list[tuple[str, str, bool, bool]]:
    out = []
    for key in sorted(evidence):
        text = _evidence_text(evidence[key])
        is_digest = bool(DIGEST_RE.match(text))
        out.append((key, text, "\n" in text or len(text) > 120, is_digest))
    return out


@dataclass
class RunDetail:
    """Everything the run page shows."""

    run: Run
    leaf: int
    status: str
    ended_at: int | None
    alerts: list[AlertView] = field(default_factory=list)
    alerts_total: int = 0
    #: Relayed copies folded into the alarms they repeat.
    relayed_copies: int = 0
    edges: list[tuple[int, Edge]] = field(default_factory=list)
    metric_entries: int = 0


def run_detail(ledger: Ledger, run_id: str) -> RunDetail | None:
    """The run's record, status, alarms (with evidence) and artifacts; ``None`` if unknown."""
    rows = sorted(ledger.storage.select("runs", "run_id", [run_id]))
    if not rows:
        return None
    leaf = int(rows[0][0])
    run = read_records(ledger, [leaf]).get(leaf)
    if not isinstance(run, Run):
        raise LedgerIntegrityError(
            "a runs index row names an entry that is not a run", subject=f"entry {leaf}"
        )
    status, ended = _status(run, _ends(ledger, [run_id]).get(run_id))
    detail = RunDetail(run, leaf, status, ended)
    events = ledger.storage.select("events", "run_id", [run_id])
    alert_leaves = sorted(int(r[0]) for r in events if r[1] == "alert")
    detail.alerts_total = len(alert_leaves)
    detail.metric_entries = sum(1 for r in events if r[1] == "metrics")
    records = read_records(ledger, alert_leaves[:MAX_ALERTS_SHOWN])
    alerts = [(a_leaf, r) for a_leaf, r in sorted(records.items()) if isinstance(r, Alert)]
    for number, (a_leaf, record, by) in enumerate(fold_relayed(alerts), start=1):
        view = AlertView(number, a_leaf, record, _evidence(record.evidence), by)
        detail.alerts.append(view)
        detail.relayed_copies += len(by)
    edge_rows = ledger.storage.select("edges", "run_id", [run_id])
    edges = read_records(ledger, [int(r[0]) for r in edge_rows])
    detail.edges = [(e_leaf, e) for e_leaf, e in sorted(edges.items()) if isinstance(e, Edge)]
    return detail


def lineage_graph(ledger: Ledger, subject: str) -> dict[str, Any]:
    """The lineage graph of a digest or run id, in the JSON form of :class:`LineageGraph`.

    Raises:
        UsageError: the subject is neither a digest nor a recorded run.
    """
    return lineage(ledger, subject.strip(), max_nodes=MAX_LINEAGE_NODES).to_json()


def recent_artifacts(ledger: Ledger, limit: int = 30) -> list[tuple[str, str | None, str]]:
    """``(digest, file name, kind)`` of the artifacts most recently written or read by runs."""
    size = ledger.size()
    rows = ledger.storage.rows("edges", max(0, size - 20_000), size)
    newest: dict[str, int] = {}
    for leaf, _run, _direction, digest, _kind in reversed(rows):
        if digest not in newest:
            newest[str(digest)] = int(leaf)
            if len(newest) >= limit:
                break
    records = read_records(ledger, newest.values())
    out = []
    for digest, leaf in newest.items():
        edge = records.get(leaf)
        if isinstance(edge, Edge):
            out.append((digest, edge.name, edge.artifact_kind))
    return out


#: The blast-radius form's fields and the :class:`Indicator` field each fills.
INDICATOR_FIELDS = {
    "artifact": "artifacts",
    "file_hash": "files",
    "env_baseline": "env_baselines",
    "user": "users",
    "host": "hosts",
    "run": "runs",
}


def indicator_from_query(query: Mapping[str, str]) -> Indicator | None:
    """The indicator a blast-radius form asks about; ``None`` when the form is empty.

    Each field may hold several values separated by commas or white space.

    Raises:
        UsageError: a malformed digest or time, or a time window that ends before it starts.
    """
    values: dict[str, Any] = {}
    for name, attr in INDICATOR_FIELDS.items():
        text = query.get(name, "")
        if len(text) > _MAX_FIELD:
            raise UsageError(f"the {name} field is too long", subject=name)
        items = tuple(v for v in re.split(r"[\s,]+", text) if v)
        if items:
            values[attr] = items
    for name in ("since", "until"):
        text = query.get(name, "").strip()
        if text:
            values[name] = parse_time(text, name)
    if not values:
        return None
    return Indicator(**values)


def blast(ledger: Ledger, indicator: Indicator) -> dict[str, Any]:
    """The blast-radius report of ``indicator`` in its JSON form."""
    return blast_radius(ledger, indicator).to_json()
