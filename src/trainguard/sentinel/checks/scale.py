"""Check 10: scale-conditioned triggers, found statically and made to fire in a canary.

Two halves:

* **static**: at ``protect()`` time, the source of the loaded training code (the
  ``__main__`` script and every imported module outside site-packages, the
  standard library and trainguard) is read with :mod:`ast`, never executed, and
  comparisons of world size, rank counts or host names with constants are
  reported (:mod:`._scaleast`). ``trainguard run`` runs the same analysis on the
  script and its local imports before starting the job.
* **canary**: ``trainguard run --canary-world-size 512 -- ...`` (or the
  ``canary_world_size`` option here) makes the job *see* a world size of 512
  while running few processes (:mod:`trainguard.sentinel.launcher._canary`), so
  a trigger that only fires at scale fires in a cheap run, in front of the other
  checks. From ``protect()`` the patch applies only to code that reads the world
  size afterwards; the launcher applies it before the script starts.

Options: ``min_severity`` (``"medium"``: lower findings are not alarms),
``canary_world_size`` (``0`` = off), ``max_files`` (``500``).

Example:
    >>> from trainguard.sentinel.checks.scale import scan_scale_source
    >>> [f.rule for f in scan_scale_source("import os\\nif int(os.environ['WORLD_SIZE']) > 256: pass\\n")]
    ['sentinel.scale.world-size-branch']
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

from trainguard.errors import ConfigError
from trainguard.findings import RULES, Checked, Finding, Report, Rule, Severity, Skipped
from trainguard.sentinel.checks._base import Check, Detection, SentinelContext, StepState, Trip
from trainguard.sentinel.checks._scaleast import (
    HOST_BRANCH,
    RANK_BRANCH,
    UNPARSABLE,
    WORLD_BRANCH,
    scan_source,
)
from trainguard.sentinel.config import CheckConfig

__all__ = [
    "CHECK",
    "HOST_BRANCH",
    "RANK_BRANCH",
    "UNPARSABLE",
    "WORLD_BRANCH",
    "ScaleCheck",
    "loaded_code_paths",
    "local_imports",
    "scan_scale_source",
    "scan_scale_triggers",
]

#: Source files larger than this are not parsed (reported, never passed).
MAX_SOURCE_BYTES = 4 * 1024 * 1024
#: At most this many alarms from the static pass (the rest are summarised).
MAX_ALARMS = 20

CAVEAT = (
    "Static analysis sees comparisons in source code; a trigger assembled at run time "
    "(eval, data-driven thresholds, native code) is only caught by the canary run."
)


def scan_scale_source(source: str, filename: str = "<string>") -> list[Finding]:
    """Scale-conditioned comparisons in ``source`` (parsed, never executed)."""
    return scan_source(source, filename)


def scan_scale_triggers(paths: Iterable[str | os.PathLike[str]]) -> Report:
    """Analyse Python files (directories: their ``*.py``) for scale-conditioned triggers."""
    report = Report(engine="sentinel.scale", caveats=[CAVEAT])
    for path in _expand(paths):
        subject = str(path)
        try:
            if path.stat().st_size > MAX_SOURCE_BYTES:
                report.add(
                    UNPARSABLE.finding(
                        subject, f"larger than {MAX_SOURCE_BYTES} bytes; not analysed"
                    )
                )
                continue
            source = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            report.add(UNPARSABLE.finding(subject, f"could not read: {exc}"))
            continue
        report.checked.append(Checked(subject, "python-source"))
        report.extend(scan_source(source, subject))
    return report


def _expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


def _library_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.add(str(Path(__file__).resolve().parents[2]))  # trainguard itself
    return tuple(sorted(str(Path(r).resolve()) for r in roots))


def loaded_code_paths(*, max_files: int = 500) -> list[Path]:
    """Source files of the running job's own code: ``__main__`` and non-library modules."""
    roots = _library_roots()
    found: dict[str, Path] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        # Some modules carry a made-up relative __file__ (torch._classes: "_classes.py").
        if not isinstance(file, str) or not file.endswith(".py") or not os.path.isabs(file):
            continue
        if not os.path.isfile(file):
            continue
        resolved = str(Path(file).resolve())
        if resolved.startswith(roots) or "site-packages" in resolved or "dist-packages" in resolved:
            continue
        found.setdefault(resolved, Path(resolved))
        if len(found) >= max_files:
            break
    return sorted(found.values())


