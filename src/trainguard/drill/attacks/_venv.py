"""Throwaway copies of the running virtual environment, for the drills that tamper with one.

Installing torch into a fresh venv takes minutes; a drill needs seconds. The
copy is made of hard links (a few hundred milliseconds for a venv with torch):
every file of the copy *is* the installed file, until the drill edits one, and
edits always write a new file (:func:`replace_file`), so the original
environment is never touched. Where hard links are impossible (another file
system), files are symbolic links instead. The copy is a real venv: its
``bin/python`` finds the copy's ``pyvenv.cfg`` and site-packages, imports torch
from them, and ``trainguard env verify --python`` checks it like any other.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import threading
import uuid
from pathlib import Path

from trainguard.errors import UsageError

__all__ = ["copy_venv", "discard", "replace_file", "site_packages", "wait_discarded"]

#: Deletions still running (see :func:`discard`).
_PENDING: list[threading.Thread] = []


def _source_venv() -> Path:
    if sys.prefix == sys.base_prefix:
        raise UsageError(
            "this drill copies the running virtual environment, and Python is not running in one",
            hint="run the drills from the project's venv (`.venv/bin/trainguard drill`)",
        )
    return Path(sys.prefix)


def copy_venv(dst: Path, src: Path | None = None) -> Path:
    """Copy the venv ``src`` (default: the running one) to ``dst`` with links; returns its python."""
    src = src or _source_venv()
    use_links = True
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        target = dst / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in [*files, *[d for d in dirs if os.path.islink(os.path.join(root, d))]]:
            s, d = os.path.join(root, name), target / name
            if os.path.islink(s):
                os.symlink(os.readlink(s), d)
                continue
            if use_links:
                try:
                    os.link(s, d)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    use_links = False
            os.symlink(s, d)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    python = dst / "bin" / "python"
    if not python.exists():
        raise UsageError(f"the copied environment has no bin/python: {dst}")
    return python


def site_packages(venv: Path) -> Path:
    """The venv's site-packages folder."""
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise UsageError(f"expected one site-packages folder in {venv}", found=str(found))
    return found[0]


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a *new* file at ``path`` (never through a shared hard link)."""
    tmp = path.with_name(path.name + ".drill-tmp")
    tmp.write_bytes(data)
    shutil.copymode(path, tmp)
    os.replace(tmp, path)


def discard(path: Path) -> None:
    """Remove a copied venv in the background.

    Removing tens of thousands of links is pure file-system metadata work, which
    can take seconds on a busy disk: the folder is renamed away at once and
    deleted by a thread while the next drill runs (:func:`wait_discarded`).
    """
    if not path.exists():
        return
    doomed = path.with_name(f".{path.name}.deleting-{uuid.uuid4().hex[:8]}")
    os.rename(path, doomed)
    thread = threading.Thread(
        target=shutil.rmtree, args=(doomed,), kwargs={"ignore_errors": True}, daemon=True
    )
    thread.start()
    _PENDING.append(thread)


def wait_discarded(timeout: float = 300.0) -> None:
    """Wait for the background deletions started by :func:`discard`."""
    while _PENDING:
        _PENDING.pop().join(timeout)
