"""``env snapshot``: verify the environment, then record every file of it in a baseline."""

from __future__ import annotations

import os
from collections import defaultdict

from trainguard.env._config import EnvConfig
from trainguard.env._hashing import FileFacts, hash_files
from trainguard.env._target import Interpreter, describe_interpreter
from trainguard.env._verify import Progress, collect, full_verify
from trainguard.env._walk import Tree, walk
from trainguard.env.baseline import (
    Baseline,
    DirRecord,
    FileRecord,
    now,
    record_for,
    stat_prefix,
    write_sources,
)
from trainguard.findings import Report

__all__ = ["snapshot_environment"]


def _extra_roots(interp: Interpreter, include_stdlib: bool) -> list[str]:
    roots: list[str] = []
    # The scripts folder of a venv or conda env (bin/python, console scripts,
    # activate); a system interpreter's /usr/bin is not the environment's.
    own_prefix = interp.venv or os.path.isdir(os.path.join(interp.prefix, "conda-meta"))
    if own_prefix and os.path.isdir(interp.scripts):
        roots.append(os.path.normpath(interp.scripts))
    if include_stdlib and os.path.isdir(interp.stdlib):
        roots.append(os.path.normpath(interp.stdlib))
    return roots


def _dir_records(tree: Tree, facts: dict[str, FileFacts]) -> dict[str, DirRecord]:
    by_dir: dict[str, dict[str, FileRecord]] = defaultdict(dict)
    for path in tree.files:
        folder, name = os.path.split(path)
        fact = facts.get(path)
        try:
            if path in tree.symlinks or fact is None or fact.error is not None:
                by_dir[folder][name] = record_for(path, None, os.lstat(path))
            else:
                digest = fact.sha256.hex() if fact.sha256 else ""
                by_dir[folder][name] = (
                    stat_prefix(fact.size, fact.mtime_ns, fact.ctime_ns, fact.ino, fact.mode)
                    + digest
                )
        except OSError:
            continue  # vanished during the snapshot
    root = tree.root
    out: dict[str, DirRecord] = {}
    for folder, st in tree.dirs.items():
        rel = "" if folder == root else folder[len(root) + 1 :]
        out[rel] = DirRecord(st, by_dir.get(folder, {}))
    return out


def snapshot_environment(
    config: EnvConfig | None = None,
    *,
    include_stdlib: bool = False,
    sources_archive: str | None = None,
    progress: Progress | None = None,
) -> tuple[Baseline, Report]:
    """Verify the environment and build a baseline of it.

    Every file under the site-packages folders (``.pyc`` included), the venv's
    scripts folder and, with ``include_stdlib``, the standard library is
    hashed. The returned report is the verification of the same state; a
    caller should refuse to keep a baseline of an environment with findings.
    With ``sources_archive``, the ``.py`` files are also stored (deflated) so
    that later diffs can show what changed.
    """
    config = config or EnvConfig()
    interp = describe_interpreter(config.python)
    state, unowned = collect(interp, config, hash_everything=True, progress=progress)
    report, state = full_verify(interp, config, state=(state, unowned))
    trees = list(state.trees)
    taken = {t.root for t in trees}
    for root in _extra_roots(interp, include_stdlib):
        if root in taken:
            continue
        # The base interpreter's own site-packages is not this environment's.
        base_sites = {os.path.join(root, "site-packages"), os.path.join(root, "dist-packages")}
        tree = walk(root, skip=frozenset((taken - {root}) | base_sites))
        taken.add(root)
        new = [p for p in tree.files if p not in state.facts and p not in tree.symlinks]
        state.facts.update(zip(new, hash_files(new, workers=config.workers), strict=True))
        trees.append(tree)
    roots = {tree.root: _dir_records(tree, state.facts) for tree in trees}
    sources = None
    if sources_archive is not None:
        py_files = sorted(
            p
            for t in trees
            for p in t.files
            if p.endswith(".py") and p not in t.symlinks and state.facts.get(p) is not None
        )
        digest = write_sources(sources_archive, py_files)
        sources = {"archive": os.path.basename(sources_archive), "sha256": digest}
    baseline = Baseline(
        created=now(),
        interpreter={
            "executable": interp.executable,
            "prefix": interp.prefix,
            "version": ".".join(map(str, interp.version)),
            "cache_tag": interp.cache_tag,
            "magic": interp.magic.hex(),
            "site_packages": list(interp.site_packages),
        },
        roots=roots,
        anchors={d.label: state.anchoring.anchor_of(d) for d in state.dists},
        sources=sources,
    )
    report.stats["baseline_files"] = baseline.file_count
    return baseline, report
