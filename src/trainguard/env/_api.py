"""The entry point of environment verification (``snapshot`` lives in :mod:`._snapshot`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.env._config import EnvConfig
from trainguard.env._target import Interpreter, describe_interpreter
from trainguard.env.baseline import Baseline

if TYPE_CHECKING:
    from trainguard.env._verify import Progress
    from trainguard.findings import Report

__all__ = ["verify_environment"]


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
    # Each path imports only what it runs: a clean re-check never loads the
    # RECORD, wheel, diff or bytecode machinery.
    if config.baseline is not None:
        from trainguard.env._recheck import recheck

        interp, baseline = _describe_while_loading(config.python, config.baseline)
        return recheck(baseline, interp, config, baseline_path=config.baseline, progress=progress)
    from trainguard.env._verify import full_verify

    report, _ = full_verify(describe_interpreter(config.python), config, progress=progress)
    return report


def _describe_while_loading(python: str | None, path: str) -> tuple[Interpreter, Baseline]:
    """Describe the interpreter and load the baseline at the same time.

    Describing another interpreter waits on a subprocess (tens of milliseconds,
    on another core), and parsing a 30,000-file baseline takes as long: together
    they cost one of the two. An interpreter that cannot be described is
    reported before a malformed baseline, as when they ran one after the other.
    """
    if python is None:
        return describe_interpreter(None), Baseline.load(path)
    import threading

    described: list[Interpreter | BaseException] = []

    def describe() -> None:
        try:
            described.append(describe_interpreter(python))
        except BaseException as exc:  # re-raised below, in the caller's thread
            described.append(exc)

    thread = threading.Thread(target=describe, name="describe-interpreter", daemon=True)
    thread.start()
    try:
        baseline = Baseline.load(path)
    finally:
        thread.join()
        if isinstance(described[0], BaseException):
            raise described[0]
    return described[0], baseline
