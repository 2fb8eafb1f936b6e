"""Human-readable text output."""

from __future__ import annotations

from typing import Any

from trainguard.findings import Report, Severity

_COLORS = {
    Severity.CRITICAL: "\033[1;31m",
    Severity.HIGH: "\033[31m",
    Severity.MEDIUM: "\033[33m",
    Severity.LOW: "\033[36m",
    Severity.INFO: "\033[2m",
}
_RESET = "\033[0m"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _evidence(evidence: dict[str, Any], verbose: bool) -> str:
    parts = []
    for key, value in evidence.items():
        text = str(value)
        if not verbose and len(text) > 120:
            text = text[:117] + "..."
        parts.append(f"{key}={text}")
    return ", ".join(parts)


def _owner(subject: str, checked: set[str]) -> str | None:
    """The checked subject a finding's subject belongs to (itself, a member, a file under it)."""
    if subject in checked:
        return subject
    for sep in ("::", "/"):
        head = subject
        while sep in head:
            head = head.rsplit(sep, 1)[0]
            if head in checked:
                return head
    return None


def _clean_count(report: Report) -> int | None:
    """Checked subjects without findings; None when a finding cannot be attributed to one."""
    checked = {c.subject for c in report.checked}
    flagged: set[str] = set()
    for f in report.findings:
        owner = _owner(f.subject, checked)
        if owner is None:
            return None
        flagged.add(owner)
    return len(checked - flagged)


def render_text(report: Report, *, color: bool = False, verbose: bool = False) -> str:
    """A report a person reads top to bottom: worst findings first, then a summary."""
    out: list[str] = []
    for f in report.sorted_findings():
        label = f"{f.severity.label.upper():8}"
        if color:
            label = f"{_COLORS[f.severity]}{label}{_RESET}"
        out.append(f"{label} {f.rule}  {f.subject}")
        out.append(f"         {f.message}")
        if f.evidence:
            out.append(f"         evidence: {_evidence(dict(f.evidence), verbose)}")
    for s in report.skipped:
        out.append(f"SKIPPED  {s.subject}: {s.reason}")
    if out:
        out.append("")
    clean = _clean_count(report)
    counts: dict[str, int] = {}
    for f in report.findings:
        counts[f.severity.label] = counts.get(f.severity.label, 0) + 1
    by_sev = ", ".join(
        f"{counts[s.label]} {s.label}" for s in reversed(Severity) if s.label in counts
    )
    size = report.stats.get("bytes")
    seconds = report.stats.get("seconds")
    head = f"{report.engine}: checked {len(report.checked)}"
    if isinstance(size, int):
        head += f" ({_fmt_bytes(size)})"
    if isinstance(seconds, (int, float)):
        head += f" in {seconds:.2f} s"
    out.append(f"{head}; {len(report.findings)} findings" + (f" ({by_sev})" if by_sev else ""))
    if clean is not None:
        out.append(f"{clean} clean, {len(report.skipped)} skipped.")
    else:
        out.append(f"{len(report.skipped)} skipped.")
    if verbose and report.caveats:
        out.append("What a clean result does not prove:")
        out.extend(f"  - {c}" for c in report.caveats)
    return "\n".join(out) + "\n"
