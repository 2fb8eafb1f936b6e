"""Chart data of a run: loss, gradient norm and per-rank step time, with alarms marked.

Built from the run's :class:`~trainguard.ledger.StepMetrics` and
:class:`~trainguard.ledger.Alert` entries. Long series are thinned to
:data:`MAX_POINTS` points (the alarm markers are placed from the full series);
a run with many ranks shows the median and slowest ranks' step times instead
of one line per rank. Non-finite values (a diverging loss) become gaps in the
lines and are listed separately, since JSON has no NaN.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from trainguard.dashboard._data import fold_relayed, read_records
from trainguard.ledger import Alert, Ledger, StepMetrics

__all__ = ["CHARTS", "MAX_POINTS", "MAX_RANK_LINES", "run_metrics"]

#: Points per line drawn.
MAX_POINTS = 2_000
#: Up to this many ranks, the step-time chart has one line per rank.
MAX_RANK_LINES = 16
#: Slowest ranks drawn (by mean step time) when there are more ranks than that.
SLOWEST_SHOWN = 4
#: Metric entries read for one run; beyond that an even sample of them is read.
MAX_METRIC_ENTRIES = 200_000
#: metric name -> (chart title, y-axis label).
CHARTS = {
    "loss": ("Loss", "loss"),
    "grad_norm": ("Gradient norm", "L2 norm"),
    "step_time": ("Step time per rank", "seconds"),
}

Points = list[tuple[int, float | None]]


def _thin(points: Points) -> Points:
    if len(points) <= MAX_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_POINTS)
    kept = points[::stride]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


def _value_at(points: Points, step: int) -> float | None:
    """The series' value at the last logged step at or before ``step`` (else its first)."""
    best: float | None = None
    for s, v in points:
        if s > step:
            break
        if v is not None:
            best = v
    if best is None:
        best = next((v for _, v in points if v is not None), None)
    return best


def _series(
    by_rank: dict[int, dict[int, float]], nonfinite: list[dict[str, Any]], name: str
) -> dict[int, Points]:
    out: dict[int, Points] = {}
    for rank, steps in sorted(by_rank.items()):
        points: Points = []
        for step, value in sorted(steps.items()):
            if math.isfinite(value):
                points.append((step, value))
            else:
                points.append((step, None))
                nonfinite.append({"metric": name, "rank": rank, "step": step, "value": str(value)})
        out[rank] = points
    return out


def _step_time_lines(per_rank: dict[int, Points]) -> list[tuple[str, int | None, Points]]:
    if len(per_rank) <= MAX_RANK_LINES:
        return [(f"rank {r}", r, p) for r, p in per_rank.items()]
    steps: dict[int, list[float]] = defaultdict(list)
    means: dict[int, float] = {}
    for rank, points in per_rank.items():
        finite = [v for _, v in points if v is not None]
        means[rank] = statistics.fmean(finite) if finite else 0.0
        for s, v in points:
            if v is not None:
                steps[s].append(v)
    lines: list[tuple[str, int | None, Points]] = [
        ("median over ranks", None, [(s, statistics.median(v)) for s, v in sorted(steps.items())]),
        ("max over ranks", None, [(s, max(v)) for s, v in sorted(steps.items())]),
    ]
    for rank in sorted(means, key=lambda r: -means[r])[:SLOWEST_SHOWN]:
        lines.append((f"rank {rank} (slow)", rank, per_rank[rank]))
    return lines


def run_metrics(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """The chart data of ``run_id`` (see the module docstring for its shape)."""
    events = ledger.storage.select("events", "run_id", [run_id])
    metric_leaves = sorted(int(r[0]) for r in events if r[1] == "metrics")
    alert_leaves = sorted(int(r[0]) for r in events if r[1] == "alert")
    sampled = len(metric_leaves) > MAX_METRIC_ENTRIES
    if sampled:
        stride = math.ceil(len(metric_leaves) / MAX_METRIC_ENTRIES)
        metric_leaves = metric_leaves[::stride]
    records = read_records(ledger, metric_leaves + alert_leaves)
    values: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    alerts: list[tuple[int, Alert]] = []
    for leaf, record in sorted(records.items()):
        if isinstance(record, StepMetrics):
            for name, value in record.floats().items():
                values[name][record.rank][record.step] = value
        elif isinstance(record, Alert):
            alerts.append((leaf, record))
    nonfinite: list[dict[str, Any]] = []
    alarms = [
        {
            "number": number,
            "entry": leaf,
            "step": a.step,
            "rank": a.evidence.get("rank"),
            "rule": a.rule,
            "severity": a.severity,
            "message": a.message,
        }
        # Numbered as the run page numbers them: relayed copies folded in.
        for number, (leaf, a, _by) in enumerate(fold_relayed(alerts), start=1)
    ]
    charts: dict[str, Any] = {}
    for name, (title, unit) in CHARTS.items():
        per_rank = _series(values.get(name, {}), nonfinite, name)
        if not per_rank:
            charts[name] = {"title": title, "unit": unit, "series": [], "markers": []}
            continue
        if name == "step_time":
            lines = _step_time_lines(per_rank)
        else:
            # Loss and gradient norm of the lowest rank that logged them (rank 0 in a
            # data-parallel job, where every rank holds the same model).
            rank = min(per_rank)
            lines = [(f"rank {rank}", rank, per_rank[rank])]
        markers = []
        for alarm in alarms:
            if alarm["step"] is None:
                continue
            own = [p for label, r, p in lines if r is not None and r == alarm["rank"]]
            points = own[0] if own else lines[0][2]
            y = _value_at(points, int(alarm["step"]))
            if y is not None:
                markers.append({"x": alarm["step"], "y": y, "alarm": alarm["number"]})
        charts[name] = {
            "title": title,
            "unit": unit,
            "series": [
                {"label": label, "rank": r, "points": [list(p) for p in _thin(points)]}
                for label, r, points in lines
            ],
            "markers": markers,
        }
    return {
        "run_id": run_id,
        "charts": charts,
        "alarms": alarms,
        "nonfinite": nonfinite[:1000],
        "sampled": sampled,
        "metric_names": sorted(values),
    }
