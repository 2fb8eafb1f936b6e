"""The ``zip.*`` rules the tolerant zip reader (:mod:`trainguard.scan._zip`) reports.

High severity for what lets a payload past other scanners (a name or CRC that
zipfile rejects but torch accepts, entries only one reader sees), medium for
oddities that no honest writer produces.
"""

from __future__ import annotations

from trainguard.findings import Rule, Severity

NAME_MISMATCH = Rule(
    "zip.name-mismatch",
    Severity.HIGH,
    "Zip member names differ between local and central headers",
    "torch (miniz) looks members up by their central-directory name and ignores the local "
    "header's name; Python's zipfile refuses the member. Scanners built on zipfile crash or "
    "skip it while torch.load loads it (GHSA-7q5r-7gvp-wc82, CVE-2025-1944).",
)
HIDDEN_ENTRY = Rule(
    "zip.hidden-entry",
    Severity.HIGH,
    "Zip entry present only as a local header",
    "A local file header and its data are in the archive but the central directory does not "
    "list them. Directory-based readers (torch, zipfile) ignore the entry; streaming readers "
    "and repair tools extract it. Nothing legitimate writes one.",
)
CRC_MISMATCH = Rule(
    "zip.crc-mismatch",
    Severity.MEDIUM,
    "Zip member fails its CRC check",
    "torch is built with miniz CRC checks disabled and loads the member anyway; Python's "
    "zipfile raises BadZipFile, so scanners built on it stop before the payload "
    "(GHSA-mjqp-26hc-grxg, CVE-2025-10156). High severity when the member is a pickle.",
)
DUPLICATE_NAME = Rule(
    "zip.duplicate-name",
    Severity.HIGH,
    "Zip archive has several members with the same name",
    "torch reads the first of duplicate names (matched case-insensitively), zipfile the last: "
    "a scanner can inspect one copy while the loader runs the other. Every copy was scanned.",
)
AMBIGUOUS_DIRECTORY = Rule(
    "zip.ambiguous-directory",
    Severity.HIGH,
    "Zip readers disagree about the central directory",
    "The end record and the central directory disagree (entry count, or where the end record "
    "is), so miniz (torch) and Python's zipfile list different members or only one of them "
    "can open the archive. Every member either reader would see was scanned.",
)
OVERLAP = Rule(
    "zip.overlapping-entries",
    Severity.MEDIUM,
    "Zip entries overlap",
    "Two members (or a member and the central directory) share bytes. Overlapping entries "
    "are the building block of non-recursive zip bombs and of polyglot archives.",
)
UNACCOUNTED = Rule(
    "zip.unaccounted-data",
    Severity.MEDIUM,
    "Zip archive carries bytes outside its members",
    "Bytes before the first entry, between entries or after the end record belong to no "
    "member: a polyglot (a file that is also another format) or a hidden payload.",
)
ENCRYPTED = Rule(
    "zip.encrypted",
    Severity.MEDIUM,
    "Zip member is flagged encrypted or patched",
    "Encryption and patch flags make zipfile refuse the member (older picklescan crashed on "
    "them, GHSA-w8jq-xcqf-f792, CVE-2025-1945). The bytes were scanned as if unencrypted; "
    "really encrypted content cannot be inspected.",
)
UNSUPPORTED_METHOD = Rule(
    "zip.unsupported-method",
    Severity.MEDIUM,
    "Zip member uses an unsupported compression method",
    "The member's compression method is not stored, deflate, bzip2 or lzma, so its content "
    "was not examined. Another reader may still decode it.",
)
HEADER_MISMATCH = Rule(
    "zip.header-mismatch",
    Severity.MEDIUM,
    "Zip local and central headers disagree",
    "The local header gives a different method, flags, size or CRC than the central "
    "directory. Streaming readers trust the local header, directory readers the central one.",
)
CORRUPT = Rule(
    "zip.corrupt",
    Severity.MEDIUM,
    "Zip structure is damaged",
    "A header, size or compressed stream is invalid or truncated. Loaders may fail, or read "
    "a prefix of the member (pickle opcodes before the damage still execute).",
)
NO_DIRECTORY = Rule(
    "zip.no-central-directory",
    Severity.MEDIUM,
    "Zip archive has no usable end of central directory",
    "The end record is missing or unreadable, so directory-based readers cannot open the "
    "archive; streaming readers still extract its local entries, which were scanned.",
)
