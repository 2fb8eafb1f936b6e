"""One process-wide Python audit hook, shared by the checks that listen to audit events.

``sys.addaudithook`` hooks can never be removed and run for every audited
event in the process (``open``, ``import``, ``exec``...), so trainguard adds
exactly one, and it is cheap when idle: a global flag test, then one dict
lookup by event name. Subscribers (the audit check, the straggler check's
``time.sleep`` listener) come and go through :func:`subscribe`; the hook itself
stays installed but does nothing for events nobody listens to.

Re-entrancy: a listener that does audited work itself (opening a file, walking
frames with ``sys._getframe``) would re-enter the hook; a thread-local guard
turns those nested calls into no-ops.

Failure policy: an exception raised inside an audit hook aborts the audited
operation, so listener errors are swallowed (and counted) except
:class:`AuditVeto`, which a listener raises on purpose to block the operation.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any

from trainguard.errors import IntegrityError

__all__ = ["AuditVeto", "Subscription", "errors", "set_active", "subscribe"]

Listener = Callable[[str, tuple[Any, ...]], None]


class AuditVeto(IntegrityError):
    """Raised by a listener to block an audited operation (e.g. ``os.system`` inside ``torch.load``)."""


_LOCK = threading.Lock()
_LISTENERS: MappingProxyType[str, tuple[Listener, ...]] = MappingProxyType({})
_ACTIVE = True
_INSTALLED_PID: int | None = None
_GUARD = threading.local()
_ERRORS = 0


def _hook(event: str, args: tuple[Any, ...]) -> None:
    global _ERRORS
    if not _ACTIVE:
        return
    listeners = _LISTENERS.get(event)
    if listeners is None:
        return
    if getattr(_GUARD, "busy", False):
        return
    _GUARD.busy = True
    try:
        for listener in listeners:
            try:
                listener(event, args)
            except AuditVeto:
                raise
            except Exception:
                _ERRORS += 1
    finally:
        _GUARD.busy = False


class Subscription:
    """A listener registered for some events; :meth:`cancel` removes it."""

    def __init__(self, events: tuple[str, ...], listener: Listener) -> None:
        self.events = events
        self.listener = listener
        self.active = True

    def cancel(self) -> None:
        global _LISTENERS
        if not self.active:
            return
        with _LOCK:
            table = dict(_LISTENERS)
            for event in self.events:
                remaining = tuple(fn for fn in table.get(event, ()) if fn is not self.listener)
                if remaining:
                    table[event] = remaining
                else:
                    table.pop(event, None)
            _LISTENERS = MappingProxyType(table)
        self.active = False


def subscribe(events: Iterable[str], listener: Listener) -> Subscription:
    """Call ``listener(event, args)`` for each of ``events``; installs the hook once per process."""
    global _LISTENERS, _INSTALLED_PID
    names = tuple(dict.fromkeys(events))
    with _LOCK:
        # Audit hooks survive fork, so one install per interpreter is enough; the
        # pid check only guards against re-adding after a fork.
        if _INSTALLED_PID is None:
            sys.addaudithook(_hook)
            _INSTALLED_PID = os.getpid()
        table = dict(_LISTENERS)
        for event in names:
            table[event] = (*table.get(event, ()), listener)
        # Copy-on-write: the hook reads the table without a lock.
        _LISTENERS = MappingProxyType(table)
    return Subscription(names, listener)


def set_active(active: bool) -> None:
    """Turn every listener off (``False``) or back on; the hook stays installed."""
    global _ACTIVE
    _ACTIVE = active


def errors() -> int:
    """How many listener exceptions were swallowed (non-zero means a listener has a bug)."""
    return _ERRORS
