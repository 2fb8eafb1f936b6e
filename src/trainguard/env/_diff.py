"""Show what changed in a modified source file: the way a person confirms sabotage.

A pristine copy comes from the baseline's source archive (``--with-sources``)
or from the wheel the distribution was installed from; in both cases the
pristine bytes are checked against the recorded hash before they are trusted.
"""

from __future__ import annotations

import difflib
import hashlib
import zipfile
from dataclasses import dataclass

__all__ = ["Pristine", "pristine_from_sources", "pristine_from_wheel", "source_diff"]

#: Text files worth diffing; binaries only get their hashes.
DIFFABLE = (".py", ".pyi", ".pth", ".txt", ".cfg", ".json", ".toml", ".yaml", ".yml")


@dataclass(frozen=True)
class Pristine:
    """Original bytes of a file and where they came from."""

    data: bytes
    origin: str


def pristine_from_wheel(wheel: str, member: str, expected_sha256: bytes | None) -> Pristine | None:
    """``member`` of ``wheel``, if it exists and matches ``expected_sha256`` (the wheel RECORD's)."""
    data_prefix_candidates = [member]
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            dist_info = next(
                (n.split("/", 1)[0] for n in names if n.endswith(".dist-info/RECORD")), ""
            )
            data_dir = dist_info[: -len(".dist-info")] + ".data"
            data_prefix_candidates += [
                f"{data_dir}/purelib/{member}",
                f"{data_dir}/platlib/{member}",
            ]
            for name in data_prefix_candidates:
                if name in names:
                    data = zf.read(name)
                    if (
                        expected_sha256 is not None
                        and hashlib.sha256(data).digest() != expected_sha256
                    ):
                        return None
                    return Pristine(data, f"wheel {wheel}")
    except (OSError, zipfile.BadZipFile, ValueError, KeyError):
        return None
    return None


def pristine_from_sources(
    archive: str, member: str, expected_sha256: str | None
) -> Pristine | None:
    """``member`` of a baseline source archive, checked against the baseline hash."""
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        return None
    return Pristine(data, f"baseline sources {archive}")


def source_diff(
    pristine: Pristine, current: bytes, label: str, *, max_lines: int = 200
) -> tuple[str, str]:
    """``(unified diff, one-line summary of the first changes)``."""
    old = pristine.data.decode("utf-8", "replace").splitlines(keepends=True)
    new = current.decode("utf-8", "replace").splitlines(keepends=True)
    lines = list(
        difflib.unified_diff(old, new, f"a/{label} ({pristine.origin})", f"b/{label} (installed)")
    )
    text = "".join(lines[:max_lines])
    if len(lines) > max_lines:
        text += f"... ({len(lines) - max_lines} more diff lines)\n"
    changed = [
        ln.rstrip("\n")
        for ln in lines[2:]
        if ln[:1] in "+-" and not ln.startswith(("+++", "---")) and ln[1:].strip()
    ]
    summary = " | ".join(c.strip()[:100] for c in changed[:4])
    if len(changed) > 4:
        summary += f" | ... ({len(changed)} changed lines)"
    return text, summary
