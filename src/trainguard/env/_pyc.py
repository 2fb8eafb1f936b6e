"""Compiled bytecode (``.pyc``): would the interpreter load it instead of the source?

RECORD lists ``.pyc`` files without hashes, and the import system loads a
``__pycache__`` file whenever its 16-byte header matches the source (same
mtime and size, or a hash-based pyc). A tampered ``.pyc`` with a pristine
source therefore runs while every RECORD hash verifies. This module decides,
from the header alone, which ``.pyc`` files are live; :func:`deep_compare`
(opt-in, seconds per thousand files) recompiles sources in the target
interpreter and compares the code objects.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

__all__ = ["PycVerdict", "classify_pyc", "deep_compare", "source_for"]


@dataclass(frozen=True)
class PycVerdict:
    """What the import system would do with one ``.pyc``.

    ``state`` is one of: ``live`` (header matches; loaded instead of the
    source), ``stale`` (ignored, recompiled), ``foreign`` (another
    interpreter's cache tag), ``orphan`` (no source; a ``__pycache__`` file is
    then never loaded), ``sourceless`` (a bare ``.pyc`` importable on its own),
    ``shadowed`` (a bare ``.pyc`` beside its source, never loaded),
    ``unchecked-mismatch`` (hash-based, never checked, and not matching its
    source: loaded anyway), ``unchecked`` (hash-based unchecked pyc that cannot
    be checked from here).
    """

    state: str
    detail: str
    source: str | None
    optimize: int = 0


def source_for(pyc: str, cache_tag: str) -> tuple[str | None, int, bool]:
    """``(source path, optimization level, tag matches)`` for a ``__pycache__`` file."""
    folder, name = os.path.split(pyc)
    if os.path.basename(folder) != "__pycache__":
        return None, 0, True
    parts = name.split(".")
    # mod.cpython-311.pyc or mod.cpython-311.opt-1.pyc (module names have no dots)
    if len(parts) < 3:
        return None, 0, False
    optimize = 0
    if parts[-2].startswith("opt-"):
        try:
            optimize = int(parts[-2][4:])
        except ValueError:
            return None, 0, False
        tag = parts[-3]
        stem = ".".join(parts[:-3])
    else:
        tag = parts[-2]
        stem = ".".join(parts[:-2])
    source = os.path.join(os.path.dirname(folder), stem + ".py")
    return source, optimize, tag == cache_tag


def mtime_seconds(mtime_ns: int) -> int:
    # importlib compares int(st.st_mtime); st_mtime is computed in C as sec + nsec * 1e-9.
    return int(mtime_ns // 1_000_000_000 + (mtime_ns % 1_000_000_000) * 1e-9)


def classify_pyc(
    pyc: str,
    head: bytes,
    *,
    magic: bytes,
    cache_tag: str,
    same_interpreter: bool,
    source_stat: tuple[int, int] | None = None,
) -> PycVerdict:
    """Classify ``pyc`` from its first 16 bytes ``head``.

    ``source_stat`` is the source's ``(mtime_ns, size)`` when already known
    (saves a ``stat``); otherwise the source is stat-ed here.
    """
    if os.path.basename(os.path.dirname(pyc)) != "__pycache__":
        beside = pyc[:-1]
        if os.path.exists(beside):
            return PycVerdict("shadowed", "a .py beside it takes precedence", beside)
        return PycVerdict("sourceless", "importable bytecode with no source", None)
    source, optimize, tag_ok = source_for(pyc, cache_tag)
    if not tag_ok or source is None:
        return PycVerdict("foreign", "another interpreter's cache tag", source)
    if source_stat is None:
        try:
            st = os.stat(source)
        except OSError:
            return PycVerdict("orphan", "its source file is gone", source, optimize)
        source_stat = (st.st_mtime_ns, st.st_size)
    src_mtime, src_size = mtime_seconds(source_stat[0]), source_stat[1]
    if len(head) < 16 or head[:4] != magic:
        return PycVerdict(
            "stale", "header is not this interpreter's magic number", source, optimize
        )
    flags = int.from_bytes(head[4:8], "little")
    if flags == 0:
        mtime = int.from_bytes(head[8:12], "little")
        size = int.from_bytes(head[12:16], "little")
        if mtime == (src_mtime & 0xFFFFFFFF) and size == (src_size & 0xFFFFFFFF):
            return PycVerdict("live", "timestamp header matches the source", source, optimize)
        return PycVerdict("stale", "timestamp header does not match the source", source, optimize)
    if flags & ~0b11:
        return PycVerdict("stale", f"invalid flags {flags:#x}", source, optimize)
    if flags & 0b10:
        return PycVerdict("live", "hash-based, checked against the source", source, optimize)
    # Unchecked hash-based pyc: loaded without looking at the source at all.
    if not same_interpreter:
        return PycVerdict("unchecked", "unchecked hash-based pyc", source, optimize)
    try:
        with open(source, "rb") as fh:
            expected = importlib.util.source_hash(fh.read())
    except OSError as exc:
        return PycVerdict("unchecked", f"source unreadable: {exc}", source, optimize)
    if head[8:16] == expected:
        return PycVerdict("live", "unchecked hash-based pyc matching its source", source, optimize)
    return PycVerdict(
        "unchecked-mismatch",
        "unchecked hash-based pyc whose hash does not match its source: it is loaded anyway",
        source,
        optimize,
    )


def _compare_worker() -> None:  # pragma: no cover - runs in the target interpreter
    # Reads [[pyc, source, optimize], ...] as JSON on stdin, prints the pycs
    # whose code object differs from compiling the source. Runs isolated
    # (-I -S) so a crafted marshal stream can only crash this subprocess.
    import json
    import marshal
    import sys

    bad = []
    for pyc, source, optimize in json.load(sys.stdin):
        try:
            with open(source, "rb") as fh:
                fresh = compile(fh.read(), source, "exec", dont_inherit=True, optimize=optimize)
            with open(pyc, "rb") as fh:
                data = fh.read()
            if marshal.loads(data[16:]) != fresh:
                bad.append([pyc, "bytecode differs from compiling the source"])
        except Exception as exc:
            bad.append([pyc, f"could not compare: {type(exc).__name__}: {exc}"])
    json.dump(bad, sys.stdout)


def deep_compare(
    items: Sequence[tuple[str, str, int]], python: str, *, processes: int = 2
) -> list[tuple[str, str]]:
    """Recompile sources in ``python`` and compare with their live ``.pyc``.

    Returns ``(pyc, reason)`` for each mismatch or failure. A subprocess that
    dies reports every file it held as not compared (fail closed).
    """
    if not items:
        return []
    script = (
        "from __future__ import annotations\n"
        + inspect.getsource(_compare_worker)
        + "\n_compare_worker()\n"
    )
    chunks = [list(items[i::processes]) for i in range(processes)]

    def run(chunk: list[tuple[str, str, int]]) -> list[tuple[str, str]]:
        if not chunk:
            return []
        proc = subprocess.run(
            [python, "-I", "-S", "-c", script],
            input=json.dumps(chunk),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            reason = f"comparison process failed ({proc.returncode}): {proc.stderr.strip()[-200:]}"
            return [(pyc, reason) for pyc, _, _ in chunk]
        return [(str(p), str(r)) for p, r in json.loads(proc.stdout)]

    with ThreadPoolExecutor(processes) as pool:
        return [bad for part in pool.map(run, chunks) for bad in part]
