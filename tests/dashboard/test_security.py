"""Safe by default: loopback only with a Host check, a token when exposed, no writes, strict headers."""

from __future__ import annotations

from http.client import HTTPMessage

import pytest

from tests.dashboard._util import HostileLedger, Markup, fetch, serving
from trainguard.dashboard import DashboardConfig, DashboardServer
from trainguard.dashboard._config import is_loopback
from trainguard.dashboard._security import COOKIE
from trainguard.errors import UsageError
from trainguard.ledger import Ledger

PAGES = ["/", "/run?id=train-a", "/lineage", "/blast", "/verify"]
API = [
    "/api/runs",
    "/api/run/metrics?id=train-a",
    "/api/lineage?subject=train-a",
    "/api/verification",
]


def _check_headers(reply_headers: HTTPMessage) -> None:
    get = reply_headers.get
    csp = get("Content-Security-Policy")
    assert csp is not None
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    assert get("X-Content-Type-Options") == "nosniff"
    assert get("X-Frame-Options") == "DENY"
    assert get("Referrer-Policy") == "no-referrer"


@pytest.mark.parametrize(
    "path", [*PAGES, *API, "/static/run.js", "/nope", "/static/nope.js", "/run?id=nobody"]
)
def test_every_response_carries_the_security_headers(
    hostile_server: DashboardServer, path: str
) -> None:
    reply = fetch(hostile_server, path)
    assert reply.status in (200, 404)
    _check_headers(reply.headers)
    if path.startswith(("/api/", "/static/")):
        return
    assert reply.headers["Cache-Control"] == "no-store"
    # Pages load scripts only from files: no inline script, no inline style, no event handler.
    markup = Markup(reply.text)
    assert not "".join(markup.script_text).strip()
    for tag, attrs in markup.tags:
        assert tag not in ("style", "iframe", "object", "embed", "img"), tag
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "script":
            assert (attrs.get("src") or "").startswith("/static/"), attrs


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
def test_there_is_no_write_endpoint(
    hostile_server: DashboardServer, hostile: HostileLedger, method: str
) -> None:
    with Ledger.open(hostile.url) as ledger:
        before = ledger.head()
    for path in [*PAGES, *API, "/static/run.js", "/anything"]:
        reply = fetch(hostile_server, path, method=method, headers={"Content-Length": "0"})
        assert reply.status == 405, (method, path)
        assert reply.headers["Allow"] == "GET, HEAD"
        _check_headers(reply.headers)
    with Ledger.open(hostile.url) as ledger:
        assert ledger.head() == before


def test_head_answers_like_get_without_a_body(hostile_server: DashboardServer) -> None:
    get = fetch(hostile_server, "/run?id=train-a")
    head = fetch(hostile_server, "/run?id=train-a", method="HEAD")
    assert head.status == get.status == 200
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(get.body))
    _check_headers(head.headers)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1", 200),
        ("localhost:9000", 200),  # an SSH tunnel's local port
        ("[::1]:8765", 200),
        ("evil.example", 421),
        ("evil.example:8765", 421),
        ("127.0.0.1.evil.example", 421),  # DNS rebinding: an attacker's name for 127.0.0.1
        ("localhost.evil.example", 421),
        ("", 421),
    ],
)
def test_loopback_answers_only_to_loopback_host_names(
    hostile_server: DashboardServer, host: str, status: int
) -> None:
    for path in ("/", "/api/runs", "/static/run.js"):
        reply = fetch(hostile_server, path, host=host)
        assert reply.status == status, (host, path)
        if status != 200:
            assert b"train-a" not in reply.body
            _check_headers(reply.headers)


