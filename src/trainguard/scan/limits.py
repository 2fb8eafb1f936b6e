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
    #: Output a member may reach before ``decompression_ratio`` applies (small, highly
    #: compressible members such as text or zero-filled arrays are normal).
    decompression_slack_bytes: int = 64 * MiB
    #: Memory a decompressor may set aside for its own state (an LZMA dictionary is
    #: sized by the stream's header; xz -9 needs 64 MiB).
    decoder_memory_bytes: int = 256 * MiB
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
    #: Bytes of a ``.npy`` header parsed as a Python literal (numpy itself refuses more
    #: than 10 000 unless allow_pickle=True; the literal's syntax tree grows with it).
    npy_header_bytes: int = 1 * MiB
    #: Entries in a metadata table (GGUF key/values, safetensors tensors, ONNX initializers).
    metadata_entries: int = 1_000_000
    #: Nesting of structured metadata: protobuf messages and ONNX subgraphs, GGUF arrays,
    #: Keras configs (nested models), JSON objects.
    message_depth: int = 100
    #: Characters of one chat template given to the Jinja parser; larger ones are only
    #: pattern-scanned (and reported: real templates are a few KiB).
    template_chars: int = 1 * MiB
    #: Files visited in one directory walk.
    directory_files: int = 1_000_000
    #: Findings kept per top-level file; more are counted, not listed.
    findings_per_file: int = 500


DEFAULT_LIMITS = ScanLimits()
