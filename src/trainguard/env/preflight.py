"""``trainguard preflight``: the job prolog. Scan, env verify and code verify, one report.

Run it before the training process starts (a Slurm prolog, a Kubernetes init
container, a torchrun wrapper); exit 0 lets the job start, 1 (findings) or 2
(error) should stop it. Called from inside the training process,
``census=True`` adds the runtime census of that process.

Example:
    >>> from trainguard.env.preflight import PreflightConfig, preflight
    >>> report = preflight(PreflightConfig(scan_paths=("ckpt.pt",)))  # doctest: +SKIP
    >>> report.exit_code(Severity.MEDIUM)  # doctest: +SKIP
    0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trainguard.env._api import verify_environment
from trainguard.env._config import EnvConfig
from trainguard.findings import Report

if TYPE_CHECKING:
    from trainguard.env.census import RuntimeCensus
    from trainguard.env.code import CodeConfig

__all__ = ["PreflightConfig", "preflight"]

Progress = Callable[[int, int | None, Path], None]


def _default_code() -> CodeConfig:
    # Imported on use: the package imports this module at start-up (its function
    # shares the module's name), and code verification pulls in git and diff tools.
    from trainguard.env.code import CodeConfig

    return CodeConfig()


@dataclass(frozen=True)
class PreflightConfig:
    """What the prolog checks.

    Attributes:
        scan_paths: checkpoints, model folders and data files the job will load.
        env: environment verification settings; None skips it.
        code: training-code verification settings; None skips it.
        census: also run the runtime census (only meaningful inside the training process).
    """

    scan_paths: tuple[str, ...] = ()
    env: EnvConfig | None = field(default_factory=EnvConfig)
    code: CodeConfig | None = field(default_factory=_default_code)
    census: bool = False


def preflight(
    config: PreflightConfig | None = None,
    *,
    progress: Progress | None = None,
    census: RuntimeCensus | None = None,
) -> Report:
    """Run every configured check and merge the results into one ``preflight`` report.

    ``census``, a :class:`~trainguard.env.census.RuntimeCensus` made early in
    the training process, is run too (``config.census`` runs the one captured
    when :mod:`trainguard.env.census` was imported).

    ``stats["parts"]`` summarizes each part (findings, worst severity, seconds).
    Usage errors (a missing checkpoint path, an unreadable baseline) propagate:
    a prolog that cannot check must not pass.
    """
    config = config or PreflightConfig()
    report = Report(engine="preflight")
    parts: dict[str, dict[str, object]] = {}

    def fold(name: str, run: Callable[[], Report]) -> None:
        started = time.perf_counter()
        part = run()
        report.merge(part)
        worst = part.max_severity
        parts[name] = {
            "findings": len(part.findings),
            "max_severity": worst.label if worst is not None else None,
            "seconds": round(time.perf_counter() - started, 3),
        }

    if config.scan_paths:
        from trainguard.scan import scan_paths

        fold("scan", lambda: scan_paths(list(config.scan_paths), progress=progress))
    if config.env is not None:
        env_config = config.env
        fold("env", lambda: verify_environment(env_config))
    if config.code is not None:
        from trainguard.env.code import verify_code

        code_config = config.code
        fold("code", lambda: verify_code(code_config))
    if census is not None:
        fold("census", census.run)
    elif config.census:
        from trainguard.env.census import runtime_census

        fold("census", runtime_census)
    report.stats["parts"] = parts
    return report
