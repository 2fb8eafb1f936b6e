"""What a route gets (:class:`Request`) and returns (:class:`Response`).

The security headers are added by the server to every response, not here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.dashboard._render import Renderer
    from trainguard.dashboard._verifier import Verifier
    from trainguard.ledger import Ledger

__all__ = ["Request", "Response", "html", "json_response", "text"]


@dataclass
class Request:
    """One GET, with the ledger opened for it."""

    path: str
    query: Mapping[str, str]
    ledger: Ledger
    renderer: Renderer
    verifier: Verifier
    #: The ledger URL for display (passwords masked).
    ledger_text: str

    def number(self, name: str, default: int) -> int:
        """A small non-negative integer parameter, ``default`` when absent or malformed."""
        value = self.query.get(name, "")
        return int(value) if value.isdigit() and len(value) < 10 else default

    def page(self, template: str, nav: str, status: int = 200, **context: Any) -> Response:
        """Render ``template`` with the context every page shares."""
        body = self.renderer.render(
            template,
            nav=nav,
            ledger_url=self.ledger_text,
            head_size=self.ledger.size(),
            **context,
        )
        return html(body, status)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    cache: str = "no-store"


def html(page: str, status: int = 200) -> Response:
    return Response(status, page.encode("utf-8"), "text/html; charset=utf-8")


def text(message: str, status: int) -> Response:
    return Response(status, (message + "\n").encode("utf-8"), "text/plain; charset=utf-8")


def json_response(data: Any, status: int = 200) -> Response:
    # <, > and & as \u escapes: the text can never be read as markup, whatever sniffs it.
    body = (
        json.dumps(data, ensure_ascii=False, allow_nan=False, sort_keys=True)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    return Response(status, body.encode("utf-8"), "application/json; charset=utf-8")
