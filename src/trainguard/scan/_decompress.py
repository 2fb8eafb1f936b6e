"""Bounded, incremental decompression: zip members and compressed streams.

Input goes in small chunks and output is capped by the caller (a zip member's
declared size plus one byte, to notice a header that lies). After every step
``ScanLimits.member_bytes``, ``decompression_ratio`` (past
``decompression_slack_bytes``), the file's time budget and its total
decompression budget are checked, so a bomb raises
:class:`~trainguard.errors.LimitExceeded` long before it fills memory.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from typing import TYPE_CHECKING, Protocol

from trainguard.errors import LimitExceeded

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

__all__ = ["Decoder", "Inflated", "check_growth", "decoder_for", "inflate", "run"]

#: Input fed to a decompressor per step.
_INPUT_CHUNK = 64 * 1024
#: Output asked of a decompressor per step: limits are checked at least this often.
_OUTPUT_STEP = 4 * 1024 * 1024


class Decoder(Protocol):
    """The common surface of the stdlib decompressors (and the LZ4 frame decoder)."""

    @property
    def needs_input(self) -> bool: ...
    @property
    def eof(self) -> bool: ...
    @property
    def pending(self) -> int: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes: ...


class ZlibDecoder:
    """Deflate (raw, zlib or gzip per ``wbits``); zlib's unconsumed tail is fed back first."""

    def __init__(self, wbits: int = -15) -> None:
        self._d = zlib.decompressobj(wbits)
        self._tail = b""

    @property
    def needs_input(self) -> bool:
        return not self._tail

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def pending(self) -> int:
        return len(self._tail)

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        out = self._d.decompress(self._tail or data, max_length)
        self._tail = self._d.unconsumed_tail
        return out


class BufferedDecoder:
    """bzip2 and lzma: the decompressor keeps unconsumed input itself."""

    def __init__(self, d: bz2.BZ2Decompressor | lzma.LZMADecompressor) -> None:
        self._d = d

    @property
    def needs_input(self) -> bool:
        return self._d.needs_input

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def pending(self) -> int:
        return 0

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        return self._d.decompress(bytes(data), max_length)


def decoder_for(method: int, raw: memoryview, memory: int) -> tuple[Decoder, int]:
    """A decoder for zip ``method`` and the offset where its stream starts in ``raw``.

    Raises :class:`LimitExceeded` (``decoder_memory_bytes``) when an LZMA header
    asks for a dictionary larger than ``memory``: liblzma allocates it up front.
    """
    if method == 8:
        return ZlibDecoder(), 0
    if method == 12:
        return BufferedDecoder(bz2.BZ2Decompressor()), 0
    if method == 14:
        # APPNOTE 5.8.8: version (2 bytes), properties size (2), properties, raw LZMA1.
        _version, psize = struct.unpack_from("<HH", raw, 0)
        props = bytes(raw[4 : 4 + psize])
        dict_size = int.from_bytes(props[1:5], "little")
        if dict_size > memory:
            raise LimitExceeded("decoder_memory_bytes", dict_size, memory)
        decode = lzma._decode_filter_properties  # type: ignore[attr-defined]
        filt = decode(lzma.FILTER_LZMA1, props)
        return BufferedDecoder(lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])), 4 + psize
    raise ValueError(f"unsupported compression method {method}")


class Inflated:
    """What :func:`inflate` produced and how the stream ended."""

    def __init__(self, data: bytearray, complete: bool, error: str | None, pos: int = 0) -> None:
        self.data = data
        #: The stream reached its end marker.
        self.complete = complete
        #: Why decoding stopped early (invalid stream), if it did.
        self.error = error
        #: Input offset reached (the decoder may hold some of it as unused data).
        self.pos = pos


def inflate(method: int, raw: memoryview, declared_size: int, ctx: ScanContext) -> Inflated:
    """Decompress zip member data ``raw`` up to ``declared_size + 1`` bytes under limits."""
    try:
        decoder, pos = decoder_for(method, raw, ctx.limits.decoder_memory_bytes)
    except (lzma.LZMAError, ValueError, struct.error) as exc:
        return Inflated(bytearray(), False, f"{type(exc).__name__}: {exc}")
    return run(decoder, raw, pos, declared_size + 1, bytearray(), ctx)


def run(
    decoder: Decoder, raw: memoryview, pos: int, cap: int, out: bytearray, ctx: ScanContext
) -> Inflated:
    """Feed ``raw[pos:]`` to ``decoder``, appending to ``out`` until ``cap`` bytes or its end.

    ``out`` may already hold output from earlier streams (concatenated gzip
    members): limits apply to the total. Returns how the stream ended; the
    decoder's ``unused_data`` holds whatever followed its end marker.
    """
    try:
        while len(out) < cap:
            ctx.check_time()
            chunk: bytes | memoryview = b""
            if decoder.needs_input and pos < len(raw):
                chunk = raw[pos : pos + _INPUT_CHUNK]
                pos += len(chunk)
            piece = decoder.decompress(chunk, min(cap - len(out), _OUTPUT_STEP))
            out += piece
            ctx.charge_decompressed(len(piece))
            check_growth(ctx, len(out), pos - decoder.pending)
            if decoder.eof:
                return Inflated(out, True, None, pos)
            if not piece and not chunk:
                break  # input exhausted and nothing buffered: a truncated stream
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        return Inflated(out, False, f"{type(exc).__name__}: {exc}", pos)
    return Inflated(out, False, None, pos)


def check_growth(ctx: ScanContext, produced: int, consumed: int) -> None:
    """Raise :class:`LimitExceeded` when output passes ``member_bytes`` or the bomb ratio."""
    limits = ctx.limits
    if produced > limits.member_bytes:
        raise LimitExceeded("member_bytes", produced, limits.member_bytes, subject=ctx.subject)
    if produced > limits.decompression_slack_bytes:
        ratio = produced / max(consumed, 1)
        if ratio > limits.decompression_ratio:
            raise LimitExceeded(
                "decompression_ratio",
                round(ratio, 1),
                limits.decompression_ratio,
                subject=ctx.subject,
            )
