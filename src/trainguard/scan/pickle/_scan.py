"""``scan_pickle``: run the machine over one stream, then judge what follows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainguard.scan._rules import LIMIT_HIT
from trainguard.scan.pickle import _rules as r
from trainguard.scan.pickle._arrays import joblib_array_hook
from trainguard.scan.pickle._machine import ArrayHook, Machine
from trainguard.scan.pickle._opcodes import as_bytes_view
from trainguard.scan.pickle._probe import looks_like_pickle

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

__all__ = ["PickleSummary", "scan_pickle", "scan_trailing"]


@dataclass(frozen=True)
class PickleSummary:
    """What one call of :func:`scan_pickle` read.

    Attributes:
        end: offset just past the last STOP read, or where parsing stopped.
        complete: every stream read was parsed to its STOP.
        globals: every ``module.name`` imported, in first-seen order.
        protocol: the first PROTO of the first stream (``None`` for protocol 0/1).
        opcodes: opcodes interpreted, all streams together.
        streams: pickle streams read.
        result: the symbolic value the first stream returns (``STOP``).
        persistent_ids: the symbolic ids passed to ``persistent_load``.
    """

    end: int
    complete: bool
    globals: tuple[str, ...]
    protocol: int | None
    opcodes: int = 0
    streams: int = 1
    result: Any = field(default=None, compare=False, repr=False)
    persistent_ids: tuple[Any, ...] = field(default=(), compare=False, repr=False)


def _all_machines(m: Machine) -> list[Machine]:
    out = [m]
    for sub in m.substreams:
        out.extend(_all_machines(sub))
    return out


def scan_trailing(data: bytes | memoryview, ctx: ScanContext, offset: int) -> int:
    """Judge the bytes from ``offset`` to the end, after a container's last pickle.

    Reports ``pickle.trailing-data``, or ``pickle.multiple-streams`` and a full
    scan of every further pickle. Returns the offset where reading stopped.
    """
    view = as_bytes_view(data)
    more = _trailing(view, ctx, offset, None, first_stream=0)
    return more[-1].end if more else offset


def _trailing(
    view: memoryview,
    ctx: ScanContext,
    pos: int,
    hook: ArrayHook | None,
    *,
    first_stream: int = 1,
) -> list[Machine]:
    """Scan every pickle concatenated after ``pos``; report what is not one.

    Returns the machines of the further streams, in order.
    """
    machines: list[Machine] = []
    streams = first_stream
    while pos < len(view):
        if not looks_like_pickle(view, pos):
            ctx.add(
                r.TRAILING_DATA,
                f"{len(view) - pos} unexpected bytes at offset {pos}, after the last pickle",
                offset=pos,
                size=len(view) - pos,
                head=bytes(view[pos : pos + 16]).hex(),
            )
            break
        if len(machines) >= ctx.limits.pickle_streams:
            ctx.add(
                LIMIT_HIT,
                f"pickle: more than {ctx.limits.pickle_streams} streams; the rest not scanned",
                limit="pickle_streams",
                offset=pos,
            )
            break
        streams += 1
        ctx.add(
            r.MULTIPLE_STREAMS,
            f"another pickle (stream {streams}) starts at offset {pos}, after a STOP",
            offset=pos,
            stream=streams,
        )
        nxt = Machine(view, ctx, pos, array_hook=hook)
        nxt.run()
        machines.append(nxt)
        pos = nxt.end
        if not nxt.complete:
            break
    return machines


def scan_pickle(
    data: bytes | memoryview,
    ctx: ScanContext,
    *,
    offset: int = 0,
    allow_trailing: bool = False,
    joblib_arrays: bool = False,
) -> PickleSummary:
    """Scan the pickle stream at ``offset`` of ``data``; report findings on ``ctx``.

    With ``allow_trailing`` the caller owns what follows the first STOP (a
    container reading several pickles back to back); otherwise trailing bytes
    are reported, and when they parse as further pickles each one is scanned
    too. ``joblib_arrays`` skips the raw array bytes joblib writes after each
    ``NumpyArrayWrapper``.

    Raises :class:`~trainguard.errors.LimitExceeded` when a ``pickle_*`` limit
    or the time budget is exhausted (findings made until then are kept).
    """
    view = as_bytes_view(data)
    hook = joblib_array_hook if joblib_arrays else None
    first = Machine(view, ctx, offset, array_hook=hook)
    first.run()
    machines = _all_machines(first)
    complete = first.complete
    streams = 1
    pos = first.end
    if complete and not allow_trailing:
        more = _trailing(view, ctx, pos, hook)
        for m in more:
            machines.extend(_all_machines(m))
        streams += len(more)
        if more:
            pos = more[-1].end
            complete = more[-1].complete
    seen: dict[str, None] = {}
    persistent: list[Any] = []
    for m in machines:
        seen.update(dict.fromkeys(m.globals))
        persistent.extend(m.persistent)
    return PickleSummary(
        end=pos,
        complete=complete,
        globals=tuple(seen),
        protocol=first.protocol,
        opcodes=sum(m.opcodes for m in machines),
        streams=streams,
        result=first.result,
        persistent_ids=tuple(persistent),
    )
