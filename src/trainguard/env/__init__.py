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

import typing

from trainguard.env._api import verify_environment
from trainguard.env._config import EnvConfig
from trainguard.env._target import Interpreter, describe_interpreter
from trainguard.env.baseline import Baseline

# Not lazy: the function shares its module's name, so a later first import of the
# module would make ``trainguard.env.preflight`` the module. The module is light.
from trainguard.env.preflight import PreflightConfig, preflight

if typing.TYPE_CHECKING:
    from trainguard.env._snapshot import snapshot_environment
    from trainguard.env.census import CensusConfig, RuntimeCensus, runtime_census
    from trainguard.env.code import CodeConfig, verify_code

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

#: Loaded on first use: a job prolog's ``env verify --baseline`` is one process that
#: needs none of these, and together they cost more than the re-check itself.
_LAZY = {
    "snapshot_environment": "trainguard.env._snapshot",
    "CensusConfig": "trainguard.env.census",
    "RuntimeCensus": "trainguard.env.census",
    "runtime_census": "trainguard.env.census",
    "CodeConfig": "trainguard.env.code",
    "verify_code": "trainguard.env.code",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trainguard.env' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
