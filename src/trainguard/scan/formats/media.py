"""Images and documents found in model folders (PNG, JPEG, GIF, WebP, BMP, ICO, TIFF, PDF).

Model loaders never execute these, so a recognised file raises no finding,
with one exception: a file that *also* ends like a zip archive. Zip readers
look for the archive directory at the end of a file, so an image with an
archive appended is a valid ``.keras`` or ``.npz`` archive to some loaders
while it looks like a picture to a person. That polyglot is reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.findings import Rule, Severity

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "media"

POLYGLOT = Rule(
    "media.zip-polyglot",
    Severity.MEDIUM,
    "Image or document that is also a zip archive",
    "The file starts like an image or PDF but ends with a zip end-of-central-directory "
    "record. Loaders that open archives from the end (Keras, numpy, zipfile) read the "
    "appended archive, which a viewer never shows. Scan it as an archive before use.",
)

_EOCD = b"PK\x05\x06"
#: The EOCD record is 22 bytes plus a comment of at most 65535 bytes.
_EOCD_WINDOW = 22 + 65535


def _kind(data: memoryview) -> str | None:
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if _is_bmp(head, len(data)):
        return "bmp"
    if _is_ico(data):
        return "ico"
    return None


def _is_bmp(head: bytes, size: int) -> bool:
    # "BM" alone is too weak; the header also states the file size and a pixel offset.
    if len(head) < 14 or not head.startswith(b"BM"):
        return False
    declared = int.from_bytes(head[2:6], "little")
    offset = int.from_bytes(head[10:14], "little")
    return declared == size and 14 <= offset < size


def _is_ico(data: memoryview) -> bool:
    # ICONDIR: reserved 0, type 1 (icon) or 2 (cursor), then count 16-byte entries.
    if len(data) < 22 or bytes(data[:2]) != b"\x00\x00" or data[2] not in (1, 2) or data[3]:
        return False
    count = int.from_bytes(data[4:6], "little")
    if count == 0 or 6 + 16 * count > len(data):
        return False
    for i in range(count):
        entry = data[6 + 16 * i : 22 + 16 * i]
        size = int.from_bytes(entry[8:12], "little")
        offset = int.from_bytes(entry[12:16], "little")
        if entry[3] != 0 or size == 0 or offset + size > len(data):
            return False
    return True


def detect(data: memoryview, filename: str | None) -> bool:
    """True for the image and document formats named in the module docstring."""
    return _kind(data) is not None


def scan(data: memoryview, ctx: ScanContext) -> None:
    """No finding for the picture itself; report an appended zip archive."""
    tail = bytes(data[-_EOCD_WINDOW:])
    at = tail.rfind(_EOCD)
    if at >= 0 and at + 22 <= len(tail):
        ctx.add(
            POLYGLOT,
            f"{_kind(data)} file ends with a zip archive directory",
            kind=_kind(data),
            eocd_offset=len(data) - len(tail) + at,
        )
