"""``.pth`` files: the lines ``site`` executes at every interpreter start.

``site.addpackage`` executes a line that starts with ``import`` followed by a
space or tab, and treats any other non-comment line as a directory to append
to ``sys.path``. An executable line runs before any user code, in every
process that uses the environment; it is the place a supply-chain attack
hides. Path lines are harmless unless they point at directories someone else
can write to.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

__all__ = ["ALLOWED_PTH_SHA256", "PthFile", "classify_pth", "read_pth"]

#: Known-good contents of executable ``.pth`` files, by SHA-256 of the whole
#: file. setuptools' ``distutils-precedence.pth`` (one line, identical in every
#: setuptools since 49.x that ships it), and virtualenv's/uv's ``_virtualenv.pth``.
#: The hashes are computed from the exact texts below, so a reader can check them.
ALLOWED_PTH_SHA256: dict[str, str] = {}

_KNOWN_TEXTS = {
    "setuptools distutils-precedence.pth": (
        "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; "
        "enabled = os.environ.get(var, 'local') == 'local'; "
        "enabled and __import__('_distutils_hack').add_shim(); \n"
    ),
    "virtualenv/uv _virtualenv.pth": "import _virtualenv",
}
for _label, _text in _KNOWN_TEXTS.items():
    ALLOWED_PTH_SHA256[hashlib.sha256(_text.encode()).hexdigest()] = _label
    ALLOWED_PTH_SHA256[hashlib.sha256((_text.rstrip("\n") + "\n").encode()).hexdigest()] = _label

#: The exact line setuptools writes for a PEP 660 editable install.
_EDITABLE = re.compile(
    r"^import (__editable___[A-Za-z0-9_.]+_finder); \1\.install\('[^'\\\n]*'\)\s*$"
)


@dataclass
class PthFile:
    """One ``.pth`` file, split the way ``site`` reads it."""

    path: str
    sha256: str
    exec_lines: list[tuple[int, str]] = field(default_factory=list)
    path_lines: list[tuple[int, str]] = field(default_factory=list)
    error: str | None = None

    @property
    def known(self) -> str | None:
        """The allowlisted identity of this file's content, if any."""
        return ALLOWED_PTH_SHA256.get(self.sha256)

    @property
    def editable_finder(self) -> bool:
        """True when every executable line is setuptools' editable-finder hook."""
        return bool(self.exec_lines) and all(_EDITABLE.match(t) for _, t in self.exec_lines)


def read_pth(path: str) -> PthFile:
    """Read and split ``path`` exactly as ``site.addpackage`` would."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return PthFile(path, "", error=str(exc))
    pth = PthFile(path, hashlib.sha256(data).hexdigest())
    # site decodes with the locale encoding (3.11) or UTF-8 first (3.13);
    # undecodable bytes cannot hide an import line, so replace them.
    text = data.decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith(("import ", "import\t")):
            pth.exec_lines.append((lineno, line))
        else:
            pth.path_lines.append((lineno, line.rstrip()))
    return pth


def classify_pth(pth: PthFile, site: str) -> list[tuple[str, str]]:
    """Directories the path lines would add: ``(directory, where)`` with where in
    ``inside`` (under ``site``), ``outside`` or ``missing`` (not added by site today,
    but added the moment someone creates it)."""
    out: list[tuple[str, str]] = []
    site_real = os.path.realpath(site)
    for _, line in pth.path_lines:
        directory = os.path.normpath(os.path.join(site, line))
        if not os.path.exists(directory):
            out.append((directory, "missing"))
        elif os.path.realpath(directory).startswith(site_real + os.sep):
            out.append((directory, "inside"))
        else:
            out.append((directory, "outside"))
    return out
