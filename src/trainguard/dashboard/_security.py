"""Who may ask the dashboard anything: Host check, access token, response headers.

* On loopback the only callers are this machine's users and the pages their
  browser opens. A web page elsewhere can still make the browser send
  requests to ``127.0.0.1`` under its own host name (DNS rebinding), so the
  ``Host`` header must name a loopback host.
* Bound anywhere else the dashboard is *exposed*: every request needs the
  token, as ``Authorization: Bearer TOKEN``, or once as ``?token=TOKEN`` (a
  link printed by ``trainguard dashboard``), which sets an HttpOnly,
  SameSite=Strict cookie and redirects to the same URL without the token,
  so it does not linger in the address bar, history or logs.
* Every response carries a strict Content-Security-Policy (scripts and
  styles from the dashboard itself only; no inline script, no framing).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from trainguard.dashboard._config import DashboardConfig, is_loopback

__all__ = [
    "COOKIE",
    "CSP",
    "SECURITY_HEADERS",
    "Decision",
    "authorize",
    "host_allowed",
    "redact",
]

COOKIE = "trainguard_dashboard"
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=()"),
)
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with any ``token=...`` value masked (for logs)."""
    return _TOKEN_IN_TEXT.sub(r"\1***", text)


def _host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8765`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, colon, port = header.rpartition(":")
    return name if colon and port.isdigit() else header


def host_allowed(config: DashboardConfig, host_header: str | None) -> bool:
    """Whether a request's ``Host`` header is acceptable (DNS-rebinding defence on loopback)."""
    if config.is_exposed:
        # Reached under any name (a tunnel, a proxy); the token is the defence there.
        return True
    return bool(host_header) and is_loopback(_host_name(host_header or ""))


@dataclass(frozen=True)
class Decision:
    """The answer to "may this request proceed?".

    Attributes:
        allowed: the request may be served.
        set_cookie: a ``Set-Cookie`` value to send (a token came in the query).
        redirect: where to send the browser instead (the URL without the token).
    """

    allowed: bool
    set_cookie: str | None = None
    redirect: str | None = None


def _matches(given: str | None, expected: str) -> bool:
    # Constant-time: the comparison leaks nothing about how much of a guess was right.
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _cookie_token(header: str | None) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def authorize(config: DashboardConfig, path: str, headers: Mapping[str, str]) -> Decision:
    """Decide whether the request for ``path`` (with its query) carries the token.

    ``headers`` maps lower-case header names to values.
    """
    expected = config.token
    if not config.requires_token:
        return Decision(True)
    if expected is None:  # an exposed config that was never given a token: fail closed
        return Decision(False)
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and _matches(value.strip(), expected):
        return Decision(True)
    if _matches(_cookie_token(headers.get("cookie")), expected):
        return Decision(True)
    parts = urlsplit(path)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "token"]
    if len(given) == 1 and _matches(given[0], expected):
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        # Only a plain local path: "//host" or "/\\host" would send the browser elsewhere.
        local = (
            parts.path if re.fullmatch(r"/[\w./-]*", parts.path) and "//" not in parts.path else "/"
        )
        cookie = f"{COOKIE}={expected}; Path=/; HttpOnly; SameSite=Strict"
        return Decision(True, set_cookie=cookie, redirect=local + (f"?{rest}" if rest else ""))
    return Decision(False)
