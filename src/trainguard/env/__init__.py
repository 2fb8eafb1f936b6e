"""Is the Python environment, and the training code, what it claims to be?

* :func:`verify_environment`: every installed file against its RECORD hash
  (and the wheel it came from, when at hand), files nobody owns, ``.pth``
  hooks, sitecustomize, bytecode, load-changing environment variables; or, with
  a baseline, a stat-only re-check in a fraction of a second.
* :func:`snapshot_environment`: a baseline (per-file SHA-256 + stat facts).
* :func:`verify_code`: a training repository against its git commit.
* :func:`runtime_census` / :class:`RuntimeCensus`: the live process (functions
  replaced in memory, Python kernels over aten ops, modified loaded files).
* :func:`preflight`: all of the above plus ``scan`` as one job prolog.

Example:
    >>> from trainguard.env import EnvConfig, describe_interpreter, verify_environment
    >>> from trainguard.findings import Severity
    >>> describe_interpreter().cache_tag.startswith("cpython-")
    True
    >>> report = verify_environment(EnvConfig())  # hashes every installed file  # doctest: +SKIP
    >>> report.exit_code(Severity.MEDIUM)  # doctest: +SKIP
    0
"""

from __future__ import annotations

from trainguard.env._api import snapshot_environment, verify_environment
from trainguard.env._config import EnvConfig
from trainguard.env._target import Interpreter, describe_interpreter
from trainguard.env.baseline import Baseline
from trainguard.env.census import CensusConfig, RuntimeCensus, runtime_census
from trainguard.env.code import CodeConfig, verify_code
from trainguard.env.preflight import PreflightConfig, preflight

__all__ = [
    "Baseline",
    "CensusConfig",
    "CodeConfig",
    "EnvConfig",
    "Interpreter",
    "PreflightConfig",
    "RuntimeCensus",
    "describe_interpreter",
    "preflight",
    "runtime_census",
    "snapshot_environment",
    "verify_code",
    "verify_environment",
]
