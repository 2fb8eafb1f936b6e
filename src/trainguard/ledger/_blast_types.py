"""The vocabulary of a blast-radius answer: indicators, prices, runs, reasons, the report."""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from trainguard.errors import ConfigError, UsageError
from trainguard.ledger._canonical import normalize_digest
from trainguard.ledger._evidence import Evidence

__all__ = [
    "DEFAULT_PRICES",
    "AffectedArtifact",
    "AffectedRun",
    "BlastRadius",
    "CleanRun",
    "Indicator",
    "PriceTable",
    "Reason",
    "RunFacts",
    "iso",
    "parse_time",
]

DEFAULT_PRICES: dict[str, float] = {
    "H200": 3.80,
    "H100": 3.00,
    "A100": 1.80,
    "L40S": 1.10,
    "A10G": 0.75,
    "V100": 0.90,
    "TPUv5e": 1.20,
    "cpu": 0.0,
}


@dataclass(frozen=True)
class PriceTable:
    """Price per accelerator-hour by accelerator type (exact match, else longest prefix)."""

    prices: Mapping[str, float]
    currency: str = "USD"
    source: str = "built-in illustrative defaults"

    def price(self, accelerator_type: str) -> float | None:
        if accelerator_type in self.prices:
            return self.prices[accelerator_type]
        low = accelerator_type.lower()
        best = max((k for k in self.prices if low.startswith(k.lower())), key=len, default=None)
        return None if best is None else self.prices[best]

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """Read a JSON or TOML file: ``{"currency": "USD", "prices": {"H100": 2.5, ...}}``.

        Raises:
            ConfigError: unreadable file, wrong shape or a negative price.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            if p.suffix == ".toml":
                import tomllib

                data: Any = tomllib.loads(text)
            else:
                data = json.loads(text)
        except (OSError, ValueError, ImportError) as exc:
            raise ConfigError(f"cannot read price table: {exc}", subject=str(p)) from exc
        prices = data.get("prices") if isinstance(data, dict) else None
        if not isinstance(prices, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
            for k, v in prices.items()
        ):
            raise ConfigError(
                "a price table maps accelerator types to non-negative prices per hour",
                subject=str(p),
                expected='{"currency": "USD", "prices": {"H100": 2.5}}',
            )
        currency = data.get("currency", "USD")
        return cls({k: float(v) for k, v in prices.items()}, str(currency), str(p))


@dataclass(frozen=True)
class Indicator:
    """What is known to be bad. Several kinds are combined as a union; a time
    window alone selects every run in it, and with other kinds restricts them."""

    artifacts: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    env_baselines: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()
    since: int | None = None
    until: int | None = None

    def __post_init__(self) -> None:
        for name in ("artifacts", "files", "env_baselines"):
            try:
                object.__setattr__(
                    self, name, tuple(normalize_digest(d) for d in getattr(self, name))
                )
            except ValueError as exc:
                raise UsageError(str(exc), subject=name) from exc
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise UsageError("the time window ends before it starts", subject="--until")
        if not any((*self._sets(), self.since is not None, self.until is not None)):
            raise UsageError(
                "give at least one indicator",
                hint="--artifact, --file-hash, --env-baseline, --user, --host, --run, --since/--until",
            )

    def _sets(self) -> tuple[tuple[str, ...], ...]:
        return (self.artifacts, self.files, self.env_baselines, self.users, self.hosts, self.runs)

    @property
    def window(self) -> tuple[int, int] | None:
        if self.since is None and self.until is None:
            return None
        return (self.since or 0, self.until if self.until is not None else 2**53 - 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "artifacts": list(self.artifacts),
            "files": list(self.files),
            "env_baselines": list(self.env_baselines),
            "users": list(self.users),
            "hosts": list(self.hosts),
            "runs": list(self.runs),
            "since": self.since,
            "until": self.until,
        }

    def describe(self) -> str:
        parts = [
            f"{label} {', '.join(values)}"
            for label, values in zip(
                ("artifact", "tampered file", "environment baseline", "user", "host", "run"),
                self._sets(),
                strict=True,
            )
            if values
        ]
        if self.window is not None:
            parts.append(f"time window {iso(self.window[0])} .. {iso(self.window[1])}")
        return "; ".join(parts)


def parse_time(text: str, name: str) -> int:
    """An indicator's time: ISO 8601 (a date, or a date-time in UTC) or Unix seconds.

    Raises:
        UsageError: anything else (``name`` says which option or field it was).
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    formats = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M")
    for fmt in (*formats, "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(text, fmt))
        except ValueError:
            continue
    raise UsageError(
        f"cannot read time {text!r}",
        subject=name,
        expected="2024-05-01, 2024-05-01T12:00:00Z or Unix seconds",
    )


def iso(t: int | None) -> str:
    if t is None:
        return "-"
    if t >= 2**53 - 1:
        return "open"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class RunFacts(NamedTuple):
    """A run as the ledger records it, with its effective end and accounting.

    (The answer's per-run values are named tuples, as :class:`AffectedArtifact` is:
    a large answer holds 10^4 runs and their reasons, and a frozen dataclass costs
    several times as much to make.)"""

    run_id: str
    entry: int | None
    user: str | None
    hosts: tuple[str, ...]
    accelerator_type: str | None
    accelerator_count: int
    world_size: int
    started_at: int | None
    ended_at: int | None
    ongoing: bool
    env_baseline: str | None
    end_entries: tuple[int, ...] = ()

    @property
    def gpu_hours(self) -> float:
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return self.accelerator_count * max(0, self.ended_at - self.started_at) / 3600

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "user": self.user,
            "hosts": list(self.hosts),
            "accelerator_type": self.accelerator_type,
            "accelerator_count": self.accelerator_count,
            "world_size": self.world_size,
            "started_at": iso(self.started_at) if self.started_at is not None else None,
            "ended_at": iso(self.ended_at) if self.ended_at is not None else None,
            "ongoing": self.ongoing,
            "env_baseline": self.env_baseline,
            "gpu_hours": round(self.gpu_hours, 3),
            "entries": [e for e in (self.entry, *self.end_entries) if e is not None],
        }


