"""Sleeps on the training thread, attributed to their call site (Python >= 3.13).

Python 3.13 raises the audit event ``time.sleep`` with the duration before
every sleep. :class:`SleepAudit` listens to it through the shared hook, keeps
only the training thread's sleeps (a DataLoader thread may sleep legitimately),
attributes each to the innermost frame outside the standard library and
trainguard, and per step decides whether sleeping takes more than
``fraction`` of the step time over ``window`` steps, on at least three steps or
in one sleep as long as an average step (rare long sleeps, which the
cross-rank statistics deliberately tolerate as scheduling noise).

Its logic does not need 3.13: :meth:`SleepAudit.on_sleep` can be fed events
directly, which is how it is tested on older interpreters.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = ["SleepAudit", "SleepVerdict", "call_site", "sleep_event_available"]

_STDLIB = (sys.base_prefix, sys.prefix)


def sleep_event_available() -> bool:
    """Whether this interpreter raises the ``time.sleep`` audit event (3.13+)."""
    return sys.version_info >= (3, 13)


def call_site(frame: FrameType | None) -> str:
    """``file:line in func`` of the innermost frame outside the stdlib and trainguard."""
    while frame is not None:
        path = frame.f_code.co_filename
        stdlib = path.startswith(_STDLIB) and "site-packages" not in path
        if "/trainguard/" not in path and not stdlib and not path.startswith("<"):
            return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


@dataclass(frozen=True)
class SleepVerdict:
    """Sleeping took too large a share of the recent steps."""

    step: int
    ms_per_step: float
    fraction: float
    steps: int
    steps_with_sleep: int
    sites: dict[str, float] = field(default_factory=dict)


class SleepAudit:
    """Accounts the training thread's sleeps per step (see the module docstring)."""

    def __init__(
        self, *, fraction: float, window: int, cooldown: int, thread: int | None = None
    ) -> None:
        if not 0 < fraction < 1 or window < 2 or cooldown < 0:
            raise ValueError("fraction in (0, 1), window >= 2, cooldown >= 0")
        self.fraction = fraction
        self.window = window
        self.cooldown = cooldown
        self.thread = threading.get_ident() if thread is None else thread
        self._now = 0.0
        self._sites: dict[str, float] = {}
        self._steps: deque[tuple[float, float]] = deque(maxlen=window)
        self._alarmed_at = -(10**9)
        self._subscription: Any = None

    def subscribe(self) -> bool:
        """Listen to ``time.sleep`` audit events; ``False`` on interpreters without them."""
        if not sleep_event_available():
            return False
        from trainguard.sentinel.checks import _audithook

        self._subscription = _audithook.subscribe(("time.sleep",), self._listener)
        return True

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def _listener(self, event: str, args: tuple[Any, ...]) -> None:
        if threading.get_ident() != self.thread or not args:
            return
        self.on_sleep(float(args[0]), call_site(sys._getframe(1)))

    def on_sleep(self, seconds: float, site: str) -> None:
        """One sleep of ``seconds`` at ``site`` on the training thread."""
        if seconds > 0:
            self._now += seconds
            self._sites[site] = self._sites.get(site, 0.0) + seconds

    def top_sites(self, n: int = 5) -> dict[str, float]:
        """The call sites that slept longest since the last alarm, in ms."""
        top = sorted(self._sites.items(), key=lambda item: -item[1])[:n]
        return {site: round(seconds * 1000, 3) for site, seconds in top}

    def end_step(self, step: int, step_time: float) -> SleepVerdict | None:
        """Close a step that took ``step_time`` seconds; a verdict when sleeping is too large a share."""
        self._steps.append((self._now, max(step_time, 0.0)))
        self._now = 0.0
        if len(self._steps) < self.window or step - self._alarmed_at < self.cooldown:
            return None
        slept = sum(s for s, _ in self._steps)
        total = sum(t for _, t in self._steps)
        sleepy = sum(1 for s, _ in self._steps if s > 0)
        # A pattern (three sleepy steps), or one sleep as long as an average step:
        # the training thread has no reason for either.
        if total <= 0 or slept < self.fraction * total:
            return None
        if sleepy < 3 and slept < total / len(self._steps):
            return None
        self._alarmed_at = step
        verdict = SleepVerdict(
            step=step,
            ms_per_step=round(slept / len(self._steps) * 1000, 3),
            fraction=round(slept / total, 5),
            steps=len(self._steps),
            steps_with_sleep=sleepy,
            sites=self.top_sites(),
        )
        self._sites.clear()
        return verdict
