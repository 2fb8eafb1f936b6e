"""``env verify --baseline``: a stat-only re-check, hashing only what changed.

Per folder one ``lstat``: an unchanged folder (mtime, ctime, inode) has the
same entries as in the baseline, so it is not listed again. Per file one
``lstat`` relative to an open folder descriptor (no path walk in the kernel):
unchanged facts mean unchanged content (see :mod:`trainguard.env.baseline`).
Changed and new files are hashed in parallel and judged; a changed ``.pyc``
whose source did not change is recompiled in the target interpreter and
compared, so a recompilation is told apart from tampered bytecode.
"""

from __future__ import annotations

import os
import stat
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainguard.env import _rules as R
from trainguard.env._collect import Collector
from trainguard.env._config import CAVEATS, EnvConfig
from trainguard.env._hooks import hook_findings
from trainguard.env._target import Interpreter, running_interpreter_is
from trainguard.env.baseline import Baseline, DirRecord, FileRecord, record_value
from trainguard.findings import Checked, Report, Severity

if TYPE_CHECKING:
    from trainguard.env._diff import Pristine
    from trainguard.env._hashing import FileFacts
    from trainguard.env._verify import Progress

# Hashing, walking, diffs, bytecode, RECORDs and the full verification are imported
# where they are needed: a clean re-check (the common case, at every job start)
# needs none of them.

__all__ = ["recheck"]

RECHECK_CAVEAT = (
    "A baseline re-check trusts stat facts: a file whose size, mtime, ctime, inode and mode "
    "equal the baseline's is not hashed again (only the kernel sets ctime)."
)

_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


class _Changes:
    def __init__(self) -> None:
        self.suspects: list[tuple[str, FileRecord]] = []
        self.new: list[str] = []
        self.missing: list[str] = []
        self.errors: list[tuple[str, str]] = []


def _subfolders(records: Mapping[str, DirRecord]) -> dict[str, set[str]]:
    """Folder -> the names of its sub-folders in the baseline."""
    children: dict[str, set[str]] = defaultdict(set)
    for rel in records:
        if rel:
            parent, _, name = rel.rpartition("/")
            children[parent].add(name)
    return children


