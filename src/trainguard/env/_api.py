"""The two entry points of environment verification."""

from __future__ import annotations

from trainguard.env._config import EnvConfig
from trainguard.env._recheck import recheck
from trainguard.env._snapshot import snapshot_environment
from trainguard.env._target import describe_interpreter
from trainguard.env._verify import Progress, full_verify
from trainguard.env.baseline import Baseline
from trainguard.findings import Report

__all__ = ["snapshot_environment", "verify_environment"]


def verify_environment(
    config: EnvConfig | None = None, *, progress: Progress | None = None
) -> Report:
    """Verify an environment: against a baseline when ``config.baseline`` is set (a
    stat-only re-check), else against every distribution's RECORD and, where the
    wheels are at hand, the wheels' own RECORDs.

    Returns a :class:`~trainguard.findings.Report` of ``env.*`` findings.
    Raises :class:`~trainguard.errors.UsageError` for an interpreter that cannot
    be inspected and :class:`~trainguard.errors.ConfigError` for a malformed baseline.
    """
    config = config or EnvConfig()
    interp = describe_interpreter(config.python)
    if config.baseline is not None:
        baseline = Baseline.load(config.baseline)
        return recheck(baseline, interp, config, baseline_path=config.baseline, progress=progress)
    report, _ = full_verify(interp, config, progress=progress)
    return report
