"""The dashboard application: from (method, target, headers) to a response.

Independent of the HTTP server so the whole decision path (Host check,
method, token, route, errors) is one function. Only GET and HEAD exist;
there is no route that writes, and the ledger is opened afresh for each
request and closed after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

from trainguard.dashboard._api import API
from trainguard.dashboard._config import DashboardConfig
from trainguard.dashboard._http import Request, Response, html, json_response, text
from trainguard.dashboard._pages import PAGES
from trainguard.dashboard._render import Renderer
from trainguard.dashboard._security import authorize, host_allowed
from trainguard.dashboard._verifier import Verifier
from trainguard.errors import LedgerIntegrityError, StorageError, TrainguardError, UsageError
from trainguard.ledger import Ledger
from trainguard.ledger.storage import resolve_url

__all__ = ["ALLOWED_METHODS", "App"]

log = logging.getLogger("trainguard.dashboard")

ALLOWED_METHODS = ("GET", "HEAD")
#: Static files served, by suffix; anything else in the folder (licenses, notes) is not.
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Query parameters accepted in one request.
_MAX_FIELDS = 32

Route = Callable[[Request], Response]


def _static_files() -> dict[str, tuple[bytes, str]]:
    """``/static/...`` path -> (content, type), read once: a request can only name these."""
    out: dict[str, tuple[bytes, str]] = {}
    root = resources.files("trainguard.dashboard") / "static"
    pending = [(root, "/static")]
    while pending:
        folder, prefix = pending.pop()
        for item in folder.iterdir():
            if item.is_dir():
                pending.append((item, f"{prefix}/{item.name}"))
                continue
            suffix = "." + item.name.rpartition(".")[2]
            if suffix in _STATIC_TYPES:
                out[f"{prefix}/{item.name}"] = (item.read_bytes(), _STATIC_TYPES[suffix])
    return out


class App:
    """Answers requests over the ledger that ``config`` names.

    Raises:
        UsageError: no ledger exists at the URL (it is never created).
        StorageError: the ledger cannot be reached.
    """

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config.with_token()
        self.ledger_url = resolve_url(config.ledger)
        with Ledger.open(self.ledger_url) as ledger:  # refuses a ledger that does not exist
            self.origin = ledger.origin
        self.renderer = Renderer()
        self.verifier = Verifier(self.ledger_url, self.config.trusted_keys, self.config.verify_jobs)
        self.static = _static_files()

    def _error(self, status: int, message: str, api: bool, detail: str = "") -> Response:
        if api:
            return json_response({"error": message, "detail": detail}, status)
        page = self.renderer.render(
            "error.html",
            title="Error",
            nav="",
            ledger_url=self.ledger_url.text,
            head_size=None,
            status=status,
            message=message,
            detail=detail,
        )
        return html(page, status)

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """The response to one request; ``headers`` keys are lower-case."""
        if not host_allowed(self.config, headers.get("host")):
            return text("unexpected Host header: the dashboard answers to localhost only", 421)
        if method not in ALLOWED_METHODS:
            response = text("the dashboard is read-only: only GET and HEAD are allowed", 405)
            response.headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
            return response
        decision = authorize(self.config, target, headers)
        if not decision.allowed:
            response = text("a valid access token is required", 401)
            response.headers.append(("WWW-Authenticate", 'Bearer realm="trainguard dashboard"'))
            return response
        if decision.redirect is not None:
            response = text("authenticated", 303)
            response.headers.append(("Location", decision.redirect))
            if decision.set_cookie:
                response.headers.append(("Set-Cookie", decision.set_cookie))
            return response
        parts = urlsplit(target)
        path = parts.path
        if path.startswith("/static/"):
            found = self.static.get(path)
            if found is None:
                return text("not found", 404)
            return Response(200, found[0], found[1], cache="private, max-age=300")
        api = path.startswith("/api/")
        route: Route | None = API.get(path) if api else PAGES.get(path)
        if route is None:
            return self._error(404, "no such page", api)
        try:
            query = dict(parse_qsl(parts.query, keep_blank_values=True, max_num_fields=_MAX_FIELDS))
        except ValueError:
            return self._error(400, "too many query parameters", api)
        query.pop("token", None)
        return self._route(route, path, query, api)

    def _route(self, route: Route, path: str, query: dict[str, str], api: bool) -> Response:
        try:
            with Ledger.open(self.ledger_url) as ledger:
                request = Request(
                    path, query, ledger, self.renderer, self.verifier, self.ledger_url.text
                )
                return route(request)
        except UsageError as exc:
            return self._error(400, exc.message, api, exc.diagnostics())
        except LedgerIntegrityError as exc:
            return self._error(500, "the ledger failed an integrity check", api, exc.diagnostics())
        except StorageError as exc:
            return self._error(503, "the ledger cannot be read", api, exc.diagnostics())
        except TrainguardError as exc:
            return self._error(500, exc.message, api, exc.diagnostics())
        except Exception:
            log.exception("dashboard: %s failed", path)
            return self._error(500, "internal error (details in the server log)", api)
