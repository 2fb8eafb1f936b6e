"""``trainguard code verify``: the training repository against its git commit.

What runs is the worktree, not the commit. This reports every difference that
matters for provenance: modified, deleted, untracked and ignored-but-importable
files, bytecode that does not match its source, and a digest of all of it, so
a run can be tied to exactly "commit X plus these changes".

Example:
    >>> from trainguard.env.code import CodeConfig, verify_code
    >>> report = verify_code(CodeConfig(repo="."))  # doctest: +SKIP
    >>> report.stats["commit"]  # doctest: +SKIP
    '3f1c...'
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trainguard.env._diff import DIFFABLE, Pristine, source_diff
from trainguard.env._gitrepo import Git, TreeEntry, blob_id
from trainguard.env._pyc import classify_pyc, deep_compare
from trainguard.errors import UsageError
from trainguard.findings import Checked, Report, Rule, Severity

__all__ = ["CodeConfig", "verify_code"]

MODIFIED = Rule(
    "code.modified",
    Severity.HIGH,
    "Tracked file differs from the commit",
    "The job runs this file's worktree content, which is not what the commit records. "
    "Commit the change (so it is reviewed and traceable) or restore the file.",
)
DELETED = Rule(
    "code.deleted",
    Severity.MEDIUM,
    "Tracked file is missing from the worktree",
    "A file the commit has is gone; imports may fall through to another copy.",
)
UNTRACKED = Rule(
    "code.untracked",
    Severity.MEDIUM,
    "Untracked file in the repository",
    "The file is in no commit, so nothing records what it contained when the job ran.",
)
IGNORED_IMPORTABLE = Rule(
    "code.ignored-importable",
    Severity.HIGH,
    "Ignored file that can be imported",
    "git ignores this file, so `git status` never shows it, yet it sits on the import path "
    "(or the process already imported it). A module dropped under an ignore rule runs "
    "unseen.",
)
BYTECODE = Rule(
    "code.bytecode-mismatch",
    Severity.CRITICAL,
    "Bytecode in the repository does not match its source",
    "Python imports this .pyc instead of the source, and its code is not the source's code.",
)
NO_REPOSITORY = Rule(
    "code.no-repository",
    Severity.HIGH,
    "Training code is not in a git repository (or has no commit)",
    "Without a commit nothing ties the job to reviewed code.",
)

_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth")


@dataclass(frozen=True)
class CodeConfig:
    """What ``code verify`` checks.

    Attributes:
        repo: a path inside the repository (default: the current folder).
        import_paths: extra folders Python imports from (``sys.path`` and
            ``PYTHONPATH`` entries inside the repository are always included).
        check_bytecode: compare live ``.pyc`` files under the repository with their source.
        max_diff_lines: diff lines kept per modified file.
    """

    repo: str = "."
    import_paths: tuple[str, ...] = ()
    check_bytecode: bool = True
    max_diff_lines: int = 200


def _read(path: str) -> bytes | None:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return os.fsencode(os.readlink(path))
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _lfs_matches(pointer: bytes, data: bytes) -> bool:
    """A Git LFS pointer blob stands for content with this sha256 and size."""
    if not pointer.startswith(b"version https://git-lfs.github.com/spec/"):
        return False
    fields = dict(line.split(b" ", 1) for line in pointer.splitlines() if b" " in line)
    oid = fields.get(b"oid", b"").removeprefix(b"sha256:").decode(errors="replace")
    return (
        oid == hashlib.sha256(data).hexdigest()
        and fields.get(b"size", b"") == str(len(data)).encode()
    )


def _import_roots(root: str, extra: Iterable[str]) -> list[str]:
    candidates = [root, os.path.join(root, "src"), *extra, *sys.path]
    candidates += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    out = []
    for c in candidates:
        real = os.path.realpath(c) if c else ""
        inside = real == root or real.startswith(root + os.sep)
        if real and inside and os.path.isdir(real) and real not in out:
            out.append(real)
    return out


def _imported_files(root: str) -> set[str]:
    out = set()
    for module in list(sys.modules.values()):
        origin = getattr(module, "__file__", None)
        if isinstance(origin, str):
            real = os.path.realpath(origin)
            if real.startswith(root + os.sep):
                out.add(real)
    return out


def _importable_under(path: str, roots: list[str]) -> list[str]:
    """Code files in ignored ``path`` (a file, or a collapsed folder) importable from ``roots``."""
    if os.path.isfile(os.path.join(path, "pyvenv.cfg")):
        return []  # a virtual environment: `env verify` covers it
    found: list[str] = []
    if os.path.isdir(path):
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            found += [os.path.join(folder, f) for f in files if f.endswith(_CODE_SUFFIXES)]
            if len(found) > 1000:
                break
    elif path.endswith(_CODE_SUFFIXES):
        found.append(path)
    return [f for f in found if any(f.startswith(r + os.sep) for r in roots)]


def verify_code(config: CodeConfig | None = None) -> Report:
    """Compare the repository's worktree with its HEAD commit; see the module docs."""
    config = config or CodeConfig()
    started = time.perf_counter()
    report = Report(
        engine="code",
        caveats=[
            "A clean result ties the worktree to its commit; it does not review the commit.",
            "Files outside the repository (site-packages, data) are not covered: use `env verify`.",
        ],
    )
    try:
        git = Git(os.path.abspath(config.repo))
        head = git.head()
    except UsageError as exc:
        report.add(
            NO_REPOSITORY.finding(os.path.abspath(config.repo), exc.message, detail=exc.found)
        )
        return report
    if head is None:
        report.add(NO_REPOSITORY.finding(git.root, "the repository has no commit yet"))
        return report
    digest = hashlib.sha256()
    tracked = _check_tracked(git, head, report, digest, config)
    untracked = git.others(ignored=False)
    for rel in sorted(untracked):
        full = os.path.join(git.root, rel)
        data = _read(full) or b""
        digest.update(f"U {rel} {hashlib.sha256(data).hexdigest()}\n".encode())
        severity = Severity.MEDIUM if rel.endswith(_CODE_SUFFIXES) else Severity.LOW
        report.add(
            UNTRACKED.finding(
                full,
                "not in the commit",
                severity=severity,
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    roots = _import_roots(git.root, config.import_paths)
    imported = _imported_files(git.root)
    flagged: set[str] = set()
    for rel in git.others(ignored=True):
        full = os.path.join(git.root, rel.rstrip("/"))
        for path in _importable_under(full, roots):
            flagged.add(path)
            report.add(
                IGNORED_IMPORTABLE.finding(
                    path, "ignored by git yet importable from the repository's import path"
                )
            )
    for path in sorted(imported - flagged - tracked):
        rel = os.path.relpath(path, git.root)
        if rel not in untracked:
            report.add(
                IGNORED_IMPORTABLE.finding(path, "imported by this process but in no commit")
            )
    if config.check_bytecode:
        _check_bytecode(git.root, tracked, report)
    diff_digest = digest.hexdigest()
    dirty = any(f.rule != NO_REPOSITORY.id for f in report.findings)
    report.checked.append(
        Checked(
            git.root, "git-repository", {"commit": head, "branch": git.branch(), "dirty": dirty}
        )
    )
    report.stats.update(
        repository=git.root,
        commit=head,
        branch=git.branch(),
        dirty=dirty,
        diff_sha256=diff_digest,
        tracked=len(tracked),
        seconds=round(time.perf_counter() - started, 6),
    )
    return report


def _check_tracked(
    git: Git, head: str, report: Report, digest: hashlib._Hash, config: CodeConfig
) -> set[str]:
    """Compare every tracked file with its blob; return the tracked absolute paths."""
    tracked: set[str] = set()
    for entry in git.tree(head):
        full = os.path.join(git.root, entry.path)
        tracked.add(full)
        if entry.mode == "160000":
            _check_submodule(git, entry, full, report, digest)
            continue
        data = _read(full)
        if data is None:
            digest.update(f"D {entry.path}\n".encode())
            report.add(DELETED.finding(full, f"tracked in {head[:12]} but missing"))
            continue
        if blob_id(data, git.algo) == entry.oid:
            _check_mode(entry, full, report)
            continue
        blob = git.blob(entry.oid)
        if _lfs_matches(blob, data) or blob.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n"):
            continue
        digest.update(f"M {entry.path} {hashlib.sha256(data).hexdigest()}\n".encode())
        evidence: dict[str, Any] = {"commit": head, "sha256": hashlib.sha256(data).hexdigest()}
        note = ""
        if entry.path.endswith(DIFFABLE) or entry.path.endswith((".sh", ".md")):
            diff, summary = source_diff(
                Pristine(blob, f"commit {head[:12]}"),
                data,
                entry.path,
                max_lines=config.max_diff_lines,
            )
            evidence["diff"] = diff
            note = f"; changed: {summary}" if summary else ""
        report.add(MODIFIED.finding(full, f"differs from {head[:12]}{note}", **evidence))
    return tracked


def _check_mode(entry: TreeEntry, full: str, report: Report) -> None:
    if entry.mode not in ("100644", "100755"):
        return
    executable = bool(os.stat(full).st_mode & stat.S_IXUSR)
    if executable != (entry.mode == "100755"):
        report.add(
            MODIFIED.finding(
                full,
                f"content matches but the executable bit differs from the commit ({entry.mode})",
                severity=Severity.LOW,
            )
        )


def _check_submodule(
    git: Git, entry: TreeEntry, full: str, report: Report, digest: hashlib._Hash
) -> None:
    try:
        sub = Git(full)
        head = sub.head() if sub.root == os.path.realpath(full) else None
    except UsageError:
        head = None
    if head != entry.oid:
        digest.update(f"S {entry.path} {head}\n".encode())
        report.add(
            MODIFIED.finding(
                full, f"submodule is at {head or 'nothing'}, the commit records {entry.oid[:12]}"
            )
        )


def _check_bytecode(root: str, tracked: set[str], report: Report) -> None:
    from trainguard.env._target import describe_interpreter

    interp = describe_interpreter()
    live: list[tuple[str, str, int]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [
            d
            for d in dirs
            if d != ".git" and not os.path.isfile(os.path.join(folder, d, "pyvenv.cfg"))
        ]
        if os.path.basename(folder) != "__pycache__":
            continue
        for name in files:
            pyc = os.path.join(folder, name)
            try:
                with open(pyc, "rb") as fh:
                    head = fh.read(16)
            except OSError:
                continue
            verdict = classify_pyc(
                pyc, head, magic=interp.magic, cache_tag=interp.cache_tag, same_interpreter=True
            )
            if verdict.state == "live" and verdict.source in tracked:
                live.append((pyc, verdict.source, verdict.optimize))
            elif verdict.state == "unchecked-mismatch":
                report.add(BYTECODE.finding(pyc, verdict.detail))
    for pyc, reason in deep_compare(live, sys.executable):
        report.add(BYTECODE.finding(pyc, reason))
