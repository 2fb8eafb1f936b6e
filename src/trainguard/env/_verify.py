"""Full verification of an environment against its RECORDs (and wheels, when found).

Order of work, chosen for speed: parse every RECORD, start hashing the files
they list (biggest first, in threads), walk the folders while that runs, then
read the few files nobody owns and judge everything at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainguard.env import _rules as R
from trainguard.env._anchor import Anchoring, anchor_distributions
from trainguard.env._collect import Collector
from trainguard.env._config import CAVEATS, EnvConfig
from trainguard.env._diff import DIFFABLE, Pristine, source_diff
from trainguard.env._hashing import HASH, HEAD, STAT, FileFacts, HashQueue, hash_files
from trainguard.env._hooks import hook_findings
from trainguard.env._pycheck import judge_pycs
from trainguard.env._record import STRONG, Distribution, RecordEntry, find_distributions, hash_with
from trainguard.env._target import Interpreter
from trainguard.env._walk import Tree, walk
from trainguard.findings import Checked, Report, Severity

__all__ = ["EnvState", "collect", "full_verify", "top_level_names"]

Progress = Callable[[int, int, str], None]


@dataclass
class EnvState:
    """Everything a full verification learned, reused by ``snapshot``."""

    interp: Interpreter
    dists: list[Distribution]
    #: absolute path -> (distribution, RECORD entry) of its first owner
    owners: dict[str, tuple[Distribution, RecordEntry]]
    facts: dict[str, FileFacts]
    trees: list[Tree]
    anchoring: Anchoring
    #: paths listed by more than one RECORD -> every owner (rare)
    shared: dict[str, list[tuple[Distribution, RecordEntry]]] = field(default_factory=dict)
    #: owned files whose content did not verify
    failed: set[str] = field(default_factory=set)
    _top: dict[str, str] | None = None

    def owners_of(self, path: str) -> list[tuple[Distribution, RecordEntry]]:
        shared = self.shared.get(path)
        if shared is not None:
            return shared
        return [self.owners[path]] if path in self.owners else []

    def verified(self, path: str) -> bool:
        """True when a RECORD lists ``path`` and its content matched (and the wheel's)."""
        return path in self.owners and path not in self.failed

    def top_names(self) -> dict[str, str]:
        """Top-level module names of the installed distributions (computed once, on demand)."""
        if self._top is None:
            self._top = top_level_names(self.dists, self.interp, include_stdlib=False)
        return self._top


def _is_code(path: str, interp: Interpreter) -> bool:
    return path.endswith((".py", ".pth", ".pyc", ".so", ".pyd", ".dll", ".dylib")) or path.endswith(
        interp.extension_suffixes
    )


def _module_stem(name: str, interp: Interpreter) -> tuple[str, int] | None:
    """``(module name, loader precedence)``: extension 0, source 1, bytecode 2."""
    for suffix in interp.extension_suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)], 0
    if name.endswith(".py"):
        return name[:-3], 1
    if name.endswith(".pyc"):
        return name[:-4], 2
    return None


def top_level_names(
    dists: list[Distribution], interp: Interpreter, *, include_stdlib: bool = True
) -> dict[str, str]:
    """Top-level module names -> whose they are (a distribution's, the standard library's)."""
    names: dict[str, str] = {}
    for dist in dists:
        for entry in dist.entries:
            first = entry.rel.split("/", 1)[0]
            if first.startswith("..") or first.endswith((".dist-info", ".data")):
                continue
            stem = _module_stem(first, interp) if "/" not in entry.rel else (first, 1)
            if stem and stem[0] and stem[0] not in names:
                names[stem[0]] = f"{dist.label}'s"
    if include_stdlib:
        for mod in interp.stdlib_module_names:
            names.setdefault(mod, "the standard library's")
    return names


def _field_ok(hash_field: str, path: str, fact: FileFacts) -> bool:
    """Does ``fact`` (a hashed file) match a RECORD hash field?"""
    if fact.sha256 is None or not hash_field:
        return False
    algo, _, value = hash_field.partition("=")
    algo = algo.lower()
    if algo == "sha256":
        return value.rstrip("=") == fact.b64
    if algo in STRONG:
        digest = RecordEntry("", "", hash_field, "").digest
        try:
            return digest is not None and hash_with(algo, path) == digest
        except (OSError, ValueError):
            return False
    return False


