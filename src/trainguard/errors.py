"""The one error hierarchy of trainguard.

Every error raised on purpose by trainguard derives from :class:`TrainguardError`
and can explain itself to a person through :meth:`TrainguardError.diagnostics`:
what object was involved, what was expected, what was found, and what to do next.

Scanning *reports* (it returns a :class:`~trainguard.findings.Report`);
verification *raises* (an :class:`IntegrityError` subclass), so no caller can
ignore a failed check by forgetting to look at a boolean.

Foreign exceptions (``sqlite3``, ``psycopg``, ``zipfile``, ``torch``...) are
wrapped at the boundary with ``raise SomeTrainguardError(...) from exc``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "IntegrityError",
    "LedgerIntegrityError",
    "LimitExceeded",
    "LoadError",
    "ScanError",
    "StorageError",
    "TrainguardError",
    "UnsafeArtifactError",
    "UsageError",
]


class TrainguardError(Exception):
    """Root of every error trainguard raises on purpose.

    Args:
        message: one line saying what went wrong.
        subject: the object involved (a path, a run id, a tensor name).
        expected: what trainguard expected to find.
        found: what it found instead.
        hint: the next step for the person reading the error.
    """

    exit_code: int = 2

    def __init__(
        self,
        message: str,
        *,
        subject: str | None = None,
        expected: str | None = None,
        found: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.subject = subject
        self.expected = expected
        self.found = found
        self.hint = hint

    def diagnostics(self) -> str:
        """A multi-line explanation for people: object, expectation, finding, next step."""
        lines = [f"error: {self.message}"]
        if self.subject:
            lines.append(f"  subject:  {self.subject}")
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        if self.found:
            lines.append(f"  found:    {self.found}")
        if self.hint:
            lines.append(f"  hint:     {self.hint}")
        return "\n".join(lines)


class UsageError(TrainguardError):
    """The command line or API was called with arguments that cannot work."""


class ConfigError(TrainguardError):
    """A configuration value or file is malformed."""


class ScanError(TrainguardError):
    """A scan could not run at all (not: the scanned content is bad; that is a finding)."""


class LimitExceeded(ScanError):
    """A named resource limit was reached while parsing untrusted input.

    Scanners catch this and turn it into a finding: a limit hit is never a pass.
    """

    def __init__(self, limit: str, value: object, maximum: object, *, subject: str | None = None):
        super().__init__(
            f"limit {limit} exceeded ({value} > {maximum})",
            subject=subject,
            expected=f"{limit} <= {maximum}",
            found=str(value),
            hint="the input is unusually large or adversarial; inspect it by hand",
        )
        self.limit = limit
        self.value = value
        self.maximum = maximum


class LoadError(TrainguardError):
    """A safe loader could not load an artifact whose scan it accepted (damaged or unsupported)."""


class StorageError(TrainguardError):
    """A storage backend (SQLite, PostgreSQL, the file system) failed."""


class IntegrityError(TrainguardError):
    """Verification failed: something is not what it claims to be.

    ``exit_code`` is 1 because, for the CLI, a failed verification is a finding,
    not a crash.
    """

    exit_code = 1


class LedgerIntegrityError(IntegrityError):
    """The ledger's log, tree, signed heads, proofs or derived tables do not check out."""


class UnsafeArtifactError(IntegrityError):
    """A safe loader refused an artifact because its scan found a problem.

    Attributes:
        report: the :class:`~trainguard.findings.Report` that caused the refusal.
    """

    def __init__(self, message: str, *, report: object, subject: str | None = None) -> None:
        super().__init__(
            message,
            subject=subject,
            expected="an artifact whose scan has no finding at or above the threshold",
            found=message,
            hint="run `trainguard scan` on it for the full evidence; load only what you trust",
        )
        self.report = report
