"""The scan engine: walk paths, detect each buffer's format, dispatch, collect."""

from __future__ import annotations

import errno
import mmap
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from trainguard.errors import LimitExceeded, UsageError
from trainguard.findings import Checked, Report, Skipped
from trainguard.scan import _pages
from trainguard.scan._context import ScanContext
from trainguard.scan._rules import LIMIT_HIT, PARSE_ERROR, UNKNOWN_FORMAT, UNREADABLE
from trainguard.scan.formats import FORMATS, Format, by_name
from trainguard.scan.limits import DEFAULT_LIMITS, ScanLimits

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["scan_buffer", "scan_paths"]

#: Called before each file: (index, total or None when unknown, path).
Progress = Callable[[int, "int | None", "Path"], None]

CAVEATS = [
    "A clean scan means no unsafe construct was found in the bytes examined; it does not "
    "prove that the model's weights are the ones you intended (use the ledger for that).",
    "Formats whose loaders run code by design (TorchScript, Keras Lambda layers, "
    "trust_remote_code) are reported, not proven safe.",
]

#: Bytes at each end of a file that detection reads (magic numbers, a zip's end record).
_PROBED = 64 * 1024 + 22

#: Directory names never descended into (version control and caches).
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})
#: Errors pathlib's is_file()/exists() answer False to instead of raising (3.11 pathlib).
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})
_MISSING_WINERRORS = frozenset({21, 123, 1921})  # not ready, invalid name, unresolvable link


def detect(data: memoryview, filename: str | None = None, hint: str | None = None) -> Format | None:
    """The first registered format whose ``detect`` accepts ``data`` (``hint`` first)."""
    if hint is not None:
        fmt = by_name(hint)
        if fmt is not None and fmt.detect(data, filename):
            return fmt
    for fmt in FORMATS:
        if fmt.detect(data, filename):
            return fmt
    return None


def _dispatch(
    data: memoryview, ctx: ScanContext, hint: str | None, *, mapped: bool = False
) -> str | None:
    """Detect and scan one buffer; every failure becomes a finding on ``ctx``.

    ``mapped``: ``data`` is the engine's own mapping of a file, read without
    read-ahead while detecting (see :mod:`._pages`).
    """
    fmt = detect(data, ctx.filename, hint)
    if mapped:
        _pages.restore_read_ahead(data)  # detection is over; the format reads as it needs
    if fmt is None:
        ctx.add(
            UNKNOWN_FORMAT,
            f"content of {len(data)} bytes matches no known format",
            size=len(data),
            head=bytes(data[:16]).hex(),
        )
        return None
    ctx.note_format(fmt.NAME)
    try:
        ctx.check_time()
        fmt.scan(data, ctx)
    except LimitExceeded as exc:
        ctx.add(LIMIT_HIT, f"{fmt.NAME}: {exc.message}", limit=exc.limit, format=fmt.NAME)
    except RecursionError:
        ctx.add(
            LIMIT_HIT, f"{fmt.NAME}: recursion limit reached", limit="recursion", format=fmt.NAME
        )
    except MemoryError:
        ctx.add(LIMIT_HIT, f"{fmt.NAME}: out of memory", limit="memory", format=fmt.NAME)
    except Exception as exc:  # fail closed: a parser crash is a finding
        ctx.add(
            PARSE_ERROR,
            f"{fmt.NAME} parser failed: {type(exc).__name__}: {exc}",
            format=fmt.NAME,
            error=type(exc).__name__,
        )
    return fmt.NAME


def scan_buffer(
    data: bytes | memoryview,
    subject: str = "<buffer>",
    *,
    limits: ScanLimits = DEFAULT_LIMITS,
    filename: str | None = None,
) -> Report:
    """Scan an in-memory buffer (what a safe loader is about to load)."""
    report = Report(engine="scan", caveats=list(CAVEATS))
    view = data if isinstance(data, memoryview) else memoryview(data)
    _scan_one(view, subject, limits, report, filename=filename)
    return report


def _scan_one(
    view: memoryview,
    subject: str,
    limits: ScanLimits,
    report: Report,
    *,
    filename: str | None,
    mapped: bool = False,
) -> None:
    ctx = ScanContext(subject, limits, nested=_dispatch, filename=filename)
    started = time.perf_counter()
    fmt = _dispatch(view, ctx, None, mapped=mapped)
    report.extend(ctx.findings)
    detail: dict[str, object] = {
        "size": len(view),
        "formats": [f"{s}={n}" for s, n in ctx.formats],
        "seconds": round(time.perf_counter() - started, 6),
    }
    if ctx.dropped:
        detail["findings_dropped"] = ctx.dropped
    report.checked.append(Checked(subject, fmt or "unknown", detail))


