"""The scan engine: walk paths, detect each buffer's format, dispatch, collect."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from trainguard.errors import LimitExceeded, UsageError
from trainguard.findings import Checked, Report, Skipped
from trainguard.scan._context import ScanContext
from trainguard.scan._rules import LIMIT_HIT, PARSE_ERROR, UNKNOWN_FORMAT, UNREADABLE
from trainguard.scan.formats import FORMATS, Format, by_name
from trainguard.scan.limits import DEFAULT_LIMITS, ScanLimits

__all__ = ["scan_buffer", "scan_paths"]

#: Called before each file: (index, total or None when unknown, path).
Progress = Callable[[int, "int | None", Path], None]

CAVEATS = [
    "A clean scan means no unsafe construct was found in the bytes examined; it does not "
    "prove that the model's weights are the ones you intended (use the ledger for that).",
    "Formats whose loaders run code by design (TorchScript, Keras Lambda layers, "
    "trust_remote_code) are reported, not proven safe.",
]

#: Directory names never descended into (version control and caches).
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})


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


def _dispatch(data: memoryview, ctx: ScanContext, hint: str | None) -> str | None:
    """Detect and scan one buffer; every failure becomes a finding on ``ctx``."""
    fmt = detect(data, ctx.filename, hint)
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
    view: memoryview, subject: str, limits: ScanLimits, report: Report, *, filename: str | None
) -> None:
    ctx = ScanContext(subject, limits, nested=_dispatch, filename=filename)
    started = time.perf_counter()
    fmt = _dispatch(view, ctx, None)
    report.extend(ctx.findings)
    detail: dict[str, object] = {
        "size": len(view),
        "formats": [f"{s}={n}" for s, n in ctx.formats],
        "seconds": round(time.perf_counter() - started, 6),
    }
    if ctx.dropped:
        detail["findings_dropped"] = ctx.dropped
    report.checked.append(Checked(subject, fmt or "unknown", detail))


def _scan_file(path: Path, limits: ScanLimits, report: Report) -> None:
    subject = str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                _scan_one(memoryview(b""), subject, limits, report, filename=path.name)
                return
            # mmap: formats read only what they need (the pickle, not the tensors).
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    _scan_one(view, subject, limits, report, filename=path.name)
                finally:
                    view.release()
    except OSError as exc:
        report.add(UNREADABLE.finding(subject, f"cannot read: {exc.strerror or exc}"))


def iter_files(
    paths: Iterable[Path], limits: ScanLimits = DEFAULT_LIMITS
) -> Iterator[Path | Skipped]:
    """Files under ``paths`` in a stable order; special files come back as :class:`Skipped`."""
    count = 0
    for root in paths:
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
                for name in sorted(filenames):
                    count += 1
                    if count > limits.directory_files:
                        raise LimitExceeded("directory_files", count, limits.directory_files)
                    yield from _classify(Path(dirpath) / name)
        else:
            count += 1
            yield from _classify(root)


def _classify(path: Path) -> Iterator[Path | Skipped]:
    if path.is_symlink() and not path.exists():
        yield Skipped(str(path), "dangling symbolic link")
    elif path.is_file():
        yield path
    elif path.exists():
        yield Skipped(str(path), "not a regular file")
    else:
        raise UsageError(f"no such file or directory: {path}", subject=str(path))


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
    from trainguard.scan import folders  # directory-level checks (HF auto_map...)

    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists() and not root.is_symlink():
            raise UsageError(
                f"no such file or directory: {root}",
                subject=str(root),
                hint="check the path; trainguard scan takes files and directories",
            )
    report = Report(engine="scan", caveats=list(CAVEATS))
    items = list(iter_files(roots, limits))
    files = [p for p in items if isinstance(p, Path)]
    report.skipped.extend(s for s in items if isinstance(s, Skipped))
    started = time.perf_counter()
    for index, path in enumerate(files):
        if progress is not None:
            progress(index, len(files), path)
        _scan_file(path, limits, report)
    for root in roots:
        if root.is_dir():
            folders.scan_folder(root, report, limits)
    elapsed = time.perf_counter() - started
    total_bytes = sum(int(c.detail.get("size", 0)) for c in report.checked)
    report.stats.update(files=len(files), bytes=total_bytes, seconds=round(elapsed, 6))
    return report
