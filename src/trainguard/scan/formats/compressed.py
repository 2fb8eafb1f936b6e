"""Compressed streams: gzip, bzip2, xz, lzma-alone, zlib and LZ4 frames.

joblib compresses its pickles with exactly these (``compress=('zlib'|'gzip'|
'bz2'|'lzma'|'xz'|'lz4', level)``), ``.pt.gz`` and ``.tar.gz`` checkpoints
are common, and a compressed stream hides its content from byte-pattern
scanners. The stream is decompressed incrementally under the scan limits
(member bytes, bomb ratio, total decompression, time), concatenated streams
included, and the output is scanned as whatever it is. Bytes after the last
stream are reported and scanned too.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import TYPE_CHECKING

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity
from trainguard.scan._decompress import BufferedDecoder, Decoder, ZlibDecoder, run
from trainguard.scan._lz4 import LZ4_MAGIC, Lz4FrameDecoder, is_lz4_frame

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "compressed"

CORRUPT = Rule(
    "compressed.corrupt",
    Severity.MEDIUM,
    "Compressed stream is damaged or truncated",
    "Decompression failed part-way. What decoded was scanned, but a loader that streams the "
    "content (pickle.load on a gzip file) acts on the bytes before the damage.",
)
TRAILING = Rule(
    "compressed.trailing-data",
    Severity.MEDIUM,
    "Bytes follow the compressed stream",
    "Data after the end of the compressed stream is ignored by most decompressors but may be "
    "read by another tool: a polyglot or a hidden payload. It was scanned separately.",
)

_GZIP = b"\x1f\x8b\x08"
_XZ = b"\xfd7zXZ\x00"
_BZIP2_BLOCK = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")


def _kind(head: bytes) -> str | None:
    """Which compression ``head`` starts with, from magic numbers and header checks."""
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_XZ):
        return "xz"
    if (
        head[:3] == b"BZh"
        and head[3:4].isdigit()
        and head[3:4] != b"0"
        and head[4:10] in _BZIP2_BLOCK
    ):
        return "bzip2"
    if is_lz4_frame(head):
        return "lz4"
    if _lzma_alone(head):
        return "lzma"
    # zlib: deflate method, 32 KiB window or less, header checksum (RFC 1950).
    if (
        len(head) >= 2
        and head[0] & 0x0F == 8
        and head[0] >> 4 <= 7
        and (head[0] * 256 + head[1]) % 31 == 0
        and not head[1] & 0x20
    ):
        return "zlib"
    return None


def _lzma_alone(head: bytes) -> bool:
    """An .lzma header as encoders write it (joblib's 'lzma'): 0x5d is also a pickle opcode."""
    if len(head) < 14 or head[0] >= 225:
        return False
    dict_size = int.from_bytes(head[1:5], "little")
    size = int.from_bytes(head[5:13], "little")
    # Dictionary sizes are 2^n or 2^n + 2^(n-1) (xz-utils, liblzma presets); the range
    # coder's first byte is always zero.
    n = dict_size.bit_length() - 1
    valid_dict = n >= 12 and dict_size in (1 << n, (1 << n) | (1 << (n - 1)))
    return valid_dict and (size == 2**64 - 1 or size < 1 << 48) and head[13] == 0


def _decoder(kind: str, memory: int) -> Decoder:
    if kind == "gzip":
        return ZlibDecoder(31)
    if kind == "zlib":
        return ZlibDecoder(15)
    if kind == "bzip2":
        return BufferedDecoder(bz2.BZ2Decompressor())
    # liblzma sizes its dictionary from the stream header: cap what it may allocate.
    if kind == "xz":
        return BufferedDecoder(lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=memory))
    if kind == "lzma":
        return BufferedDecoder(lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=memory))
    return Lz4FrameDecoder()


def _zlib_trial(head: bytes) -> bool:
    """Decode the first bytes: zlib's two-byte header alone matches too much text."""
    try:
        return bool(ZlibDecoder(15).decompress(head, 64))
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        return False


def detect(data: memoryview, filename: str | None) -> bool:
    head = bytes(data[:256])
    kind = _kind(head)
    return kind is not None and (kind != "zlib" or _zlib_trial(head))


def _restarts(kind: str, rest: bytes) -> bool:
    """Whether ``rest`` begins another stream of the same kind (gzip members, bzip2 streams...)."""
    if kind in ("zlib", "lzma"):
        return False
    return _kind(rest[:64]) == kind or (kind == "lz4" and rest.startswith(LZ4_MAGIC))


def scan(data: memoryview, ctx: ScanContext) -> None:
    kind = _kind(bytes(data[:64]))
    if kind is None:  # pragma: no cover - detect guarantees it
        return
    out = bytearray()
    pos = 0
    cap = ctx.limits.member_bytes + 1
    streams = 0
    while True:
        streams += 1
        decoder = _decoder(kind, ctx.limits.decoder_memory_bytes)
        result = run(decoder, data, pos, cap, out, ctx)
        if result.error is not None and "Memory usage limit" in result.error:
            limit = ctx.limits.decoder_memory_bytes
            raise LimitExceeded("decoder_memory_bytes", f">{limit}", limit, subject=ctx.subject)
        if result.error is not None or not result.complete:
            reason = result.error or "the stream ends before its end marker"
            ctx.add(
                CORRUPT,
                f"{kind} stream {streams} damaged after {len(out)} decompressed bytes ({reason})",
                kind=kind,
            )
            break
        rest_start = result.pos - len(decoder.unused_data)
        rest = bytes(data[rest_start : rest_start + 64])
        if not rest or (rest.strip(b"\x00") == b"" and rest_start + len(rest) == len(data)):
            break  # end of file (or zero padding, as tape-style gzip writers leave)
        if _restarts(kind, rest):
            pos = rest_start
            continue
        tail = data[rest_start:]
        ctx.add(
            TRAILING,
            f"{len(tail)} bytes follow the {kind} stream",
            kind=kind,
            offset=rest_start,
        )
        ctx.scan_nested(tail, "<trailing>", None)
        break
    if out:
        ctx.scan_nested(memoryview(out), f"<{kind}>", None)
    elif _also_pickle(data):
        # Nothing decoded: magic numbers that are also pickle opcodes ('B', ']', 'x' for
        # protocols 0-3) must not let a pickle pass as a broken stream.
        ctx.scan_nested(data, "<undecodable>", "pickle")


def _also_pickle(data: memoryview) -> bool:
    from trainguard.scan.formats import by_name

    fmt = by_name("pickle")
    return fmt is not None and fmt.detect(data, None)
