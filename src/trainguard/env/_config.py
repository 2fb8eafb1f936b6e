"""Configuration of environment verification: one frozen dataclass, plain data."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CAVEATS", "EnvConfig"]


@dataclass(frozen=True)
class EnvConfig:
    """What ``env verify`` and ``env snapshot`` check, and against what.

    Attributes:
        python: another interpreter to verify (its path); None for this one.
        baseline: a baseline file; when set, a fast stat-based re-check against it.
        wheels: folders holding the wheels the environment was installed from.
        auto_wheels: also use the local ``find-links`` folders of pip's own
            configuration (``PIP_FIND_LINKS``, ``pip.conf``) as wheel folders.
        pip_cache: pip's cache folder, searched for wheels too (slow on big caches).
        lock: a requirements file with ``--hash=sha256:`` pins.
        deep_pyc: recompile every live ``.pyc``'s source and compare code objects.
        workers: hashing threads (default: CPU count, 2 to 8).
        allowed_sha256: SHA-256 (hex) of ``.pth``, sitecustomize or unowned files a
            site has reviewed and accepts.
        allowed_env: ``NAME`` or ``NAME=VALUE`` of load-changing variables accepted.
        check_environ: check this process's environment variables.
        max_diff_lines: diff lines kept per modified file.
        max_per_rule: findings listed per rule before the rest are summarized.
    """

    python: str | None = None
    baseline: str | None = None
    wheels: tuple[str, ...] = ()
    auto_wheels: bool = True
    pip_cache: str | None = None
    lock: str | None = None
    deep_pyc: bool = False
    workers: int | None = None
    allowed_sha256: frozenset[str] = frozenset()
    allowed_env: frozenset[str] = frozenset()
    check_environ: bool = True
    max_diff_lines: int = 200
    max_per_rule: int = 100


CAVEATS = [
    "An installed RECORD lives beside the files it lists: an edit that also rewrites the "
    "RECORD line is caught only with a wheel anchor (--wheels, --lock) or a baseline.",
    "Without a baseline or --deep-pyc, a .pyc whose header matches its source is not "
    "compared with the source's code.",
    "The interpreter binary and the standard library have no RECORD; cover them with a "
    "baseline taken with --include-stdlib.",
    "Code imported from outside the environment (the training repository, PYTHONPATH, "
    ".pth path entries) is not covered here; use `trainguard code verify`.",
    "root can change anything, the clock (and so ctime) included; keep baselines signed and "
    "off the machine they describe.",
]
