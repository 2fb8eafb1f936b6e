"""Judge every ``.pyc`` of an environment (see :mod:`trainguard.env._pyc` for the rules)."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import TYPE_CHECKING

from trainguard.env import _rules as R
from trainguard.env._hashing import HEAD, FileFacts, hash_files
from trainguard.env._pyc import PycVerdict, classify_pyc, deep_compare, mtime_seconds
from trainguard.env._target import running_interpreter_is

if TYPE_CHECKING:
    from trainguard.env._collect import Collector
    from trainguard.env._verify import EnvState

__all__ = ["judge_pycs"]

#: A .pyc written this long after its distribution's RECORD was rewritten later.
REWRITE_SLACK_NS = 10 * 1_000_000_000


def _group(path: str, sites: tuple[str, ...]) -> str:
    """The top-level folder a path belongs to, for aggregated findings."""
    for site in sites:
        if path.startswith(site + os.sep):
            return os.path.join(site, path[len(site) + 1 :].split(os.sep, 1)[0])
    return os.path.dirname(path)


def _fast_live(
    pyc: str, head: bytes, magic: bytes, tag: str, facts: dict[str, FileFacts]
) -> str | None:
    """The source path when ``pyc`` is an ordinary live timestamp pyc of this interpreter.

    Handles the common case with string slicing and one dict lookup; anything
    unusual returns None and goes through :func:`classify_pyc`.
    """
    slash = pyc.rfind("/__pycache__/")
    if slash < 0 or head[:4] != magic or head[4:8] != b"\0\0\0\0":
        return None
    name = pyc[slash + 13 :]
    dot = name.find(".")
    if name[dot + 1 :] != tag + ".pyc":
        return None
    source = pyc[:slash] + "/" + name[:dot] + ".py"
    src = facts.get(source)
    if src is None or src.error is not None:
        return None
    mtime = int.from_bytes(head[8:12], "little")
    size = int.from_bytes(head[12:16], "little")
    if mtime == (mtime_seconds(src.mtime_ns) & 0xFFFFFFFF) and size == (src.size & 0xFFFFFFFF):
        return source
    return None


def judge_pycs(state: EnvState, unowned: list[str], col: Collector, *, deep: bool) -> None:
    """Classify owned and unowned ``.pyc`` files; optionally compare live ones with their source."""
    interp = state.interp
    same = running_interpreter_is(interp)
    facts = state.facts
    magic, tag = interp.magic, interp.cache_tag
    record_ctime: dict[str, int] = {}
    for dist in state.dists:
        fact = facts.get(dist.record_path)
        if fact is not None and fact.error is None:
            record_ctime[dist.meta_dir] = fact.ctime_ns
    unverified: dict[str, list[str]] = defaultdict(list)
    stale: dict[str, list[str]] = defaultdict(list)
    live: list[tuple[str, str, int]] = []
    owned_pycs = [p for p in state.owners if p.endswith(".pyc")]
    unowned_pycs = [p for p in unowned if p.endswith(".pyc")]
    for owned, paths in ((True, owned_pycs), (False, unowned_pycs)):
        for pyc in paths:
            fact = facts.get(pyc)
            if fact is None or fact.error is not None:
                continue
            if owned and not fact.head:
                # Only stat-ed: an installer-written .pyc is left alone unless it was
                # written after its RECORD, or is importable bytecode outside __pycache__.
                limit = record_ctime.get(state.owners[pyc][0].meta_dir)
                rewritten = limit is not None and fact.ctime_ns > limit + REWRITE_SLACK_NS
                if not rewritten and "/__pycache__/" in pyc:
                    continue
                fact = hash_files([pyc], modes=[HEAD])[0]
                if fact.error is not None:
                    continue
            source = _fast_live(pyc, fact.head, magic, tag, facts)
            if source is not None:
                verdict = PycVerdict(
                    "live", "", source, 1 if ".opt-1." in pyc else 2 if ".opt-2." in pyc else 0
                )
            else:
                verdict = classify_pyc(
                    pyc, fact.head, magic=magic, cache_tag=tag, same_interpreter=same
                )
            if verdict.state == "live":
                assert verdict.source is not None
                if deep:
                    live.append((pyc, verdict.source, verdict.optimize))
                if not owned:
                    unverified[_group(pyc, interp.site_packages)].append(pyc)
                else:
                    limit = record_ctime.get(state.owners[pyc][0].meta_dir)
                    if limit is not None and fact.ctime_ns > limit + REWRITE_SLACK_NS:
                        unverified[_group(pyc, interp.site_packages)].append(pyc)
            elif verdict.state == "sourceless":
                col.add(
                    R.PYC_SOURCELESS.finding(
                        pyc,
                        "bytecode with no source is importable here"
                        + ("" if owned else " and no RECORD lists it"),
                        sha256=fact.sha256.hex() if fact.sha256 else None,
                    ),
                    R.PYC_SOURCELESS,
                )
            elif verdict.state == "unchecked-mismatch":
                col.add(
                    R.PYC_MISMATCH.finding(pyc, verdict.detail, source=verdict.source),
                    R.PYC_MISMATCH,
                )
            elif verdict.state == "unchecked":
                unverified[_group(pyc, interp.site_packages)].append(pyc)
            elif verdict.state in ("stale", "orphan") or (
                verdict.state == "shadowed" and not owned
            ):
                stale[_group(pyc, interp.site_packages)].append(pyc)
    for group, pycs in sorted(unverified.items()):
        col.add(
            R.PYC_UNVERIFIED.finding(
                group,
                f"{len(pycs)} live .pyc files were not written by the installer (or were rewritten "
                "after it); their code is not checked without --deep-pyc or a baseline",
                examples=sorted(pycs)[:10],
                count=len(pycs),
            ),
            R.PYC_UNVERIFIED,
        )
    for group, pycs in sorted(stale.items()):
        col.add(
            R.PYC_STALE.finding(
                group,
                f"{len(pycs)} .pyc files are stale or orphaned (ignored by the interpreter)",
                examples=sorted(pycs)[:10],
                count=len(pycs),
            ),
            R.PYC_STALE,
        )
    if deep:
        for pyc, reason in deep_compare(live, interp.executable):
            col.add(R.PYC_MISMATCH.finding(pyc, reason), R.PYC_MISMATCH)
