"""What /proc says about a process: who it is, who runs it, what state it is in.

Used to name the sender of a signal (its pid comes from ``siginfo``) and to tell
a stopped rank (state ``T``) from a dead or merely slow one. Linux only; every
function degrades to ``None``/empty when /proc is unreadable (another user's
process, a process that already exited) rather than raising.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

__all__ = [
    "children_of",
    "describe_pid",
    "proc_state",
    "signal_name",
    "user_name",
]

_PROC = Path("/proc")

#: The one-letter states of /proc/PID/stat, in words.
STATE_WORDS = {
    "R": "running",
    "S": "sleeping",
    "D": "uninterruptible sleep (I/O)",
    "T": "stopped (by a signal)",
    "t": "stopped (by a tracer)",
    "Z": "zombie (exited, not yet reaped)",
    "X": "dead",
    "I": "idle",
}


def signal_name(signo: int) -> str:
    """``15`` -> ``"SIGTERM"``; unknown numbers as ``"signal 99"``."""
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def user_name(uid: int) -> str | None:
    """The login name of ``uid``, or ``None`` when it has none."""
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    close = raw.rfind(")")
    if close < 0:
        return None
    return raw[close + 2 :].split()


def proc_state(pid: int) -> str | None:
    """The one-letter scheduler state of ``pid`` (``"T"`` when stopped), or ``None``."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if not fields or len(fields) < 2:
        return None
    try:
        return int(fields[1])
    except ValueError:
        return None


def _uid(pid: int) -> int | None:
    try:
        text = (_PROC / str(pid) / "status").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return None


def describe_pid(pid: int, *, max_cmdline: int = 512) -> dict[str, Any]:
    """Evidence about process ``pid``: command line, parent, owner and state.

    The process may be gone by the time this runs (a ``kill`` command exits at
    once); then only ``pid`` and ``alive: False`` come back, which is itself
    evidence that the sender was short-lived.
    """
    info: dict[str, Any] = {"pid": pid}
    if pid <= 0:
        info["alive"] = False
        return info
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        info["alive"] = False
        return info
    info["alive"] = True
    argv = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
    cmdline = " ".join(argv)
    info["cmdline"] = cmdline[:max_cmdline] + ("..." if len(cmdline) > max_cmdline else "")
    with contextlib.suppress(OSError):
        info["comm"] = (_PROC / str(pid) / "comm").read_text(encoding="utf-8").strip()
    ppid = _ppid(pid)
    if ppid is not None:
        info["ppid"] = ppid
    uid = _uid(pid)
    if uid is not None:
        info["uid"] = uid
        name = user_name(uid)
        if name:
            info["user"] = name
    state = proc_state(pid)
    if state:
        info["state"] = state
    return info


def children_of(ppid: int) -> list[int]:
    """Pids whose parent is ``ppid`` (a scan of /proc; call it rarely)."""
    found: list[int] = []
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit() and _ppid(int(entry)) == ppid:
            found.append(int(entry))
    return sorted(found)
