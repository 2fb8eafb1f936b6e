"""Code that runs at every interpreter start: sitecustomize, usercustomize, the user site."""

from __future__ import annotations

import os
from collections.abc import Iterable

from trainguard.env._rules import STARTUP_HOOK, USER_SITE
from trainguard.env._target import Interpreter
from trainguard.findings import Finding

__all__ = ["startup_findings", "startup_search_path"]

_HOOKS = ("sitecustomize", "usercustomize")


def startup_search_path(interp: Interpreter, extra: Iterable[str] = ()) -> list[str]:
    """Where ``import sitecustomize`` would look: the interpreter's own path plus ``extra``
    (PYTHONPATH entries and directories added by ``.pth`` path lines)."""
    dirs = [*extra, interp.stdlib, os.path.join(interp.stdlib, "lib-dynload")]
    dirs += list(interp.site_packages)
    if interp.user_site:
        dirs.append(interp.user_site)
    seen: set[str] = set()
    out: list[str] = []
    for d in dirs:
        real = os.path.realpath(d)
        if real not in seen and os.path.isdir(d):
            seen.add(real)
            out.append(d)
    return out


def _candidates(directory: str, name: str, ext_suffixes: Iterable[str]) -> list[str]:
    found = []
    for suffix in (*ext_suffixes, ".py", ".pyc"):
        path = os.path.join(directory, name + suffix)
        if os.path.isfile(path):
            found.append(path)
    package = os.path.join(directory, name, "__init__.py")
    if os.path.isfile(package):
        found.append(package)
    return found


def startup_findings(
    interp: Interpreter, extra_path: Iterable[str] = (), *, allowed_sha256: Iterable[str] = ()
) -> list[Finding]:
    """sitecustomize/usercustomize anywhere on the start-up path, and an active user site."""
    findings: list[Finding] = []
    allowed = set(allowed_sha256)
    hooks = _HOOKS if interp.user_site else _HOOKS[:1]
    hits: list[tuple[str, str]] = []
    for directory in startup_search_path(interp, extra_path):
        for name in hooks:
            hits += [(name, p) for p in _candidates(directory, name, interp.extension_suffixes)]
    if hits:  # rare: the hashing machinery is loaded only when a hook exists
        from trainguard.env._hashing import hash_files

        facts = hash_files([p for _, p in hits], workers=1)
    else:
        facts = []
    for (name, path), fact in zip(hits, facts, strict=True):
        digest = fact.sha256.hex() if fact.sha256 else None
        if digest in allowed:
            continue
        findings.append(
            STARTUP_HOOK.finding(
                path,
                f"{name} is imported at every interpreter start from {os.path.dirname(path)}",
                sha256=digest,
                size=fact.size,
                preview=_preview(path),
            )
        )
    if interp.user_site and os.path.isdir(interp.user_site):
        try:
            entries = sorted(os.listdir(interp.user_site))
        except OSError:
            entries = []
        if entries:
            findings.append(
                USER_SITE.finding(
                    interp.user_site,
                    f"the interpreter also loads {len(entries)} entries from the user site-packages",
                    entries=entries[:20],
                )
            )
    return findings


def _preview(path: str, lines: int = 8) -> str:
    if not path.endswith(".py"):
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readline() for _ in range(lines)).strip()
    except OSError:
        return ""
