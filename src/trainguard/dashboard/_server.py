"""The HTTP server: the standard library's threading server in front of :class:`App`.

Every method name reaches :meth:`App.handle`, so anything but GET and HEAD
gets a 405 (not the standard library's 501), and every response, errors
included, carries the security headers of :mod:`._security`.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from trainguard.dashboard._app import App
from trainguard.dashboard._config import DashboardConfig
from trainguard.dashboard._http import Response
from trainguard.dashboard._security import SECURITY_HEADERS, redact
from trainguard.errors import UsageError

__all__ = ["DashboardServer"]

#: Seconds a connection may sit idle before it is dropped (a slow client holds a thread).
_IDLE_TIMEOUT = 30


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "trainguard-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT

    def __getattr__(self, name: str) -> Any:
        # http.server dispatches to do_<METHOD>; every method is answered by App.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        if self.command not in ("GET", "HEAD"):
            # A body we will not read must not be taken for the next request.
            self.close_connection = True
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.app.handle(self.command, self.path, headers)
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", response.cache)
        for name, value in (*SECURITY_HEADERS, *response.headers):
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests (bad request line, headers too long) get our headers too.
        self.close_connection = True
        self._send(Response(code, f"{message or 'error'}\n".encode(), "text/plain; charset=utf-8"))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log:
            sys.stderr.write(redact(f"{self.address_string()} - {format % args}") + "\n")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class DashboardServer:
    """The read-only dashboard over one ledger.

    Construction opens the ledger once (refusing one that does not exist) and
    binds the socket; :meth:`serve_forever` or :meth:`start` serve it.

    Raises:
        UsageError: no ledger at the URL, or the address cannot be bound.
        StorageError: the ledger cannot be reached.
    """

    def __init__(self, config: DashboardConfig) -> None:
        self.app = App(config)
        try:
            self._httpd = _HTTPServer((config.host, config.port), self.app, config.access_log)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                subject="--host/--port",
                hint="pick another --port (0 picks a free one)",
            ) from exc
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> DashboardConfig:
        """The effective configuration (with the generated token, if one was needed)."""
        return self.app.config

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The address to open, with the token when one is required."""
        host = self.config.host
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        base = f"http://{host}:{self.port}/"
        return f"{base}?token={self.config.token}" if self.config.requires_token else base

    def serve_forever(self) -> None:
        """Verify the ledger in the background and serve until :meth:`stop` (or Ctrl-C)."""
        self.app.verifier.start()
        self._httpd.serve_forever()

    def start(self) -> None:
        """Serve from a background thread (tests, notebooks)."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="trainguard-dashboard", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