class Reason(NamedTuple):
    """One path by which a run is affected, with the entries that prove each step."""

    text: str
    entries: tuple[int, ...]
    depth: int
    via: str | None = None
    parent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "depth": self.depth,
            "via": self.via,
            "parent_run": self.parent,
            "entries": list(self.entries),
        }


class AffectedRun(NamedTuple):
    """A run the indicator reaches: its facts, the (first) reasons why, its cost."""

    facts: RunFacts
    reasons: tuple[Reason, ...]
    cost: float | None

    @property
    def depth(self) -> int:
        return min(r.depth for r in self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.facts.to_json(),
            "depth": self.depth,
            "cost": None if self.cost is None else round(self.cost, 2),
            "because": [r.to_json() for r in self.reasons],
        }


class AffectedArtifact(NamedTuple):
    """A checkpoint (or other artifact) the indicator reaches. (A named tuple: a large
    answer holds 10^5 of them, and a frozen dataclass costs several times as much to make.)"""

    digest: str
    kind: str | None
    name: str | None
    depth: int
    produced_by: tuple[str, ...]
    used_by: int
    entries: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "kind": self.kind,
            "name": self.name,
            "depth": self.depth,
            "produced_by": list(self.produced_by),
            "used_by_runs": self.used_by,
            "entries": list(self.entries),
        }


@dataclass(frozen=True)
class CleanRun:
    facts: RunFacts
    reason: str
    entries: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {**self.facts.to_json(), "why_clean": self.reason, "entries": list(self.entries)}


@dataclass
class BlastRadius:
    """The answer, with its accounting, its complement and its evidence."""

    indicator: Indicator
    as_of: int
    prices: PriceTable
    affected_runs: list[AffectedRun]
    affected_artifacts: list[AffectedArtifact]
    sources: list[dict[str, Any]]
    clean_runs: list[CleanRun]
    totals: dict[str, Any]
    evidence: Evidence
    answered_from: str
    index_problems: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "indicator": self.indicator.to_json(),
            "indicator_text": self.indicator.describe(),
            "as_of": iso(self.as_of),
            "answered_from": self.answered_from,
            "index_problems": self.index_problems,
            "prices": {
                "currency": self.prices.currency,
                "source": self.prices.source,
                "per_accelerator_hour": dict(self.prices.prices),
            },
            "totals": self.totals,
            "affected_runs": [r.to_json() for r in self.affected_runs],
            "affected_artifacts": [a.to_json() for a in self.affected_artifacts],
            "sources": self.sources,
            "clean_runs": [c.to_json() for c in self.clean_runs],
            "caveats": self.caveats,
            "seconds": round(self.seconds, 3),
            "evidence": self.evidence.to_json(),
        }
