"""Ledger verification in the background, and its last result for the verification page.

The dashboard never writes to the ledger, so the result lives here, in
memory: a full :func:`~trainguard.ledger.verify_ledger` when the server
starts, and again when the page is looked at after the log has grown (at
most every :data:`MIN_INTERVAL` seconds), and after a failure. A failure is
shown with its diagnostics until a later verification passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from trainguard.errors import TrainguardError
from trainguard.ledger import Ledger, PublicKey, verify_ledger
from trainguard.ledger.storage import LedgerURL

__all__ = ["MIN_INTERVAL", "Verifier"]

#: Seconds between two verifications started by page views.
MIN_INTERVAL = 30.0


class Verifier:
    """Runs :func:`verify_ledger` in a thread; :meth:`status` reports the latest outcome."""

    def __init__(
        self, url: LedgerURL, trusted_keys: Sequence[PublicKey] = (), jobs: int | None = None
    ) -> None:
        self.url = url
        self.trusted_keys = tuple(trusted_keys)
        self.jobs = jobs
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last: dict[str, Any] | None = None
        self._started_at: float | None = None
        self._finished = threading.Event()

    def start(self) -> bool:
        """Start a verification unless one is running; returns whether one was started."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._started_at = time.time()
            self._finished.clear()
            self._thread = threading.Thread(
                target=self._run, name="trainguard-dashboard-verify", daemon=True
            )
            self._thread.start()
            return True

    def refresh(self, current_size: int) -> None:
        """Start a verification if the log grew since the last one and it is not too recent."""
        with self._lock:
            last = self._last
            running = self._thread is not None and self._thread.is_alive()
        if running:
            return
        stale = last is not None and (last.get("size") != current_size or last["state"] != "ok")
        if last is None or (stale and time.time() - last["finished_at"] >= MIN_INTERVAL):
            self.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running verification (if any) ends; ``False`` on timeout."""
        return self._finished.wait(timeout)

    def _run(self) -> None:
        started = time.time()
        result: dict[str, Any]
        try:
            with Ledger.open(self.url) as ledger:
                verified = verify_ledger(ledger, trusted_keys=self.trusted_keys, jobs=self.jobs)
            result = {"state": "ok", **verified.to_json()}
        except TrainguardError as exc:
            result = {
                "state": "failed",
                "error": exc.message,
                "diagnostics": exc.diagnostics(),
            }
        except Exception as exc:  # fail closed: an unexpected crash is not a pass
            result = {
                "state": "failed",
                "error": f"verification crashed: {type(exc).__name__}: {exc}",
                "diagnostics": "",
            }
        result.update(started_at=int(started), finished_at=time.time())
        with self._lock:
            self._last = result
        self._finished.set()

    def status(self) -> dict[str, Any]:
        """``state`` (``never``, ``running``, ``ok``, ``failed``) and the last result's fields."""
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
            last = dict(self._last) if self._last is not None else None
            started = self._started_at
        out: dict[str, Any] = {"running": running, "last": last}
        out["state"] = last["state"] if last is not None else ("running" if running else "never")
        if running and started is not None:
            out["running_since"] = int(started)
        out["signatures_required"] = bool(self.trusted_keys)
        return out
