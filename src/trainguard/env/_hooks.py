"""Everything that runs or redirects loading at interpreter start: .pth, sitecustomize, env vars."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from trainguard.env import _rules as R
from trainguard.env._config import EnvConfig
from trainguard.env._envvars import env_findings, shadowing_in_dirs
from trainguard.env._pth import classify_pth, read_pth
from trainguard.env._startup import startup_findings
from trainguard.findings import Finding, Rule, Severity

if TYPE_CHECKING:
    from trainguard.env._target import Interpreter

__all__ = ["hook_findings", "pth_findings"]


def pth_findings(
    interp: Interpreter, verified: set[str], owned: set[str], config: EnvConfig
) -> tuple[list[tuple[Finding, Rule]], list[str]]:
    """Judge every ``.pth`` in the site folders; also return the outside directories they add.

    ``verified`` holds files whose content matched their RECORD (or wheel);
    ``owned`` those a RECORD lists at all.
    """
    out: list[tuple[Finding, Rule]] = []
    added: list[str] = []
    for site in interp.site_packages:
        try:
            names = sorted(n for n in os.listdir(site) if n.endswith(".pth"))
        except OSError:
            continue
        for name in names:
            path = os.path.join(site, name)
            pth = read_pth(path)
            if pth.error is not None:
                out.append(
                    (R.UNREADABLE.finding(path, f"could not read: {pth.error}"), R.UNREADABLE)
                )
                continue
            is_verified = path in verified
            if pth.exec_lines:
                lines = [f"{n}: {t}" for n, t in pth.exec_lines]
                if pth.known or pth.sha256 in config.allowed_sha256:
                    why = pth.known or "allowlisted by configuration"
                    out.append(
                        (R.PTH_KNOWN.finding(path, f"known hook: {why}", lines=lines), R.PTH_KNOWN)
                    )
                elif pth.editable_finder and is_verified:
                    out.append(
                        (
                            R.PTH_KNOWN.finding(
                                path,
                                "setuptools editable-install finder of a verified distribution",
                                lines=lines,
                            ),
                            R.PTH_KNOWN,
                        )
                    )
                else:
                    severity = Severity.HIGH if is_verified else Severity.CRITICAL
                    whose = (
                        "a verified distribution's"
                        if is_verified
                        else ("a modified" if path in owned else "an unowned")
                    )
                    out.append(
                        (
                            R.PTH_EXEC.finding(
                                path,
                                f"{whose} .pth runs code at every interpreter start: {pth.exec_lines[0][1][:160]}",
                                severity=severity,
                                lines=lines,
                                sha256=pth.sha256,
                            ),
                            R.PTH_EXEC,
                        )
                    )
            for directory, where in classify_pth(pth, site):
                if where == "inside":
                    continue
                if where == "outside":
                    added.append(directory)
                severity = Severity.INFO if is_verified and where == "outside" else Severity.MEDIUM
                if where == "missing" and is_verified:
                    severity = Severity.LOW
                message = f"adds {directory} to sys.path"
                if where == "missing":
                    message += " (it does not exist: whoever creates it decides what loads)"
                out.append(
                    (
                        R.PTH_PATH.finding(path, message, severity=severity, directory=directory),
                        R.PTH_PATH,
                    )
                )
    return out, added


def hook_findings(
    interp: Interpreter,
    verified: set[str],
    owned: set[str],
    config: EnvConfig,
    protected: Callable[[], dict[str, str]],
) -> Iterator[tuple[Finding, Rule]]:
    """Start-up hooks, load-changing variables and PYTHONPATH shadowing.

    ``protected`` gives the top-level module names worth protecting (called
    only when PYTHONPATH is set: it needs every RECORD).
    """
    pth, added = pth_findings(interp, verified, owned, config)
    yield from pth
    pythonpath = (
        [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if config.check_environ
        else []
    )
    for finding in startup_findings(
        interp, [*pythonpath, *added], allowed_sha256=config.allowed_sha256
    ):
        yield finding, R.STARTUP_HOOK if finding.rule == R.STARTUP_HOOK.id else R.USER_SITE
    if not config.check_environ:
        return
    for finding in env_findings(os.environ, allowed=config.allowed_env):
        yield finding, R.ENV_VAR if finding.rule == R.ENV_VAR.id else R.LD_SO_PRELOAD
    if pythonpath:
        for finding in shadowing_in_dirs(pythonpath, protected(), interp.extension_suffixes):
            yield finding, R.SHADOWING
