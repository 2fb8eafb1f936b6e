"""Wheels and lock files: a trust anchor that an edit inside the environment cannot rewrite.

The installed RECORD lives next to the files it describes, so whoever edits a
library can fix its RECORD line too. The wheel the distribution came from
carries its own RECORD, and a lock file (``pip-compile --generate-hashes``,
``uv pip compile --generate-hashes``) pins the wheel's SHA-256. Anchoring
compares each installed file with the wheel's RECORD instead.

pip changes a few things on installation, and those are not findings:
``.data/purelib`` and ``.data/platlib`` move to site-packages, ``.data/scripts``
get a new shebang, console scripts are generated, ``.pyc`` files are compiled,
and INSTALLER, REQUESTED and ``direct_url.json`` are added to the metadata.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from trainguard.env._record import norm_rel, parse_record
from trainguard.env._zipread import read_members

__all__ = ["LockEntry", "WheelIndex", "WheelRecord", "auto_wheel_dirs", "parse_lock", "read_wheel"]

#: Metadata files pip adds at installation.
INSTALLER_FILES = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"})


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class WheelRecord:
    """A wheel's own RECORD, mapped to where pip installs each file."""

    wheel: str
    dist_info: str
    #: site-packages-relative path (normalized) -> the wheel RECORD's hash field
    files: dict[str, str] = field(default_factory=dict)
    #: names of scripts pip installs into bin/ (rewritten shebangs, generated entry points)
    scripts: set[str] = field(default_factory=set)
    wheel_sha256: str | None = None


@dataclass(frozen=True)
class LockEntry:
    """One locked requirement: its pinned version and the wheel hashes it allows."""

    name: str
    version: str | None
    sha256: frozenset[str]


def parse_lock(text: str) -> dict[str, LockEntry]:
    """Parse a requirements file with ``--hash=sha256:`` options (pip's hash-checking mode)."""
    joined = re.sub(r"\\\r?\n", " ", text)
    out: dict[str, LockEntry] = {}
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(==\s*([^\s;]+))?", line)
        if not match:
            continue
        hashes = frozenset(
            h.lower() for h in re.findall(r"--hash[=\s]sha256:([0-9a-fA-F]{64})", line)
        )
        name = normalize(match.group(1))
        out[name] = LockEntry(name, match.group(4), hashes)
    return out


def _pip_config_find_links() -> list[str]:
    files = [
        "/etc/pip.conf",
        "/etc/xdg/pip/pip.conf",
        os.path.expanduser("~/.pip/pip.conf"),
        os.path.expanduser("~/.config/pip/pip.conf"),
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    links: list[str] = []
    for path in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        for section in ("global", "install"):
            if parser.has_option(section, "find-links"):
                links += parser.get(section, "find-links").split()
    return links


def auto_wheel_dirs() -> list[str]:
    """Local wheel folders pip itself would install from: ``PIP_FIND_LINKS`` and the
    ``find-links`` of pip's configuration files (URLs are skipped)."""
    links = os.environ.get("PIP_FIND_LINKS", "").split() + _pip_config_find_links()
    out: list[str] = []
    for link in links:
        path = link[7:] if link.startswith("file://") else link
        if "://" in path or not os.path.isdir(path):
            continue
        if path not in out:
            out.append(path)
    return out


class WheelIndex:
    """Wheel files found in folders (and optionally pip's cache), by name and version."""

    def __init__(self, dirs: Sequence[str], *, pip_cache: str | None = None) -> None:
        self.dirs = list(dirs)
        self._by_key: dict[tuple[str, str], list[str]] = {}
        for d in dirs:
            self._add_dir(d)
        if pip_cache:
            self._add_pip_cache(pip_cache)

    def _add(self, name: str, version: str, path: str) -> None:
        self._by_key.setdefault((normalize(name), version.lower()), []).append(path)

    def _add_dir(self, directory: str) -> None:
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for entry in names:
            if entry.endswith(".whl"):
                parts = entry[:-4].split("-")
                if len(parts) >= 5:
                    self._add(parts[0], parts[1], os.path.join(directory, entry))

    def _add_pip_cache(self, cache: str) -> None:
        # pip >= 23.3 stores downloaded files as raw ``.body`` files under http-v2/;
        # locally built wheels keep their names under wheels/.
        for root, _dirs, files in os.walk(cache):
            for entry in files:
                full = os.path.join(root, entry)
                if entry.endswith(".whl"):
                    self._add_dir(root)
                    break
                if not entry.endswith(".body"):
                    continue
                try:
                    with zipfile.ZipFile(full) as zf:
                        infos = [n for n in zf.namelist() if n.endswith(".dist-info/WHEEL")]
                except (OSError, zipfile.BadZipFile, ValueError):
                    continue
                if len(infos) == 1:
                    stem = infos[0].split("/", 1)[0][: -len(".dist-info")]
                    name, _, version = stem.partition("-")
                    self._add(name, version, full)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values())

    def find(self, name: str, version: str) -> list[str]:
        """Candidate wheels for one installed distribution."""
        return list(self._by_key.get((normalize(name), version.lower()), []))


