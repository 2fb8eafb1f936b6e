"""Read-only access to a git repository, without letting the repository run anything.

A repository's own configuration can name programs that git runs on ordinary
commands: ``core.fsmonitor`` on ``status``, clean/smudge filters and textconv
drivers when worktree files are hashed or diffed, hooks. An insider controls
``.git/config``, so trainguard never asks git to look at the worktree: it
reads the commit's tree (``ls-tree``), the ignore rules (``ls-files
--others``) and blobs (``cat-file``) with plumbing commands, and hashes the
worktree files itself the way git would (``blob <size>\\0<content>``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass

from trainguard.errors import UsageError

__all__ = ["Git", "TreeEntry", "blob_id"]

#: Options that switch off every repository-configured program git could start.
_SAFE = [
    "--no-optional-locks",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "safe.directory=*",
]


@dataclass(frozen=True)
class TreeEntry:
    """One entry of the commit's tree: mode (100644, 100755, 120000, 160000), object id, path."""

    mode: str
    oid: str
    path: str


def blob_id(data: bytes, algo: str = "sha1") -> str:
    """The object id git gives a blob with this content."""
    h = hashlib.new(algo)
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


class Git:
    """Plumbing commands in one repository; raises UsageError when git itself fails."""

    def __init__(self, path: str) -> None:
        self.path = path
        top = self.run("rev-parse", "--show-toplevel", cwd=path).decode().strip()
        self.root = os.path.realpath(top)
        self.algo = self.run("rev-parse", "--show-object-format").decode().strip() or "sha1"

    def run(self, *args: str, cwd: str | None = None, check: bool = True) -> bytes:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
        try:
            proc = subprocess.run(
                ["git", *_SAFE, *args],
                cwd=cwd or getattr(self, "root", None) or self.path,
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UsageError(
                "could not run git", subject=self.path, found=repr(exc), hint="is git installed?"
            ) from exc
        if check and proc.returncode != 0:
            raise UsageError(
                f"git {args[0]} failed in {self.path}",
                subject=self.path,
                found=proc.stderr.decode(errors="replace").strip()[-400:],
                hint="is this a git repository with at least one commit?",
            )
        return proc.stdout

    def head(self) -> str | None:
        out = self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).strip()
        return out.decode() or None

    def branch(self) -> str | None:
        out = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False).strip()
        return out.decode() or None

    def tree(self, commit: str) -> list[TreeEntry]:
        out = self.run("ls-tree", "-r", "-z", "--full-tree", commit)
        entries = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, path = record.partition(b"\t")
            mode, _kind, oid = meta.decode().split(" ")
            entries.append(TreeEntry(mode, oid, os.fsdecode(path)))
        return entries

    def others(self, *, ignored: bool) -> list[str]:
        """Untracked files (``ignored=False``) or ignored ones, folders collapsed (``True``)."""
        args = ["ls-files", "-z", "--others", "--exclude-standard"]
        if ignored:
            args += ["--ignored", "--directory"]
        out = self.run(*args)
        return [os.fsdecode(p) for p in out.split(b"\0") if p]

    def blob(self, oid: str) -> bytes:
        """Raw blob content: ``cat-file blob`` applies no filters."""
        return self.run("cat-file", "blob", oid)
