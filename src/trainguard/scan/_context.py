"""The context a format scanner works in: its subject, limits, sink and nesting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from trainguard.errors import LimitExceeded
from trainguard.findings import MEMBER_SEP, Finding, Rule, Severity
from trainguard.scan.limits import ScanLimits

__all__ = ["ScanContext"]


#: The engine's entry point for embedded content: (data, child context, hint) -> format.
NestedScanner = Callable[[memoryview, "ScanContext", "str | None"], "str | None"]


class _Shared:
    """State shared by a top-level file and everything nested inside it."""

    __slots__ = ("deadline", "decompressed", "dropped", "findings", "formats", "limits")

    def __init__(self, limits: ScanLimits, deadline: float) -> None:
        self.limits = limits
        self.deadline = deadline
        self.findings: list[Finding] = []
        self.dropped = 0
        self.decompressed = 0
        self.formats: list[tuple[str, str]] = []


class ScanContext:
    """Where a format module reports findings and asks for nested scans.

    A context is made by the engine for each top-level file; containers call
    :meth:`child` / :meth:`scan_nested` for their members, which share the
    file's deadline, decompression budget and finding list.
    """

    def __init__(
        self,
        subject: str,
        limits: ScanLimits,
        *,
        nested: NestedScanner | None = None,
        depth: int = 0,
        shared: _Shared | None = None,
        filename: str | None = None,
    ) -> None:
        self.subject = subject
        self.limits = limits
        self.depth = depth
        #: The file name of the subject (last path or member component), if any.
        self.filename = filename
        self._nested = nested
        self._shared = shared or _Shared(limits, time.monotonic() + limits.file_seconds)

    # -- reporting -------------------------------------------------------
    def add(
        self, rule: Rule, message: str, *, severity: Severity | None = None, **evidence: Any
    ) -> None:
        """Record a finding of ``rule`` about this context's subject."""
        shared = self._shared
        if len(shared.findings) >= self.limits.findings_per_file:
            shared.dropped += 1
            return
        shared.findings.append(rule.finding(self.subject, message, severity=severity, **evidence))

    @property
    def findings(self) -> list[Finding]:
        return self._shared.findings

    @property
    def dropped(self) -> int:
        """Findings not kept because of ``limits.findings_per_file``."""
        return self._shared.dropped

    @property
    def formats(self) -> list[tuple[str, str]]:
        """(subject, format) for every buffer detected under this file, nested ones too."""
        return self._shared.formats

    def note_format(self, name: str) -> None:
        self._shared.formats.append((self.subject, name))

    # -- limits ----------------------------------------------------------
    def check_time(self) -> None:
        """Raise :class:`LimitExceeded` once the file's time budget is spent.

        Parsers call this from their loops; it is cheap (one clock read).
        """
        now = time.monotonic()
        if now > self._shared.deadline:
            raise LimitExceeded(
                "file_seconds", "exceeded", self.limits.file_seconds, subject=self.subject
            )

    def charge_decompressed(self, nbytes: int) -> None:
        """Account for ``nbytes`` produced by decompression under this file."""
        shared = self._shared
        shared.decompressed += nbytes
        if shared.decompressed > self.limits.total_decompressed_bytes:
            raise LimitExceeded(
                "total_decompressed_bytes",
                shared.decompressed,
                self.limits.total_decompressed_bytes,
                subject=self.subject,
            )

    # -- nesting ---------------------------------------------------------
    def child(self, member: str) -> ScanContext:
        """A context for ``member`` inside this subject, one level deeper.

        Raises :class:`LimitExceeded` past ``limits.nesting_depth``.
        """
        depth = self.depth + 1
        if depth > self.limits.nesting_depth:
            raise LimitExceeded(
                "nesting_depth", depth, self.limits.nesting_depth, subject=self.subject
            )
        return ScanContext(
            f"{self.subject}{MEMBER_SEP}{member}",
            self.limits,
            nested=self._nested,
            depth=depth,
            shared=self._shared,
            filename=member.rsplit("/", 1)[-1],
        )

    def scan_nested(
        self, data: bytes | memoryview, member: str, hint: str | None = None
    ) -> str | None:
        """Detect the format of embedded ``data`` and scan it as ``member``.

        ``hint`` names a format to prefer when its ``detect`` agrees. Returns
        the format name used, or ``None`` when the content matched no format
        (which the engine reports as a finding). Limit hits and parser errors
        inside the member become findings on the member; they do not abort the
        container's scan.
        """
        if self._nested is None:  # pragma: no cover - the engine always sets it
            raise RuntimeError("scan_nested called on a context without an engine")
        try:
            child = self.child(member)
        except LimitExceeded as exc:
            from trainguard.scan._rules import LIMIT_HIT

            self.add(LIMIT_HIT, f"not scanned: {exc.message}", limit=exc.limit, member=member)
            return None
        view = data if isinstance(data, memoryview) else memoryview(data)
        return self._nested(view, child, hint)
