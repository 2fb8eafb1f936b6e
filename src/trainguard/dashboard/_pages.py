"""The HTML pages: runs, one run, lineage, blast radius, verification.

Each page is a function of a :class:`~trainguard.dashboard._http.Request`;
charts and graphs are drawn in the browser from the JSON API
(:mod:`._api`) by the package's own static scripts.
"""

from __future__ import annotations

from trainguard.dashboard import _data
from trainguard.dashboard._http import Request, Response
from trainguard.errors import UsageError

__all__ = ["PAGES"]


def runs(req: Request) -> Response:
    page = _data.runs_page(req.ledger, req.number("page", 1))
    return req.page("runs.html", "runs", title="Runs", runs=page)


def run(req: Request) -> Response:
    run_id = req.query.get("id", "")
    detail = _data.run_detail(req.ledger, run_id) if run_id else None
    if detail is None:
        return req.page("missing.html", "runs", 404, title="No such run", what="run", name=run_id)
    produced = {e.digest for _, e in detail.edges if e.direction == "produced"}
    return req.page(
        "run.html",
        "runs",
        title=f"Run {detail.run.run_id}",
        d=detail,
        produced=produced,
        max_alerts=_data.MAX_ALERTS_SHOWN,
    )


def lineage(req: Request) -> Response:
    subject = req.query.get("subject", "").strip()
    graph = None
    error = None
    if subject:
        try:
            graph = _data.lineage_graph(req.ledger, subject)
        except UsageError as exc:
            error = exc.message
    return req.page(
        "lineage.html",
        "lineage",
        400 if error else 200,
        title="Lineage",
        subject=subject,
        graph=graph,
        labels={n["id"]: n["label"] for n in graph["nodes"]} if graph else {},
        error=error,
        recent=_data.recent_artifacts(req.ledger) if graph is None else [],
        max_nodes=_data.MAX_LINEAGE_NODES,
    )


def blast(req: Request) -> Response:
    form = {name: req.query.get(name, "") for name in (*_data.INDICATOR_FIELDS, "since", "until")}
    report = None
    error = None
    try:
        indicator = _data.indicator_from_query(req.query)
        if indicator is not None:
            report = _data.blast(req.ledger, indicator)
    except UsageError as exc:
        error = exc.message
    return req.page(
        "blast.html",
        "blast",
        400 if error else 200,
        title="Blast radius",
        form=form,
        report=report,
        error=error,
    )


def verify(req: Request) -> Response:
    head = req.ledger.head()
    req.verifier.refresh(head.size)
    return req.page(
        "verify.html",
        "verify",
        title="Ledger verification",
        origin=req.ledger.origin,
        head=head,
        signed=req.ledger.latest_signed_head(),
        verification=req.verifier.status(),
    )


#: path -> page
PAGES = {"/": runs, "/run": run, "/lineage": lineage, "/blast": blast, "/verify": verify}
