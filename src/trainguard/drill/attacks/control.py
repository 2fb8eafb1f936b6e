"""The clean control: the same job with no attack. It must raise no alarm at all."""

from __future__ import annotations

NAME = "control"
TITLE = "clean control run (no attack)"
INCIDENT = "none: the job as it runs every day, to show the checks stay quiet"
EXPECTED_CHECKS: tuple[str, ...] = ()
CONTROL = True
