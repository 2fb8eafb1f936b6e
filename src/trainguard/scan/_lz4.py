"""A small LZ4 frame decoder (joblib's ``lz4`` compressor), pure Python, bounded.

The standard library has no LZ4 and the ``lz4`` package is not a core
dependency, yet joblib writes LZ4 frames, so without a decoder their content
would go unexamined. The format is simple (frame spec v1.6.x): a header, then
blocks of at most 4 MiB *decompressed*, each either stored or a sequence of
literal runs and back-references into the last 64 KiB. Output per block is
checked against the frame's declared block size, so one step never produces
more than 4 MiB; the caller's limits bound the rest. Checksums are not
verified (the reference decoder makes that optional as well).
"""

from __future__ import annotations

import struct

__all__ = ["LZ4_MAGIC", "Lz4FrameDecoder", "is_lz4_frame"]

LZ4_MAGIC = b"\x04\x22\x4d\x18"
_WINDOW = 64 * 1024
_BLOCK_SIZES = {4: 64 * 1024, 5: 256 * 1024, 6: 1024 * 1024, 7: 4 * 1024 * 1024}


def is_lz4_frame(head: bytes) -> bool:
    """Magic number plus a version-01 flag byte and a valid block-size byte."""
    return (
        len(head) >= 6
        and head[:4] == LZ4_MAGIC
        and head[4] >> 6 == 1
        and (head[5] >> 4) & 7 in _BLOCK_SIZES
    )


class Lz4FrameDecoder:
    """Incremental decoder with the stdlib decompressor surface (see ``_decompress``)."""

    def __init__(self) -> None:
        self._input = bytearray()
        self._output = bytearray()
        self._history = bytearray()
        self._header_done = False
        self._block_max = 0
        self._block_checksum = False
        self._content_checksum = False
        self._eof = False
        self.unused_data = b""

    @property
    def needs_input(self) -> bool:
        return not self._output and not self._eof

    @property
    def eof(self) -> bool:
        return self._eof and not self._output

    @property
    def pending(self) -> int:
        return len(self._input)

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        if self._eof:
            self.unused_data += bytes(data)
        else:
            self._input += data
            while not self._output and not self._eof and self._step():
                pass
        out = bytes(self._output[:max_length])
        del self._output[:max_length]
        return out

    def _step(self) -> bool:
        """Consume one header or block from the input; ``False`` when more input is needed."""
        if not self._header_done:
            return self._read_header()
        if len(self._input) < 4:
            return False
        (size,) = struct.unpack_from("<I", self._input, 0)
        if size == 0:  # end mark
            tail = 4 + (4 if self._content_checksum else 0)
            if len(self._input) < tail:
                return False
            self.unused_data = bytes(self._input[tail:])
            self._input.clear()
            self._eof = True
            return False
        stored, size = bool(size & 0x80000000), size & 0x7FFFFFFF
        if size > self._block_max:
            raise ValueError(f"LZ4 block of {size} bytes exceeds the frame's {self._block_max}")
        need = 4 + size + (4 if self._block_checksum else 0)
        if len(self._input) < need:
            return False
        block = bytes(self._input[4 : 4 + size])
        del self._input[:need]
        produced = block if stored else _decode_block(block, self._history, self._block_max)
        self._output += produced
        self._history = (self._history + produced)[-_WINDOW:]
        return True

    def _read_header(self) -> bool:
        if len(self._input) < 7:
            return False
        if bytes(self._input[:4]) != LZ4_MAGIC:
            raise ValueError("not an LZ4 frame")
        flags, bd = self._input[4], self._input[5]
        if flags >> 6 != 1 or (bd >> 4) & 7 not in _BLOCK_SIZES:
            raise ValueError("unsupported LZ4 frame descriptor")
        length = 7 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)
        if len(self._input) < length:
            return False
        if flags & 0x01:
            raise ValueError("LZ4 frames with a dictionary cannot be decoded without it")
        self._block_checksum = bool(flags & 0x10)
        self._content_checksum = bool(flags & 0x04)
        self._block_max = _BLOCK_SIZES[(bd >> 4) & 7]
        del self._input[:length]
        self._header_done = True
        return True


def _decode_block(src: bytes, history: bytearray, block_max: int) -> bytes:
    """Decode one LZ4 block; back-references may reach into ``history``."""
    out = bytearray(history)
    start = len(out)
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        literals = token >> 4
        if literals == 15:
            while True:
                if i >= n:
                    raise ValueError("truncated LZ4 literal length")
                extra = src[i]
                i += 1
                literals += extra
                if extra != 255:
                    break
        if i + literals > n:
            raise ValueError("LZ4 literals run past the block")
        out += src[i : i + literals]
        i += literals
        if i >= n:
            break  # the last sequence carries literals only
        if i + 2 > n:
            raise ValueError("truncated LZ4 match offset")
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        if offset == 0 or offset > len(out):
            raise ValueError("LZ4 match offset out of range")
        length = token & 15
        if length == 15:
            while True:
                if i >= n:
                    raise ValueError("truncated LZ4 match length")
                extra = src[i]
                i += 1
                length += extra
                if extra != 255:
                    break
        length += 4
        if len(out) - start + length > block_max:
            raise ValueError("LZ4 block decodes past the frame's block size")
        if offset >= length:
            begin = len(out) - offset
            out += out[begin : begin + length]
        else:  # overlapping copy repeats the last `offset` bytes
            pattern = out[len(out) - offset :]
            out += (pattern * (length // offset + 1))[:length]
        if len(out) - start > block_max:
            raise ValueError("LZ4 block decodes past the frame's block size")
    return bytes(out[start:])
