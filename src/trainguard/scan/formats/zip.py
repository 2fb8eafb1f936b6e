"""Generic zip archives: every member, hidden ones included, is scanned as what it is.

A zip of checkpoints, a model folder shipped as a zip, a self-extracting file:
each member goes back to the engine, which detects its format (a torch
checkpoint, a pickle, another zip...). Archive-level tricks are reported by the
tolerant reader (:mod:`trainguard.scan._zip`). Names that would escape an
extraction directory are reported here, since extraction-based loaders
(``unzip``, some ``shutil.unpack_archive`` back ends) follow them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from trainguard.findings import Rule, Severity
from trainguard.scan._zip import is_zip, read_archive, scan_member, scan_outside

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "zip"

UNSAFE_PATH = Rule(
    "zip.unsafe-path",
    Severity.MEDIUM,
    "Zip member name escapes the extraction directory",
    "An absolute name, a drive letter or a '..' component makes a careless extractor write "
    "outside the target directory (zip slip): a model archive that overwrites code or "
    "configuration when unpacked.",
)

_DRIVE = r"^[A-Za-z]:"  # compiled on first use (re caches it)


def unsafe_name(name: str) -> bool:
    """Whether extracting ``name`` naively could write outside the target directory."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or bool(re.match(_DRIVE, name)) or ".." in parts


def detect(data: memoryview, filename: str | None) -> bool:
    return is_zip(data)


def scan(data: memoryview, ctx: ScanContext) -> None:
    archive = read_archive(data, ctx)
    unsafe = [m.name for m in archive.members if unsafe_name(m.name)]
    if unsafe:
        ctx.add(
            UNSAFE_PATH,
            f"{len(unsafe)} member name(s) leave the extraction directory, first {unsafe[0]!r}",
            members=unsafe[:20],
        )
    for member in archive.members:
        if not member.is_dir:
            scan_member(archive, member, None)
    scan_outside(archive)