def local_imports(script: str | os.PathLike[str], *, max_files: int = 200) -> list[Path]:
    """``script`` and the ``.py`` files it imports from its own directory tree, transitively."""
    root = Path(script).resolve().parent
    todo = [Path(script).resolve()]
    seen: dict[Path, None] = {}
    while todo and len(seen) < max_files:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen[path] = None
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, SyntaxError, ValueError):
            continue  # reported by scan_scale_triggers when it reads the file itself
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                base = root.joinpath(*name.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        todo.append(candidate.resolve())
    return list(seen)


_BY_ID: dict[str, Rule] = {r.id: r for r in (WORLD_BRANCH, RANK_BRANCH, HOST_BRANCH, UNPARSABLE)}


class ScaleCheck(Check):
    """See the module docstring."""

    name: ClassVar[str] = "scale"
    rule: ClassVar[Rule] = WORLD_BRANCH
    defaults: ClassVar[CheckConfig] = CheckConfig(
        options={"min_severity": "medium", "canary_world_size": 0, "max_files": 500}
    )

    def __init__(self, ctx: SentinelContext, config: CheckConfig) -> None:
        super().__init__(ctx, config)
        try:
            self.min_severity = Severity.parse(str(self.options["min_severity"]))
            canary = int(str(self.options["canary_world_size"]))
            max_files = int(str(self.options["max_files"]))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"scale: {exc}") from exc
        if canary < 0 or max_files < 1:
            raise ConfigError("scale: canary_world_size >= 0 and max_files >= 1")
        from trainguard.sentinel.launcher._canary import active_canary, install_canary

        self.canary = install_canary(canary) if canary else active_canary()
        if self.canary is not None:
            # Replaced on purpose (here or by the launcher's rank bootstrap): the
            # census must expect these functions, and verify they stay in place.
            ctx.own_patches.extend(self.canary.replaced)
        self.report = scan_scale_triggers(loaded_code_paths(max_files=max_files))
        self._pending: list[Finding] = self.report.at_least(self.min_severity)
        self._skipped: list[Skipped] = list(self.report.skipped)

    def _flush(self, state: StepState) -> None:
        pending, self._pending = self._pending, []
        for finding in sorted(pending, key=lambda f: -f.severity)[:MAX_ALARMS]:
            state.trip_host(
                self, finding.message, rule_id=finding.rule, severity=finding.severity.label,
                **dict(finding.evidence)
            )  # fmt: skip
        if len(pending) > MAX_ALARMS:
            state.trip_host(
                self,
                f"{len(pending) - MAX_ALARMS} more scale-conditioned comparisons (see `trainguard run` output)",
                rule_id=WORLD_BRANCH.id,
                severity=Severity.MEDIUM.label,
            )

    def on_forward(self, state: StepState) -> None:
        if self._pending:
            self._flush(state)

    def before_step(self, state: StepState) -> None:
        if self._pending:
            self._flush(state)

    def describe(self, trip: Trip) -> Sequence[Detection]:
        out = []
        for event in trip.events:
            evidence = dict(event.evidence)
            rule = _BY_ID.get(
                str(evidence.pop("rule_id", "")), RULES.get(WORLD_BRANCH.id, WORLD_BRANCH)
            )
            severity = Severity.parse(str(evidence.pop("severity", rule.severity.label)))
            if self.canary is not None:
                evidence["canary_world_size"] = self.canary.world_size
            out.append(
                Detection(event.message, evidence, step=event.step, severity=severity, rule=rule)
            )
        return out


CHECK = ScaleCheck