def _scan_file(path: str, limits: ScanLimits, report: Report) -> None:
    subject = path
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                _scan_one(memoryview(b""), subject, limits, report, filename=name)
                return
            # mmap: formats read only what they need (the pickle, not the tensors).
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                # Detection probes the head, the tail and signatures far in: no read-ahead
                # around each probe, one read each for the head and tail.
                _pages.expect_random_access(view)
                _pages.prefetch(view, 0, _PROBED)
                _pages.prefetch(view, size - _PROBED, size)
                try:
                    _scan_one(view, subject, limits, report, filename=name, mapped=True)
                finally:
                    view.release()
    except OSError as exc:
        report.add(UNREADABLE.finding(subject, f"cannot read: {exc.strerror or exc}"))


def _normal(path: str) -> str:
    """``str(Path(path))``: the spelling subjects use (no ``//``, ``/./`` or trailing ``/``).

    pathlib is only imported for a path that needs normalising: it costs a few
    milliseconds at every start, and every command is one process.
    """
    if os.name == "posix" and path and not path.startswith("//"):
        parts = path.split("/")
        if all(p not in ("", ".") for p in (parts[1:] if path.startswith("/") else parts)):
            return path
    from pathlib import Path

    return str(Path(path))


def _mode(path: str, *, follow: bool = True) -> int | None:
    """``st_mode`` of ``path``, or None where pathlib's is_file()/exists() say False."""
    try:
        return (os.stat(path) if follow else os.lstat(path)).st_mode
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS or getattr(exc, "winerror", None) in _MISSING_WINERRORS:
            return None
        raise
    except ValueError:  # an embedded NUL
        return None


def _is_dir(path: str) -> bool:
    mode = _mode(path)
    return mode is not None and stat.S_ISDIR(mode)


def iter_files(
    paths: Iterable[str], limits: ScanLimits = DEFAULT_LIMITS
) -> Iterator[str | Skipped]:
    """Files under ``paths`` (normal spellings, see :func:`_normal`) in a stable order;
    special files come back as :class:`Skipped`."""
    count = 0
    for root in paths:
        if _is_dir(root):
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
                for name in sorted(filenames):
                    count += 1
                    if count > limits.directory_files:
                        raise LimitExceeded("directory_files", count, limits.directory_files)
                    yield from _classify(_normal(os.path.join(dirpath, name)))
        else:
            count += 1
            yield from _classify(root)


def _classify(path: str) -> Iterator[str | Skipped]:
    link = _mode(path, follow=False)
    mode = _mode(path)
    if link is not None and stat.S_ISLNK(link) and mode is None:
        yield Skipped(path, "dangling symbolic link")
    elif mode is not None and stat.S_ISREG(mode):
        yield path
    elif mode is not None:
        yield Skipped(path, "not a regular file")
    else:
        raise UsageError(f"no such file or directory: {path}", subject=path)


def scan_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    limits: ScanLimits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> Report:
    """Scan files and directories (recursively, HF model folders included).

    One bad file never aborts the scan: read errors, parser failures and limit
    hits are findings on that file. A path that does not exist is a
    :class:`~trainguard.errors.UsageError`.
    """
    roots = [_normal(os.fspath(p)) for p in paths]
    for root in roots:
        if _mode(root) is None and _mode(root, follow=False) is None:
            raise UsageError(
                f"no such file or directory: {root}",
                subject=root,
                hint="check the path; trainguard scan takes files and directories",
            )
    report = Report(engine="scan", caveats=list(CAVEATS))
    items = list(iter_files(roots, limits))
    files = [p for p in items if isinstance(p, str)]
    report.skipped.extend(s for s in items if isinstance(s, Skipped))
    started = time.perf_counter()
    for index, path in enumerate(files):
        if progress is not None:
            from pathlib import Path  # only a progress display needs it

            progress(index, len(files), Path(path))
        _scan_file(path, limits, report)
    for root in roots:
        if _is_dir(root):
            from trainguard.scan import folders  # directory-level checks (HF auto_map...)

            folders.scan_folder(root, report, limits)
    elapsed = time.perf_counter() - started
    total_bytes = sum(int(c.detail.get("size", 0)) for c in report.checked)
    report.stats.update(files=len(files), bytes=total_bytes, seconds=round(elapsed, 6))
    return report