def test_exposed_dashboard_requires_the_token(hostile: HostileLedger) -> None:
    # Bound to loopback but configured as exposed: the same decision as a 0.0.0.0 bind.
    config = DashboardConfig(ledger=hostile.url, port=0, exposed=True, verify_jobs=1)
    with serving(config) as server:
        token = server.config.token
        assert token is not None and len(token) >= 40  # generated: 32 random bytes
        assert server.url.endswith(f"/?token={token}")
        for path in [*PAGES, *API, "/static/run.js"]:
            denied = fetch(server, path)
            assert denied.status == 401, path
            assert b"train-a" not in denied.body
            assert denied.headers["WWW-Authenticate"].startswith("Bearer")
            _check_headers(denied.headers)
            assert (
                fetch(server, path, headers={"Authorization": "Bearer " + "x" * 43}).status == 401
            )
            assert fetch(server, path, headers={"Authorization": f"Bearer {token}"}).status == 200
        # Exposed, the Host check gives way to the token (tunnels, proxies, DNS names).
        ok = fetch(
            server, "/", host="dashboard.example", headers={"Authorization": f"Bearer {token}"}
        )
        assert ok.status == 200 and b"train-a" in ok.body
        assert fetch(server, "/", host="dashboard.example").status == 401
        assert fetch(server, "/?token=wrong-token-wrong-token").status == 401


def test_token_link_sets_a_strict_cookie_and_drops_the_token_from_the_url(
    hostile: HostileLedger,
) -> None:
    config = DashboardConfig(
        ledger=hostile.url,
        port=0,
        exposed=True,
        token="t0ken-for-the-tests-0123456789",
        verify_jobs=1,
    )
    with serving(config) as server:
        reply = fetch(server, "/run?id=train-a&token=t0ken-for-the-tests-0123456789")
        assert reply.status == 303
        assert reply.headers["Location"] == "/run?id=train-a"
        cookie = reply.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=t0ken-for-the-tests-0123456789;")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        with_cookie = fetch(
            server,
            "/run?id=train-a",
            headers={"Cookie": f"{COOKIE}=t0ken-for-the-tests-0123456789"},
        )
        assert with_cookie.status == 200 and b"train-a" in with_cookie.body
        wrong = fetch(server, "/", headers={"Cookie": f"{COOKIE}=t0ken-for-the-tests-0000000000"})
        assert wrong.status == 401
        # the redirect never leaves the dashboard
        for target in ("//evil.example/x", "/\\evil.example/x", "/%2F%2Fevil.example"):
            reply = fetch(server, f"{target}?token=t0ken-for-the-tests-0123456789")
            location = reply.headers["Location"]
            assert reply.status == 303, target
            assert location.startswith("/") and not location.startswith("//"), target
            assert "\\" not in location and "%" not in location, target


def test_a_token_given_on_loopback_is_required_there_too(hostile: HostileLedger) -> None:
    config = DashboardConfig(
        ledger=hostile.url, port=0, token="abcdefghijklmnop-1234", verify_jobs=1
    )
    with serving(config) as server:
        assert fetch(server, "/").status == 401
        assert (
            fetch(server, "/", headers={"Authorization": "Bearer abcdefghijklmnop-1234"}).status
            == 200
        )
        # and the loopback Host check still holds, token or not
        assert (
            fetch(
                server,
                "/",
                host="evil.example",
                headers={"Authorization": "Bearer abcdefghijklmnop-1234"},
            ).status
            == 421
        )


def test_static_files_are_a_fixed_list(hostile_server: DashboardServer) -> None:
    assert fetch(hostile_server, "/static/vendor/chart.umd.min.js").status == 200
    for path in (
        "/static/../_app.py",
        "/static/%2e%2e/_app.py",
        "/static/vendor/VENDOR.md",  # not a served type
        "/static/vendor/cytoscape.LICENSE",
        "/static//etc/passwd",
        "/static/",
    ):
        assert fetch(hostile_server, path).status == 404, path


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("gpu-login-01", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert DashboardConfig(host=host).is_exposed is not loopback


@pytest.mark.parametrize(
    "token", ["short", "has space in it 12345", "semi;colon-0123456789", "é" * 20]
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(UsageError):
        DashboardConfig(token=token)


def test_access_log_masks_the_token(
    hostile: HostileLedger, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cret-token-value-0123456789"
    config = DashboardConfig(
        ledger=hostile.url, port=0, token=secret, access_log=True, verify_jobs=1
    )
    with serving(config) as server:
        assert fetch(server, f"/?token={secret}").status == 303
    err = capfd.readouterr().err
    assert "token=***" in err
    assert secret not in err
