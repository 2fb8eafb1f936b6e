"""Files the running process has loaded from site-packages: do they still match?

Two sources of "loaded": the ``__file__`` of every imported module, and the
shared libraries mapped into the process (``/proc/self/maps``: libtorch is
loaded by the dynamic linker, not as a module). Each is hashed and compared
with the baseline when one is given, else with its distribution's RECORD.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from trainguard.env._hashing import hash_files
from trainguard.env._record import find_distributions
from trainguard.env.baseline import Baseline, record_value

__all__ = ["LoadedProblem", "check_loaded", "loaded_files"]

#: (path, how it was loaded, problem: "modified" | "unowned", detail)
LoadedProblem = tuple[str, str, str, str]


def _mapped_libraries() -> set[str]:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return set()
    out = set()
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/") and ".so" in parts[5]:
            out.add(parts[5].removesuffix(" (deleted)"))
    return out


def loaded_files(site_packages: Iterable[str], *, bytecode: bool = False) -> dict[str, str]:
    """Loaded files under ``site_packages``: path -> "module NAME" or "mapped library".

    With ``bytecode``, the ``.pyc`` each module was (or would be) loaded from
    is included too (only a baseline has hashes for those).
    """
    sites = tuple(os.path.realpath(s) + os.sep for s in site_packages)
    out: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        for attr in ("__file__", "__cached__") if bytecode else ("__file__",):
            origin = getattr(module, attr, None)
            if isinstance(origin, str) and os.path.exists(origin):
                real = os.path.realpath(origin)
                if real.startswith(sites):
                    out.setdefault(real, f"module {name}")
    for lib in _mapped_libraries():
        real = os.path.realpath(lib)
        if real.startswith(sites):
            out.setdefault(real, "mapped library")
    return out


def _expected_from_baseline(baseline: Baseline, paths: Iterable[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for path in paths:
        out[path] = None
        for root, dirs in baseline.roots.items():
            if path.startswith(root + "/"):
                rel_dir, _, name = path[len(root) + 1 :].rpartition("/")
                rec = dirs.get(rel_dir)
                if rec is not None and name in rec.files:
                    out[path] = "hex:" + record_value(rec.files[name])
                break
    return out


def _expected_from_records(site_packages: Iterable[str], paths: set[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = dict.fromkeys(paths)
    for site in site_packages:
        real_site = os.path.realpath(site)
        for dist in find_distributions(site):
            for entry in dist.entries:
                real = entry.path if site == real_site else os.path.realpath(entry.path)
                if real in out and entry.hash.startswith("sha256="):
                    out[real] = "b64:" + entry.b64
    return out


def check_loaded(
    site_packages: tuple[str, ...], *, baseline: Baseline | None = None, workers: int | None = None
) -> tuple[list[LoadedProblem], int]:
    """Hash every loaded file under ``site_packages``; return problems and how many were checked."""
    loaded = loaded_files(site_packages, bytecode=baseline is not None)
    paths = sorted(loaded)
    if baseline is not None:
        expected = _expected_from_baseline(baseline, paths)
    else:
        expected = _expected_from_records(site_packages, set(paths))
    facts = hash_files(paths, workers=workers)
    problems: list[LoadedProblem] = []
    for path, fact in zip(paths, facts, strict=True):
        want = expected.get(path)
        how = loaded[path]
        if want is None:
            problems.append((path, how, "unowned", "no RECORD (or baseline) lists it"))
            continue
        if fact.sha256 is None:
            problems.append((path, how, "modified", f"unreadable now: {fact.error}"))
            continue
        kind, _, value = want.partition(":")
        actual = fact.sha256.hex() if kind == "hex" else fact.b64
        if actual != value:
            problems.append((path, how, "modified", "content no longer matches"))
    return problems, len(paths)
