"""Every resource limit the scanner enforces, as named constants in one place.

The scanner parses adversarial input. Each limit bounds time or memory; hitting
one raises :class:`~trainguard.errors.LimitExceeded`, which the engine turns
into a ``limit.*`` finding: a limit hit is never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "ScanLimits"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class ScanLimits:
    """Per-file limits. The defaults suit multi-GB checkpoints on a laptop."""

    #: Wall-clock seconds one top-level file may take, nested content included.
    file_seconds: float = 120.0
    #: How deep containers may nest (zip in zip, pickle in bytes in pickle...).
    nesting_depth: int = 8
    #: Members in one archive (zip, tar, npz).
    archive_members: int = 100_000
    #: Bytes one archive member may decompress to.
    member_bytes: int = 8 * GiB
    #: Decompressed/compressed ratio beyond which a member is a zip bomb.
    decompression_ratio: float = 250.0
    #: Bytes decompressed from one top-level file in total, all members included.
    total_decompressed_bytes: int = 16 * GiB
    #: Pickle opcodes executed symbolically in one stream.
    pickle_opcodes: int = 20_000_000
    #: Memo entries in one pickle stream.
    pickle_memo: int = 5_000_000
    #: Symbolic stack depth (including marks) in one pickle stream.
    pickle_stack: int = 1_000_000
    #: Pickle streams read back to back from one buffer.
    pickle_streams: int = 64
    #: Bytes of a JSON header (safetensors, GGUF strings, configs) parsed at once.
    json_header_bytes: int = 100 * MiB
    #: Entries in a metadata table (GGUF key/values, safetensors tensors, ONNX initializers).
    metadata_entries: int = 1_000_000
    #: Files visited in one directory walk.
    directory_files: int = 1_000_000
    #: Findings kept per top-level file; more are counted, not listed.
    findings_per_file: int = 500


DEFAULT_LIMITS = ScanLimits()
