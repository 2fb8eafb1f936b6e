"""The JSON API the pages' scripts read (and scripts of users may too). GET only."""

from __future__ import annotations

from trainguard.dashboard import _data
from trainguard.dashboard._http import Request, Response, json_response
from trainguard.dashboard._metrics import run_metrics
from trainguard.errors import UsageError

__all__ = ["API"]


def runs(req: Request) -> Response:
    page = _data.runs_page(req.ledger, req.number("page", 1))
    return json_response(
        {
            "total": page.total,
            "page": page.page,
            "pages": page.pages,
            "runs": [
                {
                    **s.run.to_json(),
                    "entry": s.leaf,
                    "status": s.status,
                    "effective_end": s.ended_at,
                    "alarms": s.alarms,
                    "alarm_severities": dict(s.severities),
                }
                for s in page.runs
            ],
        }
    )


def metrics(req: Request) -> Response:
    run_id = req.query.get("id", "")
    if not run_id or not req.ledger.storage.select("runs", "run_id", [run_id]):
        return json_response({"error": "no such run"}, 404)
    return json_response(run_metrics(req.ledger, run_id))


def lineage(req: Request) -> Response:
    try:
        return json_response(_data.lineage_graph(req.ledger, req.query.get("subject", "")))
    except UsageError as exc:
        return json_response({"error": exc.message}, 400)


def blast(req: Request) -> Response:
    try:
        indicator = _data.indicator_from_query(req.query)
    except UsageError as exc:
        return json_response({"error": exc.message}, 400)
    if indicator is None:
        return json_response({"error": "give at least one indicator"}, 400)
    return json_response(_data.blast(req.ledger, indicator))


def verification(req: Request) -> Response:
    head = req.ledger.head()
    req.verifier.refresh(head.size)
    signed = req.ledger.latest_signed_head()
    return json_response(
        {
            "origin": req.ledger.origin,
            "tree_head": head.to_json(),
            "signed_tree_head": signed.to_json() if signed else None,
            **req.verifier.status(),
        }
    )


#: path -> handler
API = {
    "/api/runs": runs,
    "/api/run/metrics": metrics,
    "/api/lineage": lineage,
    "/api/blast": blast,
    "/api/verification": verification,
}
