"""Rules the scan engine itself raises (format-specific rules live with their format)."""

from __future__ import annotations

from trainguard.findings import Rule, Severity

UNKNOWN_FORMAT = Rule(
    "format.unknown",
    Severity.MEDIUM,
    "Content matches no known format",
    "trainguard could not identify this content, so it cannot say what loading it would do. "
    "Protocol 0/1 pickles have no magic bytes; an unidentified binary may still be loaded "
    "by pickle-based loaders. Identify the file before trusting it.",
)
PARSE_ERROR = Rule(
    "format.parse-error",
    Severity.HIGH,
    "Content could not be parsed to the end",
    "The parser for this format failed on the content. A loader may still accept it, and "
    "for pickle the opcodes before the error execute: a broken file is not a clean file.",
)
LIMIT_HIT = Rule(
    "limit.exceeded",
    Severity.HIGH,
    "A scan resource limit was reached",
    "Scanning stopped at a named resource limit (time, nesting, size, member count, "
    "decompression ratio). Content past the limit was not examined, so the file is not "
    "known to be safe.",
)
UNREADABLE = Rule(
    "file.unreadable",
    Severity.HIGH,
    "File could not be read",
    "The file exists but could not be opened or read; it was not scanned.",
)
