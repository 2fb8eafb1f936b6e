"""Page-cache hints for a file the engine mapped: read what is scanned, not what is skipped.

The engine maps each file. Detection looks at a few bytes here and there (the
head, the tail, a signature at growing offsets) and a checkpoint scan touches
one page per tensor (its local header) and reads only the pickle. Linux
answers a page fault on a file mapping by reading ahead around it
(``read_ahead_kb``: 128 KiB by default, several MiB on some virtual disks), so
on a cold page cache those scattered touches would read most of a multi-GB
file. So the engine turns read-ahead off while formats are detected, and back
on for formats that read their whole buffer; archive readers keep it off and
ask for read-ahead over exactly the ranges they read in full.

Hints are only given for a view of a whole mapping of at least
:data:`SPARSE_MIN` bytes (the top of a large file): nested buffers, in-memory
data and small files are left alone. Hints never change what is read, only how
the kernel fetches it; a platform without ``madvise`` or a failing call is
ignored.
"""

from __future__ import annotations

import contextlib
import mmap

__all__ = [
    "PREFETCH_BYTES",
    "SPARSE_MIN",
    "expect_random_access",
    "prefetch",
    "prefetch_pages",
    "restore_read_ahead",
]

#: Files smaller than this are read whole by one read-ahead anyway.
SPARSE_MIN = 1024 * 1024
#: Read-ahead requested for one range at most (a multi-GB member is not pulled in at once).
PREFETCH_BYTES = 64 * 1024 * 1024
#: Smaller ranges cost a few page faults; a system call would cost more.
_MIN_PREFETCH = 16 * 1024

_RANDOM = getattr(mmap, "MADV_RANDOM", None)
_NORMAL = getattr(mmap, "MADV_NORMAL", None)
_WILLNEED = getattr(mmap, "MADV_WILLNEED", None)


def _mapping(view: memoryview) -> mmap.mmap | None:
    """The mmap ``view`` covers from its first byte to its last, if large enough to matter."""
    try:
        obj = view.obj
        if (
            isinstance(obj, mmap.mmap)
            and len(view) == len(obj) >= SPARSE_MIN
            and view.itemsize == 1
        ):
            return obj
    except ValueError:  # a released view or a closed map
        pass
    return None


def _advise(mapping: mmap.mmap, advice: int | None, *span: int) -> None:
    if advice is not None:
        with contextlib.suppress(OSError, ValueError):
            mapping.madvise(advice, *span)


def expect_random_access(view: memoryview) -> None:
    """Page faults in the file ``view`` maps read their own page only, from now on."""
    mapping = _mapping(view)
    if mapping is not None:
        _advise(mapping, _RANDOM)


def restore_read_ahead(view: memoryview) -> None:
    """Undo :func:`expect_random_access`: the format about to scan reads the file through."""
    mapping = _mapping(view)
    if mapping is not None:
        _advise(mapping, _NORMAL)


def prefetch(view: memoryview, start: int, end: int) -> None:
    """Ask the kernel to read ``view[start:end]`` ahead (at most :data:`PREFETCH_BYTES`)."""
    if end - start < _MIN_PREFETCH or _WILLNEED is None:
        return
    mapping = _mapping(view)
    if mapping is None:
        return
    end = min(end, len(view), start + PREFETCH_BYTES)
    start = max(start, 0)
    start -= start % mmap.PAGESIZE  # madvise takes page-aligned starts
    if end > start:
        _advise(mapping, _WILLNEED, start, end - start)


def prefetch_pages(view: memoryview, offsets: list[int]) -> None:
    """Ask for the pages at ``offsets`` at once, so that their reads overlap instead of
    running one synchronous fault after another (a header per tensor, on a cold file)."""
    if _WILLNEED is None:
        return
    mapping = _mapping(view)
    if mapping is None:
        return
    page = mmap.PAGESIZE
    last = -1
    for offset in sorted(offsets):
        first = offset - offset % page
        if first <= last or not 0 <= offset < len(view):
            continue
        # Two pages: a header may straddle a page boundary.
        _advise(mapping, _WILLNEED, first, min(2 * page, len(view) - first))
        last = first + page
