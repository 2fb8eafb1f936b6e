"""OpenLineage run events (spec 2-0-2) for the runs in a ledger.

Each run becomes a ``START`` event and, once it ended, a ``COMPLETE`` /
``FAIL`` / ``ABORT`` event, with the content it used as inputs and produced
as outputs. Datasets are named by content digest in the ``trainguard``
namespace, so the same checkpoint links runs in Marquez (or any consumer)
whatever path it was read from; the path, kind and size are in a custom
``trainguard_artifact`` facet. The run facet ``trainguard_ledger`` names the
ledger entry that records the run, so a lineage view can be traced back to
tamper-evident evidence.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterator
from typing import Any

from trainguard import __version__
from trainguard.ledger import _canonical
from trainguard.ledger._ledger import Ledger

__all__ = ["PRODUCER", "SCHEMA_URL", "openlineage_events"]

SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = f"https://github.com/trainguard/trainguard/tree/v{__version__}"
#: Custom facets name their (informal) schema; OpenLineage requires the URL field.
_FACET_SCHEMA = "https://trainguard.dev/spec/openlineage/{name}/1-0-0.json"
_NAMESPACE_UUID = uuid.UUID("6f0b5f0e-6a4e-4b8e-9f0d-7472616e6775")  # "trainguard" run ids
_BATCH = 50_000
_END_TYPES = {"completed": "COMPLETE", "failed": "FAIL", "killed": "ABORT", "unknown": "OTHER"}


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _facet(name: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": _FACET_SCHEMA.format(name=name), **fields}


def run_uuid(origin: str, run_id: str) -> str:
    """The OpenLineage ``runId`` (a UUID) of a trainguard run: UUIDv5 of origin and run id."""
    return str(uuid.uuid5(_NAMESPACE_UUID, f"{origin}\n{run_id}"))


def _dataset(edge: dict[str, Any]) -> dict[str, Any]:
    return {
        "namespace": "trainguard",
        "name": edge["digest"],
        "facets": {
            "version": {
                "_producer": PRODUCER,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
                "datasetVersion": edge["digest"],
            },
            "trainguard_artifact": _facet(
                "trainguard_artifact",
                kind=edge.get("artifact_kind"),
                path=edge.get("name"),
                size=edge.get("size"),
                ledgerEntry=edge["_leaf"],
            ),
        },
    }


def _entries(
    ledger: Ledger, run_ids: Collection[str] | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    storage = ledger.storage
    if run_ids is None:
        size = ledger.size()
        for start in range(0, size, _BATCH):
            for leaf, _kind, data, _h in storage.entries(start, min(start + _BATCH, size)):
                yield leaf, _canonical.decode(data, strict=False)
        return
    leaves = {r[0] for r in storage.select("runs", "run_id", run_ids)}
    leaves |= {r[0] for r in storage.select("edges", "run_id", run_ids)}
    leaves |= {r[0] for r in storage.select("run_ends", "run_id", run_ids)}
    for leaf, _kind, data, _h in storage.entries_at(leaves):
        yield leaf, _canonical.decode(data, strict=False)


def openlineage_events(
    ledger: Ledger, run_ids: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """START and end events for ``run_ids`` (default: every run), in run start order."""
    runs: dict[str, tuple[int, dict[str, Any]]] = {}
    ends: dict[str, dict[str, Any]] = {}
    edges: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"used": [], "produced": []}
    )
    for leaf, entry in _entries(ledger, run_ids):
        kind = entry["kind"]
        if kind == "run":
            runs.setdefault(entry["run_id"], (leaf, entry))
        elif kind == "run_end":
            ends[entry["run_id"]] = entry
        elif kind == "edge":
            edges[entry["run_id"]][entry["direction"]].append({**entry, "_leaf": leaf})
    events = []
    for run_id, (leaf, run) in sorted(runs.items(), key=lambda kv: (kv[1][1]["started_at"], kv[0])):
        run_facets = {
            "trainguard_run": _facet(
                "trainguard_run",
                runId=run_id,
                user=run["user"],
                hosts=run["hosts"],
                worldSize=run["world_size"],
                acceleratorType=run["accelerator_type"],
                acceleratorCount=run["accelerator_count"],
                codeCommit=run.get("code_commit"),
                environmentBaseline=run.get("env_baseline"),
                configHash=run.get("config_hash"),
                dataManifest=run.get("data_manifest"),
            ),
            "trainguard_ledger": _facet("trainguard_ledger", origin=ledger.origin, entry=leaf),
        }
        job = {"namespace": "trainguard", "name": run.get("job") or run_id}
        base = {
            "run": {"runId": run_uuid(ledger.origin, run_id), "facets": run_facets},
            "job": job,
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
        }
        used = [_dataset(e) for e in edges[run_id]["used"]]
        produced = [_dataset(e) for e in edges[run_id]["produced"]]
        events.append(
            {
                "eventType": "START",
                "eventTime": _iso(run["started_at"]),
                **base,
                "inputs": used,
                "outputs": [],
            }
        )
        end = ends.get(run_id)
        ended_at = run.get("ended_at") if end is None else end["ended_at"]
        if ended_at is not None:
            status = "completed" if end is None else end["status"]
            events.append(
                {
                    "eventType": _END_TYPES[status],
                    "eventTime": _iso(ended_at),
                    **base,
                    "inputs": used,
                    "outputs": produced,
                }
            )
    return events