def _read_current(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _with_diff(
    path: str, evidence: dict[str, Any], pristine: Pristine | None, max_lines: int
) -> str:
    """Add a diff to ``evidence``; return a short summary for the message."""
    if pristine is None or not path.endswith(DIFFABLE):
        return ""
    diff, summary = source_diff(pristine, _read_current(path), path, max_lines=max_lines)
    evidence["diff"] = diff
    evidence["pristine"] = pristine.origin
    return f"; changed: {summary}" if summary else ""


def _judge_owned(state: EnvState, col: Collector, config: EnvConfig) -> None:
    by_dist = state.anchoring.by_dist
    facts = state.facts
    shared = state.shared
    last_dist: Distribution | None = None
    wheel_files: dict[str, str] | None = None
    for path, (dist, entry) in state.owners.items():
        hash_field = entry.hash
        if not hash_field and path.endswith(".pyc"):
            continue  # bytecode: judged by _pycheck
        b64 = facts[path].b64
        # Fast path (all but a handful of 40,000 files): one owner, a sha256 that
        # matches, and the wheel (when anchored) giving the same hash as RECORD.
        if (
            b64
            and hash_field[7:] == b64
            and path not in shared
            and hash_field.startswith("sha256=")
        ):
            if dist is not last_dist:
                last_dist = dist
                wheel = by_dist.get(dist.meta_dir)
                wheel_files = wheel.files if wheel is not None else None
            if wheel_files is None or wheel_files.get(entry.rel) == hash_field:
                continue
        _judge_one(state, path, col, config)


def _judge_one(state: EnvState, path: str, col: Collector, config: EnvConfig) -> None:
    """The slow path for one owned file: every way it can fail, with evidence."""
    owners = state.owners_of(path)
    dist = owners[0][0]
    fact = state.facts[path]
    anchoring = state.anchoring
    if fact.error is not None:
        state.failed.add(path)
        if fact.error.startswith("No such file"):
            col.add(
                R.FILE_MISSING.finding(path, f"listed in {dist.label}'s RECORD but missing"),
                R.FILE_MISSING,
            )
        else:
            col.add(R.UNREADABLE.finding(path, f"could not read: {fact.error}"), R.UNREADABLE)
        return
    hashed = [(d, e) for d, e in owners if e.hash]
    if not hashed:
        if not all(e.hash_optional for _, e in owners):
            state.failed.add(path)
            col.add(
                R.UNHASHED_ENTRY.finding(
                    path, f"{dist.label}'s RECORD lists this file without a hash"
                ),
                R.UNHASHED_ENTRY,
            )
        return
    for _, e in hashed:
        if e.algo not in STRONG:
            col.add(
                R.WEAK_HASH.finding(path, f"RECORD hash algorithm {e.algo!r} is not accepted"),
                R.WEAK_HASH,
            )
    record_ok = any(_field_ok(e.hash, path, fact) for _, e in hashed)
    wheel_entry = anchoring.wheel_entry(owners)
    evidence: dict[str, Any] = {
        "distribution": dist.label,
        "sha256": fact.sha256.hex() if fact.sha256 else None,
        "size": fact.size,
    }
    if wheel_entry is None:
        if record_ok:
            return
        state.failed.add(path)
        digest = hashed[0][1].digest
        evidence["expected_sha256"] = digest.hex() if digest else None
        note = _with_diff(path, evidence, anchoring.pristine(path, owners), config.max_diff_lines)
        msg = f"differs from its RECORD hash in {dist.label}{note}"
        col.add(R.RECORD_MISMATCH.finding(path, msg, **evidence), R.RECORD_MISMATCH)
        return
    wheel_path, wheel_field = wheel_entry
    wheel_name = os.path.basename(wheel_path)
    state.failed.add(path)
    if _field_ok(wheel_field, path, fact):
        if record_ok:
            state.failed.discard(path)
            return
        msg = f"the installed RECORD line was altered (the file matches {wheel_name})"
        col.add(R.RECORD_PROBLEM.finding(path, msg, **evidence), R.RECORD_PROBLEM)
        return
    evidence["wheel"] = wheel_path
    digest = RecordEntry("", "", wheel_field, "").digest
    evidence["expected_sha256"] = digest.hex() if digest else None
    note = _with_diff(path, evidence, anchoring.pristine(path, owners), config.max_diff_lines)
    if record_ok:
        msg = (
            f"differs from {wheel_name}'s RECORD and the installed RECORD was rewritten to "
            f"match{note}"
        )
        col.add(R.WHEEL_MISMATCH.finding(path, msg, **evidence), R.WHEEL_MISMATCH)
    else:
        msg = f"differs from its RECORD hash in {dist.label} (and from the wheel){note}"
        col.add(R.RECORD_MISMATCH.finding(path, msg, **evidence), R.RECORD_MISMATCH)


def _shadowed_sibling(path: str, state: EnvState) -> str | None:
    """What an unowned module file shadows, if anything."""
    interp = state.interp
    folder, name = os.path.split(path)
    stem = _module_stem(name, interp)
    if stem is None:
        return None
    module, precedence = stem
    # Loader precedence inside one folder: extension modules, then .py, then .pyc.
    later = [(1, ".py"), (2, ".pyc")] + [(0, s) for s in interp.extension_suffixes]
    for rank, suffix in later:
        if rank > precedence and os.path.join(folder, module + suffix) in state.owners:
            return f"the installed {module + suffix} in the same folder (this file is found first)"
    if precedence == 0 and os.path.join(folder, module, "__init__.py") in state.owners:
        return None  # a package directory wins over an extension module
    if folder in state.interp.site_packages:
        owner = state.top_names().get(module)
        if owner is not None and os.path.join(folder, module) not in state.owners:
            return f"{owner} module {module!r}"
    return None


def _judge_unowned(
    state: EnvState, unowned: list[str], col: Collector, allowed: frozenset[str]
) -> None:
    for path in unowned:
        if path.endswith(".pyc") or state.anchoring.owns(path):
            continue
        fact = state.facts.get(path)
        digest = fact.sha256.hex() if fact and fact.sha256 else None
        if digest in allowed:
            continue
        shadowed = _shadowed_sibling(path, state)
        if shadowed is not None:
            col.add(
                R.SHADOWING.finding(path, f"unowned module shadows {shadowed}", sha256=digest),
                R.SHADOWING,
            )
            continue
        severity = Severity.HIGH if _is_code(path, state.interp) else Severity.MEDIUM
        col.add(
            R.UNOWNED_FILE.finding(
                path,
                "no RECORD lists this file; nothing says what it should contain",
                severity=severity,
                sha256=digest,
                size=fact.size if fact else None,
            ),
            R.UNOWNED_FILE,
        )


def _judge_tree_facts(state: EnvState, col: Collector) -> None:
    # Group or world write bits (0o022): anyone in the group can edit what every job runs.
    writable = [d for t in state.trees for d, s in t.dirs.items() if s[3] & 0o022]
    writable += [p for p, f in state.facts.items() if f.mode & 0o022 and f.error is None]
    if writable:
        col.add(
            R.WRITABLE.finding(
                state.interp.prefix,
                f"{len(writable)} files or folders are writable by group or others",
                examples=sorted(writable)[:20],
                count=len(writable),
            ),
            R.WRITABLE,
        )
    for tree in state.trees:
        root_real = os.path.realpath(tree.root)
        for link in tree.symlinks:
            target = os.path.realpath(link)
            if not target.startswith(root_real + os.sep):
                col.add(
                    R.SYMLINK_OUT.finding(link, f"points outside site-packages, to {target}"),
                    R.SYMLINK_OUT,
                )
        for path, why in tree.errors:
            col.add(R.UNREADABLE.finding(path, f"could not walk: {why}"), R.UNREADABLE)


def collect(
    interp: Interpreter,
    config: EnvConfig,
    *,
    hash_everything: bool = False,
    progress: Progress | None = None,
) -> tuple[EnvState, list[str]]:
    """Read the environment: RECORDs, every listed file, the folder walk, unowned files.

    Returns the state and the unowned files. With ``hash_everything`` (snapshot)
    ``.pyc`` files are hashed too, not just their headers read.
    """
    # Bytecode: hashed for a snapshot, header-read for --deep-pyc, else only
    # stat-ed (a rewritten .pyc shows in its ctime; its header is read then).
    pyc_mode = HASH if hash_everything else (HEAD if config.deep_pyc else STAT)
    queue = HashQueue(workers=config.workers, progress=progress)
    dists: list[Distribution] = []
    owners: dict[str, tuple[Distribution, RecordEntry]] = {}
    shared: dict[str, list[tuple[Distribution, RecordEntry]]] = {}
    for site in interp.site_packages:
        # Each distribution's files go to the threads as soon as its RECORD is
        # parsed, torch's first: hashing starts before the other RECORDs are read.
        for dist in find_distributions(site, biggest_first=True):
            dists.append(dist)
            big: list[tuple[int, str]] = []
            small: list[str] = []
            for entry in dist.entries:
                path = entry.path
                if path in owners:
                    shared.setdefault(path, [owners[path]]).append((dist, entry))
                    continue
                owners[path] = (dist, entry)
                if len(entry.size) >= 7:  # >= 1 MB by RECORD: biggest first
                    big.append((int(entry.size), path))
                else:
                    small.append(path)
            big.sort(reverse=True)
            batch = [p for _, p in big] + small
            modes = [pyc_mode if p.endswith(".pyc") else HASH for p in batch]
            queue.add(batch, modes, big_first=len(big))
    dists.sort(key=lambda d: (d.site, d.name.lower(), d.version))  # stable report order
    # While the threads hash: walk the folders and read the wheels' RECORDs.
    sites = [os.path.normpath(s) for s in interp.site_packages]
    trees = [walk(s, skip=frozenset(x for x in sites if x != s)) for s in sites]
    anchoring = anchor_distributions(dists, config)
    facts = dict(zip(queue.paths, queue.join(), strict=True))
    unowned = [p for t in trees for p in t.files if p not in owners]
    extra_modes = [HEAD if p.endswith(".pyc") and not hash_everything else HASH for p in unowned]
    facts.update(
        zip(
            unowned,
            hash_files(unowned, modes=extra_modes, workers=config.workers),
            strict=True,
        )
    )
    state = EnvState(interp, dists, owners, facts, trees, anchoring, shared)
    return state, unowned


def full_verify(
    interp: Interpreter,
    config: EnvConfig,
    *,
    progress: Progress | None = None,
    state: tuple[EnvState, list[str]] | None = None,
) -> tuple[Report, EnvState]:
    """Verify ``interp``'s environment against its RECORDs; return the report and state."""
    started = time.perf_counter()
    report = Report(engine="env", caveats=list(CAVEATS))
    col = Collector(report, config.max_per_rule)
    env_state, unowned = state if state is not None else collect(interp, config, progress=progress)
    for dist in env_state.dists:
        for problem in dist.record_problems[:5]:
            col.add(
                R.RECORD_PROBLEM.finding(dist.record_path, f"{dist.label}: {problem}"),
                R.RECORD_PROBLEM,
            )
    _judge_owned(env_state, col, config)
    _judge_unowned(env_state, unowned, col, config.allowed_sha256)
    _judge_tree_facts(env_state, col)
    env_state.anchoring.report(env_state, col)
    judge_pycs(env_state, unowned, col, deep=config.deep_pyc)
    # Only the .pth files at a site root are ever processed by site.
    pth = {
        p
        for t in env_state.trees
        for p in t.files
        if p.endswith(".pth") and p.rpartition("/")[0] == t.root
    }
    hooks = hook_findings(
        interp,
        {p for p in pth if env_state.verified(p)},
        {p for p in pth if p in env_state.owners},
        config,
        lambda: top_level_names(env_state.dists, interp),
    )
    for finding, rule in hooks:
        col.add(finding, rule)
    col.close()
    for dist in env_state.dists:
        report.checked.append(
            Checked(
                dist.meta_dir,
                "distribution",
                {
                    "name": dist.name,
                    "version": dist.version,
                    "files": len(dist.entries),
                    "anchor": env_state.anchoring.anchor_of(dist),
                },
            )
        )
    hashed = [f for f in env_state.facts.values() if f.sha256 is not None]
    report.stats.update(
        interpreter=interp.executable,
        site_packages=list(interp.site_packages),
        distributions=len(env_state.dists),
        files=len(env_state.facts),
        hashed=len(hashed),
        bytes=sum(f.size for f in hashed),
        anchored=env_state.anchoring.count,
        seconds=round(time.perf_counter() - started, 6),
    )
    return report, env_state
