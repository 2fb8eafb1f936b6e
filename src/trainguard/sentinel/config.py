"""Configuration of the sentinel: one frozen dataclass, plain data, validated on construction.

A :class:`SentinelConfig` says how often the sentinel may talk to the host
(``log_every``), where alarms go, and, per check, a :class:`CheckConfig`:
whether it runs, what it does when it trips (:class:`Action`), how often it runs
(``every``) and its check-specific ``options``. Each check module declares its
own defaults (``DEFAULTS``); a config only holds overrides, merged by
:meth:`SentinelConfig.for_check`. Nothing here is ever executed: a config read
from JSON or TOML goes through :meth:`SentinelConfig.from_mapping`.

Example:
    >>> from trainguard.sentinel.config import SentinelConfig
    >>> cfg = SentinelConfig.from_mapping({"log_every": 10, "checks": {"updates": "veto"}})
    >>> cfg.checks["updates"].action.value
    'veto'
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from trainguard.errors import ConfigError

__all__ = ["Action", "CheckConfig", "SentinelConfig"]

#: Option values are plain data only.
OptionValue = bool | int | float | str | tuple[str, ...]

ENV_SPOOL_DIR = "TRAINGUARD_SPOOL_DIR"


class Action(str, enum.Enum):
    """What the sentinel does when a check trips.

    * ``warn``: record the alarm (spool, console, ledger, ``on_alarm``); training goes on.
      Costs no host sync outside log steps.
    * ``veto``: the step is not committed on any rank (all-ranks OR vote before
      ``optimizer.step``; for checks that decide after the step, the step is rolled
      back). Costs one host sync per step (two for post-step checks).
    * ``halt``: record the alarm, then raise :class:`~trainguard.sentinel.SentinelHalt`
      on every rank at the same step. Same sync cost as ``veto``.
    """

    WARN = "warn"
    VETO = "veto"
    HALT = "halt"

    @classmethod
    def parse(cls, value: str | Action) -> Action:
        if isinstance(value, Action):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(a.value for a in cls)
            raise ConfigError(
                f"unknown sentinel action {value!r}",
                expected=f"one of {names}",
                found=repr(value),
            ) from None


def _freeze(options: Mapping[str, Any]) -> Mapping[str, OptionValue]:
    frozen: dict[str, OptionValue] = {}
    for key, value in options.items():
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, tuple):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"option {key!r}: lists may only hold strings", found=repr(value))
        elif not isinstance(value, bool | int | float | str):
            raise ConfigError(
                f"option {key!r} is not plain data",
                expected="bool, int, float, str or a list of str",
                found=type(value).__name__,
            )
        frozen[str(key)] = value
    return MappingProxyType(frozen)


@dataclass(frozen=True)
class CheckConfig:
    """How one check runs.

    Attributes:
        enabled: run the check at all.
        action: what a trip does (:class:`Action`).
        every: run the check's per-step work every this many optimizer steps
            (cheap bookkeeping may still run every step; see the check's docstring).
        options: check-specific knobs; each check documents and validates its own.
    """

    enabled: bool = True
    action: Action = Action.WARN
    every: int = 1
    options: Mapping[str, OptionValue] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", Action.parse(self.action))
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            raise ConfigError(
                "check cadence 'every' must be a positive integer", found=repr(self.every)
            )
        object.__setattr__(self, "options", _freeze(self.options))

    def integer(self, name: str, *, minimum: int | None = None) -> int:
        """Option ``name`` as an int (a ``ConfigError`` when it is not one, or below ``minimum``)."""
        value = self.options[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (minimum is not None and value < minimum)
        ):
            raise ConfigError(f"option {name!r} must be an integer >= {minimum}", found=repr(value))
        return value

    def number(self, name: str, *, minimum: float | None = None) -> float:
        """Option ``name`` as a float (ints accepted)."""
        value = self.options[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (minimum is not None and value < minimum)
        ):
            raise ConfigError(f"option {name!r} must be a number >= {minimum}", found=repr(value))
        return float(value)

    def flag(self, name: str) -> bool:
        """Option ``name`` as a bool."""
        value = self.options[name]
        if not isinstance(value, bool):
            raise ConfigError(f"option {name!r} must be true or false", found=repr(value))
        return value

    def merged(self, override: CheckConfig | None) -> CheckConfig:
        """This config (a check's defaults) with ``override``'s fields and options on top."""
        if override is None:
            return self
        options = dict(self.options)
        unknown = set(override.options) - set(options)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {sorted(unknown)}",
                expected=f"one of {sorted(options)}",
                hint="see the check module's docstring for its options",
            )
        options.update(override.options)
        return CheckConfig(override.enabled, override.action, override.every, options)

    @classmethod
    def from_value(cls, value: CheckConfig | Mapping[str, Any] | str | bool) -> CheckConfig:
        """Build from data: ``"veto"``, ``False`` (disabled), or a mapping of the fields."""
        if isinstance(value, CheckConfig):
            return value
        if isinstance(value, bool):
            return cls(enabled=value)
        if isinstance(value, str):
            return cls(action=Action.parse(value))
        if not isinstance(value, Mapping):
            raise ConfigError("a check config must be a mapping, an action name or a bool")
        known = {"enabled", "action", "every", "options"}
        extra = {k: v for k, v in value.items() if k not in known}
        options = dict(value.get("options", {}))
        options.update(extra)  # {"action": "veto", "k": 512} is shorthand for options={"k": 512}
        return cls(
            enabled=bool(value.get("enabled", True)),
            action=Action.parse(value.get("action", Action.WARN)),
            every=value.get("every", 1),
            options=options,
        )


@dataclass(frozen=True)
class SentinelConfig:
    """Everything that tunes a :class:`~trainguard.sentinel.Sentinel`.

    Attributes:
        log_every: alarms are read back from the device (a host sync) every this many
            steps, and on :meth:`Sentinel.flush`/``sentinel.alarms``/``close``. Detection
            itself happens on the device at every step; the alarm carries the step it
            was detected at.
        checks: per-check overrides by check name (``"weights"``, ``"updates"``...).
        spool_dir: where the append-only alarm spool goes (default
            ``$TRAINGUARD_SPOOL_DIR`` or ``./.trainguard/alarms``).
        fsync: ``"always"`` fsyncs every alarm line (default: alarms are rare and the
            spool is evidence); ``"never"`` leaves it to the OS.
        console: print alarms to the ``trainguard.sentinel`` logger.
        console_burst, console_interval_s: rate limit of console lines (a burst, then
            one line per interval; suppressed lines are counted and reported).
        ledger: also append alarms to the trainguard ledger when one is configured.
        forward_verify: ``"first"`` verifies weights before the first training forward
            after each step; ``"every"`` before every training forward (gradient
            accumulation); ``"off"`` only before the step.
    """

    log_every: int = 50
    checks: Mapping[str, CheckConfig] = field(default_factory=lambda: MappingProxyType({}))
    spool_dir: str | None = None
    fsync: str = "always"
    console: bool = True
    console_burst: int = 5
    console_interval_s: float = 10.0
    ledger: bool = True
    forward_verify: str = "first"

    def __post_init__(self) -> None:
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise ConfigError("log_every must be a positive integer", found=repr(self.log_every))
        checks = {str(k): CheckConfig.from_value(v) for k, v in dict(self.checks).items()}
        object.__setattr__(self, "checks", MappingProxyType(checks))
        if self.fsync not in ("always", "never"):
            raise ConfigError("fsync must be 'always' or 'never'", found=repr(self.fsync))
        if self.forward_verify not in ("first", "every", "off"):
            raise ConfigError(
                "forward_verify must be 'first', 'every' or 'off'", found=repr(self.forward_verify)
            )
        if self.console_burst < 0 or self.console_interval_s < 0:
            raise ConfigError("console rate limits must be >= 0")

    def for_check(self, name: str, defaults: CheckConfig) -> CheckConfig:
        """The effective config of check ``name``: its ``defaults`` with overrides merged."""
        try:
            return defaults.merged(self.checks.get(name))
        except ConfigError as exc:
            raise ConfigError(
                f"check {name!r}: {exc.message}", expected=exc.expected, hint=exc.hint
            ) from exc

    def resolved_spool_dir(self) -> str:
        return (
            self.spool_dir or os.environ.get(ENV_SPOOL_DIR) or os.path.join(".trainguard", "alarms")
        )

    def with_options(self, **options: Any) -> SentinelConfig:
        """A copy with top-level fields replaced (``checks`` entries are merged, not replaced)."""
        names = {f.name for f in fields(self)}
        unknown = set(options) - names
        if unknown:
            raise ConfigError(
                f"unknown sentinel option(s) {sorted(unknown)}", expected=f"one of {sorted(names)}"
            )
        if "checks" in options:
            merged = dict(self.checks)
            merged.update({str(k): CheckConfig.from_value(v) for k, v in options["checks"].items()})
            options["checks"] = merged
        return replace(self, **options)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SentinelConfig:
        """Build and validate from plain data (a parsed JSON/TOML table)."""
        return cls().with_options(**dict(data))
