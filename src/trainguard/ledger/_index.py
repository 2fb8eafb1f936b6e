"""The derived tables: query indexes computed from log entries. Pure: no I/O.

Each row is a function of exactly one entry and carries that entry's leaf
index, so a table can be rebuilt, or checked, from the log alone. Every entry
has exactly one row in one of the :data:`PRIMARY` tables; :data:`SECONDARY`
tables hold the multi-valued parts (a run's hosts, a preflight's files) and
their row counts are recorded in the primary row (``n_hosts``, ``n_files``).
That makes a deleted or inserted row visible from row counts alone
(:func:`~trainguard.ledger.verify.check_index_counts`), without reading the
log; an *altered* row, or a deleted one made up for by an inserted one, needs
the full comparison that ``trainguard ledger verify`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "EDGE_FAST",
    "INDEXES",
    "PRIMARY",
    "SECONDARY",
    "TABLES",
    "Row",
    "rows_of",
]

#: Column names per table; the first column is always the entry's leaf index.
TABLES: dict[str, tuple[str, ...]] = {
    "runs": (
        "leaf",
        "run_id",
        "user_name",
        "accelerator_type",
        "accelerator_count",
        "world_size",
        "started_at",
        "ended_at",
        "env_baseline",
        "n_hosts",
    ),
    "run_hosts": ("leaf", "host"),
    "run_ends": ("leaf", "run_id", "ended_at"),
    "edges": ("leaf", "run_id", "direction", "digest", "artifact_kind"),
    "artifacts": ("leaf", "digest", "artifact_kind"),
    "events": ("leaf", "kind", "run_id", "host", "digest", "n_files", "at"),
    "file_obs": ("leaf", "digest", "path"),
}
#: Integer columns (everything else is text).
INTEGER_COLUMNS = frozenset(
    {
        "leaf",
        "accelerator_count",
        "world_size",
        "started_at",
        "ended_at",
        "n_hosts",
        "n_files",
        "at",
    }
)
PRIMARY = ("runs", "run_ends", "edges", "artifacts", "events")
SECONDARY = {"run_hosts": ("runs", "n_hosts"), "file_obs": ("events", "n_files")}
#: ``(table, column)`` pairs with an index, for the queries blast radius makes.
INDEXES = (
    ("runs", "run_id"),
    ("runs", "user_name"),
    ("runs", "env_baseline"),
    ("runs", "started_at"),
    ("run_hosts", "host"),
    ("run_ends", "run_id"),
    ("edges", "digest"),
    ("edges", "run_id"),
    ("artifacts", "digest"),
    ("events", "run_id"),
    ("events", "digest"),
    ("events", "host"),
    ("file_obs", "digest"),
)

#: A JSON string without escapes or control characters: its text is its value.
_STR = r'"([^"\\\x00-\x1f]*)"'
_INT = r"-?(?:0|[1-9][0-9]*)"
#: The common shape of an edge entry (the bulk of a log), matched without building
#: a dict. Only texts the full parser reads as exactly these keys match, so the
#: groups ``(artifact_kind, digest, direction, name, run_id)`` are the values it
#: would read (``name`` is ``None`` when absent) and give the row that
#: :func:`rows_of` would; any other text (extra keys, escapes, another kind)
#: takes the full path.
EDGE_FAST = re.compile(
    r'\{"artifact_kind":'
    + _STR
    + r',"at":'
    + _INT
    + r',"digest":'
    + _STR
    + r',"direction":'
    + _STR
    + r',"kind":"edge"(?:,"name":'
    + _STR
    + r")?"
    + r',"run_id":'
    + _STR
    + r'(?:,"size":'
    + _INT
    + r')?,"v":'
    + _INT
    + r"\}"
).fullmatch
_SKIP = r'"[^"\\\x00-\x1f]*"'  # a string of that form whose value is not needed
#: The common shape of a run entry (a tenth of a log, ~500 bytes each), read
#: without building a dict, as :data:`EDGE_FAST` reads edges: keys in canonical
#: order, each at most once, every string without escapes, ``hosts`` a list of such
#: strings, ``seeds`` an object of such strings to integers. The groups are
#: ``(accelerator_count, accelerator_type, ended_at, env_baseline, hosts,
#: run_id, started_at, user, world_size)`` (``ended_at``, ``env_baseline`` ``None``
#: when absent; ``hosts`` the list's inner text); anything else takes the full path.
RUN_FAST = re.compile(
    r'\{"accelerator_count":('
    + _INT
    + r'),"accelerator_type":'
    + _STR
    + r'(?:,"code_commit":'
    + _SKIP
    + r')?(?:,"code_diff_hash":'
    + _SKIP
    + r")?"
    + r'(?:,"command":'
    + _SKIP
    + r')?(?:,"config_hash":'
    + _SKIP
    + r")?"
    + r'(?:,"data_manifest":'
    + _SKIP
    + r')?(?:,"ended_at":('
    + _INT
    + r"))?"
    + r'(?:,"env_baseline":'
    + _STR
    + r")?"
    + r',"hosts":\[((?:'
    + _SKIP
    + r"(?:,"
    + _SKIP
    + r")*)?)\]"
    + r'(?:,"job":'
    + _SKIP
    + r')?,"kind":"run","run_id":'
    + _STR
    + r'(?:,"seeds":\{(?:'
    + _SKIP
    + ":"
    + _INT
    + r"(?:,"
    + _SKIP
    + ":"
    + _INT
    + r")*)?\})?"
    + r',"started_at":('
    + _INT
    + r'),"user":'
    + _STR
    + r',"v":'
    + _INT
    + r',"world_size":('
    + _INT
    + r")\}"
).fullmatch
#: ``(table, values without the leaf)``.
Row = tuple[str, tuple[Any, ...]]


def _run(e: Mapping[str, Any]) -> list[Row]:
    hosts = e["hosts"]
    rows: list[Row] = [
        (
            "runs",
            (
                e["run_id"],
                e["user"],
                e["accelerator_type"],
                e["accelerator_count"],
                e["world_size"],
                e["started_at"],
                e.get("ended_at"),
                e.get("env_baseline"),
                len(hosts),
            ),
        )
    ]
    rows.extend(("run_hosts", (h,)) for h in hosts)
    return rows


def _run_end(e: Mapping[str, Any]) -> list[Row]:
    return [("run_ends", (e["run_id"], e["ended_at"]))]


def _edge(e: Mapping[str, Any]) -> list[Row]:
    return [("edges", (e["run_id"], e["direction"], e["digest"], e["artifact_kind"]))]


def _artifact(e: Mapping[str, Any]) -> list[Row]:
    return [("artifacts", (e["digest"], e["artifact_kind"]))]


def _event(e: Mapping[str, Any]) -> list[Row]:
    return [("events", (e["kind"], e["run_id"], None, None, 0, e["at"]))]


def _preflight(e: Mapping[str, Any]) -> list[Row]:
    files = e.get("files", ())
    rows: list[Row] = [
        (
            "events",
            ("preflight", e.get("run_id"), e["host"], e.get("env_baseline"), len(files), e["at"]),
        )
    ]
    rows.extend(("file_obs", (digest, path)) for path, digest in files)
    return rows


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], list[Row]]] = {
    "run": _run,
    "run_end": _run_end,
    "edge": _edge,
    "artifact": _artifact,
    "alert": _event,
    "fingerprint": _event,
    "metrics": _event,
    "preflight": _preflight,
}


def rows_of(entry: Mapping[str, Any]) -> list[Row]:
    """The derived rows of one entry object (as decoded from the log).

    Raises:
        KeyError: the entry lacks a field its kind requires, or has an unknown kind.
    """
    return _BUILDERS[entry["kind"]](entry)