def file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _top_meta(name: str) -> bool:
    return name.count("/") == 1 and name.split("/", 1)[0].endswith(".dist-info")


def read_wheel(path: str, *, with_sha256: bool = False) -> WheelRecord:
    """Read the RECORD inside wheel ``path`` and map it to installed locations.

    Raises OSError or ValueError for an unusable wheel.
    """
    members = read_members(path, (b".dist-info/RECORD", b".dist-info/entry_points.txt"), _top_meta)
    records = [n for n in members if n.endswith("/RECORD")]
    if len(records) != 1:
        raise ValueError(f"expected one .dist-info/RECORD, found {len(records)}")
    dist_info = records[0].split("/", 1)[0]
    text = members[records[0]].decode("utf-8")
    scripts: set[str] = set()
    entry_points = members.get(f"{dist_info}/entry_points.txt")
    if entry_points is not None:
        scripts |= _console_scripts(entry_points.decode("utf-8", "replace"))
    wheel = WheelRecord(path, dist_info, scripts=scripts)
    files = wheel.files
    data_dir = dist_info[: -len(".dist-info")] + ".data/"
    if '"' in text:  # quoted paths: the full parser
        entries, problems = parse_record(text, "")
        if problems:
            raise ValueError("malformed RECORD in wheel: " + "; ".join(problems[:3]))
        rows = [(e.rel, e.hash) for e in entries]
    else:  # a dict of rel -> hash field is all anchoring needs (14,000 lines for torch)
        rows = []
        for line in text.splitlines():
            parts = line.rsplit(",", 2)
            if len(parts) != 3:
                if line.strip():
                    raise ValueError(f"malformed RECORD line in wheel: {line[:80]!r}")
                continue
            rows.append((norm_rel(parts[0]), parts[1]))
    for rel, hash_field in rows:
        if rel.startswith(data_dir):
            kind, _, rest = rel[len(data_dir) :].partition("/")
            if kind in ("purelib", "platlib"):
                rel = norm_rel(rest)
            elif kind == "scripts":
                wheel.scripts.add(os.path.basename(rest))
                continue
            else:  # headers, data: installed outside site-packages
                continue
        files[rel] = hash_field
    if with_sha256:
        wheel.wheel_sha256 = file_sha256(path)
    return wheel


def _console_scripts(text: str) -> set[str]:
    parser = configparser.RawConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error:
        return set()
    names: set[str] = set()
    for section in ("console_scripts", "gui_scripts"):
        if parser.has_section(section):
            names |= {k.strip() for k in parser.options(section)}
    return names


def installer_extra(rel: str, dist_info: str, scripts: Iterable[str]) -> bool:
    """True for installed RECORD entries that pip adds on its own."""
    norm = os.path.normpath(rel)
    if norm.endswith(".pyc"):
        return True
    head, _, name = norm.rpartition("/")
    if head == dist_info and name in INSTALLER_FILES:
        return True
    return norm.startswith("..") and os.path.basename(norm) in set(scripts)
