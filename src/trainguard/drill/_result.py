"""The result of one drill: detected or not, by which check, how fast, with what evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DrillResult"]


@dataclass(frozen=True)
class DrillResult:
    """What one drill showed.

    Attributes:
        name, title: the drill.
        detected: an expected check raised an alarm about the attack. For the clean
            control: whether anything raised an alarm at all (a false positive).
        checks: the checks that caught it, in the order they did (for the control:
            the checks that raised anything).
        steps_to_detection: optimizer steps from the attack taking effect to its
            first detection (0: the same step, or before the job started); None when
            undetected.
        evidence: a short summary of the first detection and the drill's own facts.
        run_id: the run's id in the ledger.
        seconds: wall time of the drill, job and checks included.
        marker_fired: for drills with a harmless payload, whether it ran in the
            protected job (its marker file exists); None for drills without one.
        error: why the drill itself failed (the job crashed, timed out...), else None.
        expected_checks: the checks that should catch it.
        bound: the most steps a detection may take for this drill.
        also: other checks that raised alarms during the drill.
        control: this is the clean control (passes when nothing is raised).
    """

    name: str
    title: str
    detected: bool
    checks: tuple[str, ...]
    steps_to_detection: int | None
    evidence: Mapping[str, Any]
    run_id: str
    seconds: float
    marker_fired: bool | None = None
    error: str | None = None
    expected_checks: tuple[str, ...] = ()
    bound: int | None = None
    also: tuple[str, ...] = ()
    control: bool = False

    @property
    def ok(self) -> bool:
        """The drill went as trainguard promises: caught within its bound, or, for the
        control, nothing raised; the job did what was planned and no payload ran."""
        if self.error is not None:
            return False
        if self.control:
            return not self.detected
        if not self.detected or self.marker_fired:
            return False
        return self.bound is None or (
            self.steps_to_detection is not None and self.steps_to_detection <= self.bound
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``trainguard drill --json``)."""
        return {
            "name": self.name,
            "title": self.title,
            "ok": self.ok,
            "detected": self.detected,
            "checks": list(self.checks),
            "steps_to_detection": self.steps_to_detection,
            "bound": self.bound,
            "expected_checks": list(self.expected_checks),
            "also": list(self.also),
            "evidence": dict(self.evidence),
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "marker_fired": self.marker_fired,
            "error": self.error,
            "control": self.control,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DrillResult:
        """Rebuild (and validate) a result from :meth:`to_dict` output."""
        try:
            steps = data["steps_to_detection"]
            bound = data.get("bound")
            return cls(
                name=str(data["name"]),
                title=str(data["title"]),
                detected=bool(data["detected"]),
                checks=tuple(str(c) for c in data["checks"]),
                steps_to_detection=None if steps is None else int(steps),
                evidence=dict(data.get("evidence") or {}),
                run_id=str(data["run_id"]),
                seconds=float(data["seconds"]),
                marker_fired=data.get("marker_fired"),
                error=data.get("error"),
                expected_checks=tuple(str(c) for c in data.get("expected_checks", ())),
                bound=None if bound is None else int(bound),
                also=tuple(str(c) for c in data.get("also", ())),
                control=bool(data.get("control", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed drill result: {exc!r}") from exc
