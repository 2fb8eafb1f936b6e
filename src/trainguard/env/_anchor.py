"""Anchor installed distributions to their wheels (and the wheels to a lock file)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from trainguard.env import _rules as R
from trainguard.env._config import EnvConfig
from trainguard.env._diff import Pristine, pristine_from_wheel
from trainguard.env._record import Distribution, RecordEntry
from trainguard.env._wheels import (
    LockEntry,
    WheelIndex,
    WheelRecord,
    auto_wheel_dirs,
    file_sha256,
    installer_extra,
    normalize,
    parse_lock,
    read_wheel,
)
from trainguard.errors import UsageError
from trainguard.findings import Finding, Rule

if TYPE_CHECKING:
    from trainguard.env._verify import EnvState

__all__ = ["Anchoring", "anchor_distributions"]

Owners = Sequence[tuple[Distribution, RecordEntry]]


def field_digest(field: str) -> bytes | None:
    """The raw digest of a RECORD hash field (``sha256=...``)."""
    return RecordEntry("", "", field, "").digest


class _Sink(Protocol):
    def add(self, finding: Finding, rule: Rule) -> None: ...


@dataclass
class Anchoring:
    """Which distribution is anchored to which wheel, and what that revealed."""

    index: WheelIndex | None = None
    by_dist: dict[str, WheelRecord] = field(default_factory=dict)
    #: absolute paths the wheel lists but the installed RECORD does not -> (dist, wheel, hash field)
    wheel_only: dict[str, tuple[Distribution, WheelRecord, str]] = field(default_factory=dict)
    problems: list[tuple[Finding, Rule]] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.index is not None

    @property
    def count(self) -> int:
        return len(self.by_dist)

    def anchor_of(self, dist: Distribution) -> str:
        wheel = self.by_dist.get(dist.meta_dir)
        return f"wheel {wheel.wheel}" if wheel else "installed RECORD"

    def wheel_entry(self, owners: Owners) -> tuple[str, str] | None:
        """``(wheel path, hash field)`` the wheel gives for a file, when anchored."""
        for dist, entry in owners:
            wheel = self.by_dist.get(dist.meta_dir)
            if wheel is not None:
                found = wheel.files.get(entry.rel)
                if found is not None:
                    return wheel.wheel, found
        return None

    def owns(self, path: str) -> bool:
        return path in self.wheel_only

    def pristine(self, path: str, owners: Owners) -> Pristine | None:
        """The original bytes of ``path`` from a wheel, hash-checked, when one is at hand."""
        for dist, entry in owners:
            rel = entry.rel
            wheel = self.by_dist.get(dist.meta_dir)
            if wheel is not None and rel in wheel.files:
                return pristine_from_wheel(wheel.wheel, rel, field_digest(wheel.files[rel]))
            if self.index is None:
                continue
            for candidate in self.index.find(dist.name, dist.version):
                try:
                    record = read_wheel(candidate)
                except (OSError, zipfile.BadZipFile, ValueError):
                    continue
                if rel in record.files:
                    return pristine_from_wheel(candidate, rel, field_digest(record.files[rel]))
        return None

    def report(self, state: EnvState, sink: _Sink) -> None:
        """Findings only the wheels can give: extra RECORD lines, removed lines, lock problems."""
        for finding, rule in self.problems:
            sink.add(finding, rule)
        for dist in state.dists:
            wheel = self.by_dist.get(dist.meta_dir)
            if wheel is None:
                continue
            meta = os.path.basename(dist.meta_dir)
            files = wheel.files
            for entry in dist.entries:
                rel = entry.rel
                if rel not in files and not installer_extra(rel, meta, wheel.scripts):
                    sink.add(
                        R.WHEEL_EXTRA.finding(
                            entry.path,
                            f"listed in {dist.label}'s installed RECORD but not in {os.path.basename(wheel.wheel)}",
                            wheel=wheel.wheel,
                        ),
                        R.WHEEL_EXTRA,
                    )
        for path, (dist, wheel, wheel_field) in self.wheel_only.items():
            fact = state.facts.get(path)
            name = os.path.basename(wheel.wheel)
            if fact is None or fact.sha256 is None:
                sink.add(
                    R.FILE_MISSING.finding(path, f"in {name} but neither installed nor in RECORD"),
                    R.FILE_MISSING,
                )
            elif wheel_field.startswith("sha256=") and wheel_field[7:].rstrip("=") == fact.b64:
                sink.add(
                    R.RECORD_PROBLEM.finding(
                        path, f"its line was removed from {dist.label}'s installed RECORD"
                    ),
                    R.RECORD_PROBLEM,
                )
            else:
                sink.add(
                    R.WHEEL_MISMATCH.finding(
                        path,
                        f"differs from {name}'s RECORD, and its installed RECORD line was removed",
                        wheel=wheel.wheel,
                        sha256=fact.sha256.hex(),
                    ),
                    R.WHEEL_MISMATCH,
                )
        if self.enabled:
            missing = [d.label for d in state.dists if d.meta_dir not in self.by_dist]
            if missing:
                sink.add(
                    R.ANCHOR_MISSING.finding(
                        "(environment)",
                        f"{len(missing)} of {len(state.dists)} distributions have no wheel at hand; "
                        "they were checked against their installed RECORD only",
                        distributions=missing,
                        wheel_dirs=self.tried,
                    ),
                    R.ANCHOR_MISSING,
                )


def _load_lock(path: str) -> dict[str, LockEntry]:
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_lock(fh.read())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read lock file {path}", subject=path, found=str(exc), hint="check the path"
        ) from exc


def _choose(dist: Distribution, candidates: list[str]) -> WheelRecord | None:
    """The candidate wheel whose WHEEL metadata (its tags) matches the installed one."""
    meta = os.path.basename(dist.meta_dir)
    wheel_meta = next((e for e in dist.entries if e.rel == f"{meta}/WHEEL"), None)
    fallback: WheelRecord | None = None
    for candidate in candidates:
        try:
            record = read_wheel(candidate)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if record.dist_info != meta:
            continue
        theirs = record.files.get(f"{meta}/WHEEL")
        if wheel_meta is not None and theirs is not None and theirs == wheel_meta.hash:
            return record
        fallback = fallback or record
    return fallback


def anchor_distributions(dists: list[Distribution], config: EnvConfig) -> Anchoring:
    """Find each distribution's wheel (``config.wheels``, pip's find-links, pip's cache)."""
    dirs = list(config.wheels) + (auto_wheel_dirs() if config.auto_wheels else [])
    lock = _load_lock(config.lock) if config.lock else None
    if not dirs and not config.pip_cache and lock is None:
        return Anchoring()
    anchoring = Anchoring(index=WheelIndex(dirs, pip_cache=config.pip_cache), tried=dirs)
    index = anchoring.index
    assert index is not None
    for dist in dists:
        if dist.kind != "dist-info":
            continue
        candidates = index.find(dist.name, dist.version)
        locked = lock.get(normalize(dist.name)) if lock is not None else None
        if lock is not None and locked is None:
            anchoring.problems.append(
                (
                    R.LOCK_MISMATCH.finding(
                        dist.meta_dir, f"{dist.label} is installed but not in the lock file"
                    ),
                    R.LOCK_MISMATCH,
                )
            )
        elif locked is not None:
            if locked.version is not None and locked.version.lower() != dist.version.lower():
                anchoring.problems.append(
                    (
                        R.LOCK_MISMATCH.finding(
                            dist.meta_dir,
                            f"{dist.label} is installed; the lock pins {locked.version}",
                        ),
                        R.LOCK_MISMATCH,
                    )
                )
            if locked.sha256 and candidates:
                allowed = [c for c in candidates if file_sha256(c) in locked.sha256]
                if not allowed:
                    anchoring.problems.append(
                        (
                            R.WHEEL_UNLOCKED.finding(
                                candidates[0],
                                f"no wheel found for {dist.label} has a hash the lock file allows",
                                candidates=candidates,
                            ),
                            R.WHEEL_UNLOCKED,
                        )
                    )
                candidates = allowed
        record = _choose(dist, candidates)
        if record is None:
            continue
        anchoring.by_dist[dist.meta_dir] = record
        installed = {e.rel for e in dist.entries}
        for rel, wheel_field in record.files.items():
            if rel not in installed and not rel.startswith(f"{record.dist_info}/RECORD"):
                path = os.path.normpath(os.path.join(dist.site, rel))
                anchoring.wheel_only[path] = (dist, record, wheel_field)
    return anchoring
