"""What the ledger records: runs, artifacts, the edges between them, and run events.

Every record is a frozen dataclass that validates itself when built, so a
held record is always well formed; :func:`record_from_json` rebuilds one from
an entry (checking its ``kind`` and ``v``) and rejects unknown fields.
Times are integer Unix seconds (UTC); content is named by digest strings
(``sha256:<hex>``, see :func:`~trainguard.ledger.capture.digest_file`).

Example:
    >>> from trainguard.ledger.records import Edge, Run, record_from_json
    >>> run = Run("run-1", user="ana", hosts=("gpu-001",), world_size=8,
    ...           accelerator_type="H100", accelerator_count=8, started_at=1714000000)
    >>> record_from_json(run.to_json()) == run
    True
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trainguard.errors import UsageError
from trainguard.ledger._canonical import DIGEST_RE, MAX_INT

__all__ = [
    "DIRECTIONS",
    "RECORD_TYPES",
    "Alert",
    "Artifact",
    "Edge",
    "PreflightResult",
    "Record",
    "Run",
    "RunEnd",
    "StepFingerprint",
    "StepMetrics",
    "record_from_json",
]

#: The entry format version written by this code.
VERSION = 1
#: Names of people, hosts, runs and kinds: no whitespace, quotes or control characters.
_NAME_RE = re.compile(r"^[\w.:@/+=~,-]{1,256}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_MAX_TEXT = 64 * 1024
DIRECTIONS = ("used", "produced")
_STATUSES = ("completed", "failed", "killed", "unknown")


def _fail(record: str, name: str, problem: str) -> typing.NoReturn:
    raise UsageError(f"invalid {record} record: {name} {problem}", subject=f"{record}.{name}")


class Record:
    """Base of every ledger record: ``kind`` names it in the log."""

    kind: ClassVar[str]
    #: Fields holding digests / names / commits, checked by pattern.
    _digests: ClassVar[tuple[str, ...]] = ()
    _names: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        kind = self.kind
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None:
                if not _optional(f):
                    _fail(kind, f.name, "is required")
                continue
            if f.name in self._digests and not (isinstance(value, str) and DIGEST_RE.match(value)):
                _fail(kind, f.name, f"is not a content digest: {value!r}")
            if f.name in self._names and not (isinstance(value, str) and _NAME_RE.match(value)):
                _fail(kind, f.name, f"is not a valid name: {value!r}")
            if isinstance(value, bool):
                continue
            if isinstance(value, int) and not 0 <= value <= MAX_INT:
                _fail(kind, f.name, f"is out of range: {value}")
            if isinstance(value, str) and len(value) > _MAX_TEXT:
                _fail(kind, f.name, f"is longer than {_MAX_TEXT} characters")
        self._validate()

    def _validate(self) -> None:
        """Record-specific checks beyond the field patterns."""

    def to_json(self) -> dict[str, Any]:
        """The entry object: ``kind``, ``v`` and every field (optional ones when set)."""
        out: dict[str, Any] = {"kind": self.kind, "v": VERSION}
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            t = type(value)
            if t is str or t is int:  # most fields: skip the slow ABC check below
                pass
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            elif isinstance(value, Mapping):
                value = dict(value)
            out[name] = value
        return out


def _optional(f: dataclasses.Field[Any]) -> bool:
    return f.default is None


_HINTS: dict[type, dict[str, Any]] = {}
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _check_type(record: str, name: str, value: Any, hint: Any) -> Any:
    """Check one JSON value against a field's type hint; convert lists to tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(record, name, value, inner)
    if (hint is int and type(value) is int) or (hint is bool and type(value) is bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if origin is tuple and isinstance(value, list):
        (item, *_) = typing.get_args(hint)
        return tuple(_check_type(record, name, v, item) for v in value)
    if origin in (Mapping, dict) and isinstance(value, dict):
        key_t, val_t = typing.get_args(hint)
        return {
            _check_type(record, name, k, key_t): _check_type(record, name, v, val_t)
            for k, v in value.items()
        }
    if hint is Any:
        return value
    _fail(record, name, f"has the wrong type: {type(value).__name__}")


def _from_json(cls: type[Record], data: Mapping[str, Any]) -> Record:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - fields - {"kind", "v"}
    if unknown:
        _fail(cls.kind, ", ".join(sorted(unknown)), "is not a field of this record")
    kwargs = {
        name: _check_type(cls.kind, name, data[name], hints[name])
        for name in fields
        if name in data
    }
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise UsageError(f"invalid {cls.kind} record: {exc}", subject=cls.kind) from exc


@dataclass(frozen=True)
class Run(Record):
    """One training (or evaluation) job: who ran what, where, on what, when.

    ``accelerator_count`` is the total number of accelerators the run held
    (for the usual one-rank-per-GPU job it equals ``world_size``); GPU-hours
    are ``accelerator_count`` times the run's duration.
    """

    kind: ClassVar[str] = "run"
    _digests = ("code_diff_hash", "env_baseline", "config_hash", "data_manifest")
    _names = ("run_id", "user", "accelerator_type", "job")

    run_id: str
    user: str
    hosts: tuple[str, ...]
    world_size: int
    accelerator_type: str
    accelerator_count: int
    started_at: int
    ended_at: int | None = None
    job: str | None = None
    command: str | None = None
    code_commit: str | None = None
    code_diff_hash: str | None = None
    env_baseline: str | None = None
    config_hash: str | None = None
    data_manifest: str | None = None
    seeds: Mapping[str, int] = field(default_factory=dict)

    def _validate(self) -> None:
        if not self.hosts or len(set(self.hosts)) != len(self.hosts):
            _fail("run", "hosts", "must be a non-empty list of distinct hosts")
        for host in self.hosts:
            if not isinstance(host, str) or not _NAME_RE.match(host):
                _fail("run", "hosts", f"holds an invalid host name: {host!r}")
        if self.world_size < 1:
            _fail("run", "world_size", "must be at least 1")
        if self.ended_at is not None and self.ended_at < self.started_at:
            _fail("run", "ended_at", "is before started_at")
        if self.code_commit is not None and not _COMMIT_RE.match(self.code_commit):
            _fail("run", "code_commit", "is not a 40- or 64-digit hex commit id")
        for key, seed in self.seeds.items():
            if not _NAME_RE.match(key) or type(seed) is not int:
                _fail("run", "seeds", f"maps names to integers, got {key!r}: {seed!r}")


@dataclass(frozen=True)
class RunEnd(Record):
    """A run finished (or was found dead): closes its GPU-hour accounting."""

    kind: ClassVar[str] = "run_end"
    _names = ("run_id",)

    run_id: str
    ended_at: int
    status: str = "completed"
    exit_code: int | None = None

    def _validate(self) -> None:
        if self.status not in _STATUSES:
            _fail("run_end", "status", f"must be one of {', '.join(_STATUSES)}")


@dataclass(frozen=True)
class Artifact(Record):
    """Content known to the ledger by digest: a checkpoint, data manifest, environment baseline..."""

    kind: ClassVar[str] = "artifact"
    _digests = ("digest",)
    _names = ("artifact_kind",)

    digest: str
    artifact_kind: str
    at: int
    size: int | None = None
    name: str | None = None


@dataclass(frozen=True)
class Edge(Record):
    """A run ``used`` or ``produced`` the content ``digest`` (from the file at ``name``)."""

    kind: ClassVar[str] = "edge"
    _digests = ("digest",)
    _names = ("run_id", "artifact_kind")

    run_id: str
    direction: str
    digest: str
    artifact_kind: str
    at: int
    size: int | None = None
    name: str | None = None

    def _validate(self) -> None:
        if self.direction not in DIRECTIONS:
            _fail("edge", "direction", f"must be one of {', '.join(DIRECTIONS)}")


@dataclass(frozen=True)
class Alert(Record):
    """A sentinel or loader alert raised in a run."""

    kind: ClassVar[str] = "alert"
    _names = ("run_id", "rule", "severity")

    run_id: str
    rule: str
    severity: str
    message: str
    at: int
    step: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepFingerprint(Record):
    """A periodic digest of one rank's training state (parameters, optimizer) at a step."""

    kind: ClassVar[str] = "fingerprint"
    _names = ("run_id",)

    run_id: str
    step: int
    rank: int
    fingerprint: str
    at: int


_METRIC_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_METRIC_VALUE_RE = re.compile(r"^(-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|nan|-?inf)$")


@dataclass(frozen=True)
class StepMetrics(Record):
    """Training telemetry of one rank at a logged step: what the dashboard charts.

    ``values`` maps a metric name (``loss``, ``grad_norm``, ``step_time``,
    ``data_wait``, ``compute``, ``collective_wait``, ``host_gap``...; seconds for
    times) to its value as a decimal string: ledger entries are canonical JSON,
    which has no floats, and ``repr(float)`` round-trips exactly (``nan`` and
    ``inf`` included, since a diverging loss is exactly what must be kept).
    """

    kind: ClassVar[str] = "metrics"
    _names = ("run_id",)

    run_id: str
    step: int
    rank: int
    at: int
    values: Mapping[str, str] = field(default_factory=dict)

    def _validate(self) -> None:
        if len(self.values) > 64:
            _fail("metrics", "values", "holds more than 64 metrics")
        for name, value in self.values.items():
            if not (isinstance(name, str) and _METRIC_NAME_RE.match(name)):
                _fail("metrics", "values", f"has an invalid metric name: {name!r}")
            if not (isinstance(value, str) and len(value) <= 40 and _METRIC_VALUE_RE.match(value)):
                _fail("metrics", "values", f"{name} is not a decimal number: {value!r}")

    @classmethod
    def of(
        cls, run_id: str, step: int, rank: int, at: int, values: Mapping[str, float]
    ) -> StepMetrics:
        """Build from float values (stored as their exact ``repr``)."""
        return cls(run_id, step, rank, at, {k: repr(float(v)) for k, v in values.items()})

    def floats(self) -> dict[str, float]:
        """The values back as floats."""
        return {k: float(v) for k, v in self.values.items()}


@dataclass(frozen=True)
class PreflightResult(Record):
    """The outcome of ``trainguard preflight`` / ``env verify`` on a host.

    ``files`` lists ``(path, digest)`` of files that did not match the
    environment baseline (edited or unexpected); a digest found there is an
    indicator for :func:`~trainguard.ledger.blast.blast_radius`.
    """

    kind: ClassVar[str] = "preflight"
    _digests = ("env_baseline", "report_digest")
    _names = ("run_id", "host")

    host: str
    at: int
    passed: bool
    findings: int = 0
    run_id: str | None = None
    env_baseline: str | None = None
    report_digest: str | None = None
    files: tuple[tuple[str, str], ...] = ()

    def _validate(self) -> None:
        for item in self.files:
            if not (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], str)
                and 0 < len(item[0]) <= 4096
                and isinstance(item[1], str)
                and DIGEST_RE.match(item[1])
            ):
                _fail("preflight", "files", f"holds a malformed (path, digest) pair: {item!r}")


#: Record classes by ``kind``.
RECORD_TYPES: dict[str, type[Record]] = {
    cls.kind: cls
    for cls in (Run, RunEnd, Artifact, Edge, Alert, StepFingerprint, StepMetrics, PreflightResult)
}


def record_from_json(data: Mapping[str, Any]) -> Record:
    """Rebuild and validate the record an entry object holds.

    Raises:
        UsageError: unknown kind or version, unknown field, wrong type, invalid value.
    """
    kind, version = data.get("kind"), data.get("v")
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UsageError(f"unknown ledger record kind {kind!r}", subject="kind")
    if version != VERSION:
        raise UsageError(f"unsupported {kind} record version {version!r}", subject="v")
    return _from_json(cls, data)
