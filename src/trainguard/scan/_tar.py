"""Reading tar archives from a buffer with the standard ``tarfile`` module, bounded.

``tarfile`` is what torch's legacy loader and ``shutil.unpack_archive`` use,
so it sees exactly what they see. It reads from :class:`ViewFile`, a
read-only file object over the caller's buffer (an mmap), and member content
is handed out as zero-copy slices of that buffer.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

from trainguard.errors import LimitExceeded

if TYPE_CHECKING:
    import tarfile

    from trainguard.scan._context import ScanContext

__all__ = ["TarReader", "ViewFile", "first_names", "is_tar"]

BLOCK = 512


class ViewFile(io.RawIOBase):
    """A seekable, read-only raw file over a memoryview (no copy of the buffer)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        # io.RawIOBase.read would allocate ``size`` bytes first: a header claiming
        # terabytes must cost no more than the bytes actually there.
        end = (
            len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        )
        chunk = bytes(self._view[self._pos : max(end, self._pos)])
        self._pos += len(chunk)
        return chunk

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._view[self._pos : self._pos + len(buffer)]
        n = len(chunk)
        memoryview(buffer).cast("B")[:n] = chunk
        self._pos += n
        return n


def _size_field(block: bytes) -> int | None:
    field = block[124:136]
    try:
        if field[0] & 0x80:  # base-256 (GNU)
            return int.from_bytes(field[1:], "big")
        return int(field.replace(b"\x00", b" ").strip() or b"0", 8)
    except ValueError:
        return None


def first_names(data: memoryview, count: int = 16) -> list[str]:
    """Names in the first ``count`` headers, read directly (for ``detect``: no tarfile,
    nothing read but the 512-byte headers themselves)."""
    names: list[str] = []
    offset = 0
    while len(names) < count and offset + BLOCK <= len(data):
        block = bytes(data[offset : offset + BLOCK])
        size = _size_field(block)
        if size is None or not _header_checksum_ok(block):
            break
        if block[156:157] not in (b"x", b"g", b"L", b"K"):
            names.append(block[:100].split(b"\0", 1)[0].decode("utf-8", "replace"))
        offset += BLOCK + -(-size // BLOCK) * BLOCK
    return names


def _header_checksum_ok(block: bytes) -> bool:
    try:
        stored = int(block[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 256 + sum(block[156:])  # the field itself counts as spaces
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b >= 128)
    return stored in (unsigned, signed)


def is_tar(data: memoryview) -> bool:
    """Whether the first block is a tar header tarfile would accept (checksum, or ustar magic)."""
    if len(data) < BLOCK:
        return False
    block = bytes(data[:BLOCK])
    if block.count(0) == BLOCK:
        return False
    return _header_checksum_ok(block)


class TarReader:
    """Members as ``tarfile.open(mode="r:")`` lists them, bounded by ``archive_members``.

    Iterating raises ``tarfile.TarError`` where tarfile gives up (callers
    report it). After a full iteration :attr:`end` is the offset just past the
    last member, where the end-of-archive blocks should start.
    """

    def __init__(self, data: memoryview, ctx: ScanContext) -> None:
        self.data = data
        self.ctx = ctx
        self.end = 0

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        import tarfile  # detection never needs it; only listing members does

        ctx = self.ctx
        limit = ctx.limits.archive_members
        self._check_extended_headers(0)  # opening the archive reads its first member
        with tarfile.open(fileobj=ViewFile(self.data), mode="r:") as tar:
            count = 0
            while True:
                ctx.check_time()
                self._check_extended_headers(tar.offset)
                info = tar.next()
                self.end = tar.offset
                if info is None:
                    return
                count += 1
                if count > limit:
                    raise LimitExceeded("archive_members", count, limit, subject=ctx.subject)
                yield info

    def _check_extended_headers(self, offset: int) -> None:
        """tarfile reads pax and GNU long-name records whole, and a chain of them before
        the member they describe: bound each before it does."""
        limit = self.ctx.limits.json_header_bytes
        while True:
            block = bytes(self.data[offset : offset + BLOCK])
            if len(block) < BLOCK or block[156:157] not in (b"x", b"g", b"L", b"K"):
                return
            size = _size_field(block)
            if size is None:
                return  # tarfile rejects the header itself
            if size > limit:
                raise LimitExceeded("json_header_bytes", size, limit, subject=self.ctx.subject)
            offset += BLOCK + -(-size // BLOCK) * BLOCK

    def content(self, info: tarfile.TarInfo) -> memoryview:
        """A member's stored bytes, zero-copy (a sparse member's chunks as laid out)."""
        sparse: list[tuple[int, int]] = info.sparse if isinstance(info.sparse, list) else []
        size = sum(length for _offset, length in sparse) if sparse else info.size
        start = info.offset_data
        return self.data[start : min(start + size, len(self.data))]

    def trailing(self) -> tuple[int, memoryview] | None:
        """Non-zero bytes after the end-of-archive marker, if any: (offset, bytes)."""
        step = 1 << 20
        for i in range(self.end, len(self.data), step):
            chunk = bytes(self.data[i : i + step])
            stripped = chunk.lstrip(b"\x00")
            if stripped:
                # Start at the block holding the first non-zero byte: a concatenated
                # archive (``tar --ignore-zeros``) is then detected as one.
                first = i + len(chunk) - len(stripped)
                offset = max(self.end, first - (first - self.end) % BLOCK)
                return offset, self.data[offset:]
        return None