def _scan_root(root: str, baseline: Baseline, out: _Changes) -> None:
    records = baseline.roots[root]
    children: dict[str, set[str]] | None = None  # only a changed folder needs them
    lstat = os.lstat
    for rel, rec in records.items():
        full = f"{root}/{rel}" if rel else root
        try:
            fd = os.open(full, _O_DIR)
        except OSError:
            out.missing += [f"{full}/{n}" for n in rec.files]
            continue
        try:
            st = os.fstat(fd)
            if (st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != rec.stat[:3]:
                if children is None:
                    children = _subfolders(records)
                known = rec.files.keys() | children.get(rel, set())
                for name in os.listdir(fd):
                    if name in known:
                        continue
                    path = f"{full}/{name}"
                    if stat.S_ISDIR(lstat(path).st_mode):
                        from trainguard.env._walk import walk

                        out.new += walk(path).files
                    else:
                        out.new.append(path)
            for name, frec in rec.files.items():
                try:
                    s = lstat(name, dir_fd=fd)
                except FileNotFoundError:
                    out.missing.append(f"{full}/{name}")
                    continue
                # stat_prefix() spelled inline: this line runs once per file.
                if not frec.startswith(
                    f"{s.st_size} {s.st_mtime_ns} {s.st_ctime_ns} {s.st_ino} {s.st_mode} "
                ):
                    out.suspects.append((f"{full}/{name}", frec))
        except OSError as exc:
            out.errors.append((full, exc.strerror or repr(exc)))
        finally:
            os.close(fd)


def _identity_problems(baseline: Baseline, interp: Interpreter) -> list[str]:
    facts = baseline.interpreter
    problems = []
    if facts.get("prefix") != interp.prefix:
        problems.append(f"prefix {facts.get('prefix')!r} != {interp.prefix!r}")
    if sorted(facts.get("site_packages") or []) != sorted(interp.site_packages):
        problems.append("site-packages folders differ")
    if facts.get("magic") not in (None, interp.magic.hex()):
        problems.append("bytecode magic differs (another Python version)")
    return problems


class _Pristine:
    """Finds original bytes for diffs: the baseline's source archive, then wheels.

    Built lazily: a re-check without modified sources never opens either.
    """

    def __init__(
        self, baseline: Baseline, baseline_path: str | None, interp: Interpreter, config: EnvConfig
    ) -> None:
        self.baseline = baseline
        self.baseline_path = baseline_path
        self.interp = interp
        self.config = config
        self._archive: str | bool | None = False  # False: not looked for yet

    def _verified_archive(self) -> str | None:
        if self._archive is False:
            self._archive = None
            src = self.baseline.sources
            if src and self.baseline_path:
                folder = os.path.dirname(os.path.abspath(self.baseline_path))
                candidate = os.path.join(folder, src.get("archive", ""))
                from trainguard.env._hashing import hash_files

                digest = hash_files([candidate])[0].sha256
                # The archive is trusted only if it is the one the baseline names.
                if digest is not None and digest.hex() == src.get("sha256"):
                    self._archive = candidate
        return self._archive if isinstance(self._archive, str) else None

    def get(self, path: str, expected_hex: str) -> Pristine | None:
        archive = self._verified_archive()
        if archive is not None:
            from trainguard.env._diff import pristine_from_sources

            found = pristine_from_sources(archive, path.lstrip("/"), expected_hex)
            if found is not None:
                return found
        from trainguard.env._anchor import anchor_distributions
        from trainguard.env._record import find_distributions

        dists = [d for s in self.interp.site_packages for d in find_distributions(s)]
        anchoring = anchor_distributions(dists, self.config)
        owners = [(d, e) for d in dists for e in d.entries if e.path == path]
        return anchoring.pristine(path, owners) if owners else None


def recheck(
    baseline: Baseline,
    interp: Interpreter,
    config: EnvConfig,
    *,
    baseline_path: str | None = None,
    progress: Progress | None = None,
) -> Report:
    """Re-check ``interp``'s environment against ``baseline``."""
    started = time.perf_counter()
    report = Report(engine="env", caveats=[RECHECK_CAVEAT, *CAVEATS[3:]])
    col = Collector(report, config.max_per_rule)
    problems = _identity_problems(baseline, interp)
    if problems:
        col.add(
            R.BASELINE_MISMATCH.finding(
                baseline_path or "baseline",
                "the baseline was taken for another environment: "
                + "; ".join(problems)
                + "; falling back to a full RECORD verification",
            ),
            R.BASELINE_MISMATCH,
        )
        col.close()
        from trainguard.env._verify import full_verify

        full, _ = full_verify(interp, config, progress=progress)
        report.merge(full)
        return report
    changes = _Changes()
    for root in baseline.roots:
        _scan_root(root, baseline, changes)
    to_hash = [p for p, _ in changes.suspects] + changes.new
    facts: dict[str, FileFacts] = {}
    if to_hash:
        from trainguard.env._hashing import hash_files

        facts.update(zip(to_hash, hash_files(to_hash, workers=config.workers), strict=True))
    changed: set[str] = set(changes.new)
    pristine = _Pristine(baseline, baseline_path, interp, config)
    touched: list[str] = []
    pyc_changed: list[str] = []
    for path, frec in changes.suspects:
        fact = facts[path]
        expected = record_value(frec)
        if expected.startswith("link:"):
            try:
                same = "link:" + os.readlink(path) == expected
            except OSError:
                same = False
        else:
            same = fact.sha256 is not None and fact.sha256.hex() == expected
        if same:
            touched.append(path)
            continue
        changed.add(path)
        if path.endswith(".pyc"):
            pyc_changed.append(path)
            continue
        evidence: dict[str, Any] = {
            "expected_sha256": expected,
            "sha256": fact.sha256.hex() if fact.sha256 else None,
            "size": fact.size,
        }
        note = ""
        from trainguard.env._diff import DIFFABLE, source_diff

        if path.endswith(DIFFABLE) and not expected.startswith("link:"):
            original = pristine.get(path, expected)
            if original is not None:
                with open(path, "rb") as fh:
                    diff, summary = source_diff(
                        original, fh.read(), path, max_lines=config.max_diff_lines
                    )
                evidence.update(diff=diff, pristine=original.origin)
                note = f"; changed: {summary}" if summary else ""
        col.add(
            R.BASELINE_MODIFIED.finding(
                path, f"content changed since the baseline{note}", **evidence
            ),
            R.BASELINE_MODIFIED,
        )
    _judge_bytecode(
        interp, pyc_changed, [p for p in changes.new if p.endswith(".pyc")], changed, facts, col
    )
    for path in changes.new:
        if path.endswith(".pyc"):
            continue
        fact = facts[path]
        code = path.endswith((".py", ".pth", ".so", ".pyd")) or path.endswith(
            interp.extension_suffixes
        )
        col.add(
            R.BASELINE_NEW.finding(
                path,
                "appeared after the baseline was taken",
                severity=Severity.HIGH if code else Severity.MEDIUM,
                sha256=fact.sha256.hex() if fact.sha256 else None,
                size=fact.size,
            ),
            R.BASELINE_NEW,
        )
    for path in changes.missing:
        col.add(R.BASELINE_MISSING.finding(path, "in the baseline but gone"), R.BASELINE_MISSING)
    for path, why in changes.errors:
        col.add(R.UNREADABLE.finding(path, f"could not re-check: {why}"), R.UNREADABLE)
    if touched:
        col.add(
            R.BASELINE_TOUCHED.finding(
                interp.prefix,
                f"{len(touched)} files were touched but their content is unchanged",
                examples=sorted(touched)[:10],
                count=len(touched),
            ),
            R.BASELINE_TOUCHED,
        )
    pth_in_baseline = set()
    for site in interp.site_packages:
        top = baseline.roots.get(site, {}).get("")
        if top is not None:
            pth_in_baseline |= {f"{site}/{n}" for n in top.files if n.endswith(".pth")}
    hooks = hook_findings(
        interp, pth_in_baseline - changed, pth_in_baseline, config, lambda: _top_names(interp)
    )
    for finding, rule in hooks:
        col.add(finding, rule)
    col.close()
    for root, dirs in baseline.roots.items():
        count = sum(len(d.files) for d in dirs.values())
        report.checked.append(Checked(root, "baseline-root", {"files": count}))
    report.stats.update(
        interpreter=interp.executable,
        baseline=baseline_path,
        baseline_created=baseline.created,
        files=baseline.file_count,
        rehashed=len(to_hash),
        bytes=sum(f.size for f in facts.values()),
        seconds=round(time.perf_counter() - started, 6),
    )
    return report


def _top_names(interp: Interpreter) -> dict[str, str]:
    """Top-level module names worth protecting (needed only when PYTHONPATH is set)."""
    from trainguard.env._record import find_distributions
    from trainguard.env._verify import top_level_names

    return top_level_names([d for s in interp.site_packages for d in find_distributions(s)], interp)


def _judge_bytecode(
    interp: Interpreter,
    changed_pycs: list[str],
    new_pycs: list[str],
    changed: set[str],
    facts: dict[str, FileFacts],
    col: Collector,
) -> None:
    """Changed or new ``.pyc`` files: recompile their (unchanged) sources and compare."""
    if not changed_pycs and not new_pycs:
        return
    from trainguard.env._pyc import classify_pyc, deep_compare

    same = running_interpreter_is(interp)
    compare: list[tuple[str, str, int]] = []
    stale: list[str] = []
    for pyc in changed_pycs + new_pycs:
        verdict = classify_pyc(
            pyc,
            facts[pyc].head,
            magic=interp.magic,
            cache_tag=interp.cache_tag,
            same_interpreter=same,
        )
        if verdict.state == "live" and verdict.source is not None:
            if verdict.source in changed:
                continue  # the source change is the finding
            compare.append((pyc, verdict.source, verdict.optimize))
        elif verdict.state == "sourceless":
            col.add(
                R.PYC_SOURCELESS.finding(pyc, "bytecode with no source appeared or changed"),
                R.PYC_SOURCELESS,
            )
        elif verdict.state == "unchecked-mismatch":
            col.add(R.PYC_MISMATCH.finding(pyc, verdict.detail), R.PYC_MISMATCH)
        elif verdict.state in ("stale", "orphan", "unchecked"):
            stale.append(pyc)
    for pyc, reason in deep_compare(compare, interp.executable):
        col.add(
            R.PYC_MISMATCH.finding(pyc, f"changed since the baseline: {reason}"), R.PYC_MISMATCH
        )
    if stale:
        col.add(
            R.PYC_STALE.finding(
                interp.prefix,
                f"{len(stale)} .pyc files changed or appeared but are ignored by the interpreter",
                examples=sorted(stale)[:10],
            ),
            R.PYC_STALE,
        )
