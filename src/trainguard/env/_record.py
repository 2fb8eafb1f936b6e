"""Installed distributions and their RECORD files (the wheel spec's list of installed files).

A RECORD line is ``path,algorithm=urlsafe-b64-digest,size``. The spec lets a
few entries go without a hash: RECORD itself, its signatures and compiled
``.pyc`` files. Anything else listed without a hash is a file nobody can check,
so it is reported, never assumed fine.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["Distribution", "RecordEntry", "find_distributions", "norm_rel", "parse_record"]

#: Algorithms a RECORD may use (pip refuses md5 and sha1, and so do we).
STRONG = frozenset({"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b"})
#: RECORD entries allowed to have no hash (besides ``.pyc``).
UNHASHED_OK = frozenset({"RECORD", "RECORD.jws", "RECORD.p7s"})


class RecordEntry(NamedTuple):
    """One RECORD line: the absolute path, the path as written, the hash field
    (``algo=urlsafe-b64``, empty when absent) and the size field, as text.

    Kept as text: comparing the base64 spelling of a computed digest costs
    less than decoding 40,000 RECORD hashes up front.
    """

    path: str
    rel: str  # normalized
    hash: str
    size: str

    @property
    def algo(self) -> str | None:
        return self.hash.partition("=")[0].lower() if self.hash else None

    @property
    def b64(self) -> str:
        """The digest as written, padding removed."""
        return self.hash.partition("=")[2].rstrip("=")

    @property
    def digest(self) -> bytes | None:
        value = self.b64
        if not value:
            return None
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None

    @property
    def size_int(self) -> int:
        return int(self.size) if self.size.isdigit() else 0

    @property
    def hash_optional(self) -> bool:
        """True for entries the spec allows without a hash."""
        name = os.path.basename(self.rel)
        return name.endswith(".pyc") or (
            name in UNHASHED_OK
            and os.path.basename(os.path.dirname(self.rel)).endswith(".dist-info")
        )


@dataclass
class Distribution:
    """An installed distribution: where its metadata lives and what its RECORD lists."""

    name: str
    version: str
    meta_dir: str
    site: str
    kind: str  # "dist-info" or "egg-info"
    entries: list[RecordEntry] = field(default_factory=list)
    #: Why the RECORD could not be used (missing, unreadable, malformed lines).
    record_problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def record_path(self) -> str:
        return os.path.join(self.meta_dir, "RECORD")


_B64 = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def _plain(rel: str) -> bool:
    """True when ``rel`` is already normal (no ``.``/``..`` parts, no ``//``, relative)."""
    return bool(rel) and rel[0] not in "/." and "/." not in rel and "//" not in rel


def norm_rel(rel: str) -> str:
    """``rel`` normalized, without calling normpath for the (common) already-normal case."""
    return rel if _plain(rel) else os.path.normpath(rel)


def parse_record(text: str, site: str) -> tuple[list[RecordEntry], list[str]]:
    """Parse RECORD ``text`` whose paths are relative to ``site``.

    Returns the entries (``rel`` normalized, ``path`` absolute) and a list of
    problems (malformed lines); a malformed line is never silently dropped.
    This runs on 40,000 lines per torch environment, so the common case is
    string slicing only: a standard ``sha256=`` field of 50 characters is not
    regex-checked here (a malformed digest can never match the file's, which
    is then a finding).
    """
    entries: list[RecordEntry] = []
    problems: list[str] = []
    rows: Iterable[list[str]]
    if '"' in text:  # quoting needs the csv module; most RECORDs have none
        rows = csv.reader(io.StringIO(text, newline=""))
    else:
        rows = (line.rsplit(",", 2) for line in text.splitlines())
    prefix = site + "/" if site else ""
    append = entries.append
    normpath = os.path.normpath
    for lineno, row in enumerate(rows, 1):
        if len(row) != 3:
            if any(cell.strip() for cell in row):
                problems.append(
                    f"line {lineno}: expected path,hash,size; got {','.join(row)[:120]!r}"
                )
            continue
        rel, hash_field, size_field = row
        if hash_field and not (len(hash_field) == 50 and hash_field.startswith("sha256=")):
            _algo, sep, value = hash_field.partition("=")
            if not sep or not _B64.fullmatch(value):
                problems.append(f"line {lineno}: malformed hash field {hash_field[:80]!r}")
                continue
        if size_field and not size_field.isdigit():
            problems.append(f"line {lineno}: size is not an integer: {size_field[:40]!r}")
            continue
        if rel and rel[0] not in "/." and "/." not in rel and "//" not in rel:
            append(RecordEntry(prefix + rel, rel, hash_field, size_field))
        else:
            full = normpath(os.path.join(site, rel)) if site else normpath(rel)
            append(RecordEntry(full, normpath(rel), hash_field, size_field))
    return entries, problems


def _metadata_name_version(meta_dir: str, fallback: str) -> tuple[str, str]:
    name, _, version = fallback.partition("-")
    for candidate in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(meta_dir, candidate), encoding="utf-8", errors="replace") as fh:
                found: dict[str, str] = {}
                for line in fh:
                    if not line.strip():
                        break
                    key, sep, value = line.partition(":")
                    if sep and key in ("Name", "Version") and key not in found:
                        found[key] = value.strip()
                return found.get("Name", name), found.get("Version", version)
        except OSError:
            continue
    return name, version


def _record_size(site: str, entry: str) -> int:
    try:
        return os.stat(os.path.join(site, entry, "RECORD")).st_size
    except OSError:
        return 0


def find_distributions(site: str, *, biggest_first: bool = False) -> Iterator[Distribution]:
    """Every distribution whose metadata directory sits directly in ``site``.

    By name, or with ``biggest_first`` by RECORD size (torch first), so a
    caller can start hashing the big distribution while the rest are parsed.
    """
    try:
        names = sorted(os.listdir(site))
    except OSError:
        return
    if biggest_first:
        names.sort(key=lambda e: -_record_size(site, e) if e.endswith(".dist-info") else 0)
    for entry in names:
        kind = "dist-info" if entry.endswith(".dist-info") else None
        if entry.endswith(".egg-info"):
            kind = "egg-info"
        if kind is None:
            continue
        meta_dir = os.path.join(site, entry)
        if not os.path.isdir(meta_dir):
            continue
        stem = entry[: -len(kind) - 1]
        name, version = _metadata_name_version(meta_dir, stem)
        dist = Distribution(name, version, meta_dir, site, kind)
        record = os.path.join(meta_dir, "RECORD")
        try:
            with open(record, encoding="utf-8", newline="") as fh:
                text = fh.read()
        except FileNotFoundError:
            dist.record_problems.append("no RECORD file")
        except (OSError, UnicodeDecodeError) as exc:
            dist.record_problems.append(f"RECORD unreadable: {exc}")
        else:
            dist.entries, dist.record_problems = parse_record(text, site)
        yield dist


def hash_with(algo: str, path: str) -> bytes:
    """Digest of ``path`` with a non-sha256 RECORD algorithm (rare slow path)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algo).digest()
