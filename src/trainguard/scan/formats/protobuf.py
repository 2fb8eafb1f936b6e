"""Other protobuf messages (sentencepiece ``tokenizer.model``, TensorFlow graphs).

Protobuf has no magic bytes, so recognition is structural and strict: the
whole buffer must parse as well-formed wire format (no groups, no undefined
wire types, every length inside its message) with plausible field numbers, and
at least one length-delimited field must hold text or a well-formed
sub-message. Random bytes and pickles fail that within a few fields.

Protobuf loaders build data, they do not run code, so a recognised buffer
raises no finding; what is *not* recognised stays an unknown format (a finding).
ONNX models are protobuf too; they are matched earlier by the ONNX format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainguard.scan import _protobuf as pb
from trainguard.scan.limits import DEFAULT_LIMITS

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "protobuf"

#: Smallest buffer worth calling a message: shorter ones parse by accident.
_MIN_SIZE = 16
#: Schemas stored in model folders number their fields in the low hundreds at most.
_MAX_FIELD_NUMBER = 1000
_MIN_FIELDS = 2


def detect(data: memoryview, filename: str | None) -> bool:
    """True when the whole buffer is a plausible protobuf message."""
    if len(data) < _MIN_SIZE:
        return False
    try:
        return _plausible(data, DEFAULT_LIMITS.metadata_entries)
    except pb.WireError:
        return False


def _plausible(data: memoryview, max_fields: int) -> bool:
    count = 0
    meaningful = False
    for f in pb.iter_fields(data, max_fields=max_fields):
        count += 1
        if f.number > _MAX_FIELD_NUMBER:
            return False
        if not meaningful and f.wire == pb.LEN:
            meaningful = _is_text(f.data) or _is_message(f.data)
    return count >= _MIN_FIELDS and meaningful


def _is_text(data: memoryview) -> bool:
    if not data:
        return False
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable() or all(c.isprintable() or c in "\t\r\n" for c in text)


def _is_message(data: memoryview) -> bool:
    if not data:
        return False
    try:
        return all(
            f.number <= _MAX_FIELD_NUMBER
            for f in pb.iter_fields(data, max_fields=DEFAULT_LIMITS.metadata_entries)
        )
    except pb.WireError:
        return False


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Re-parse under the scan's limits; a protobuf message cannot run code."""
    count = 0
    for count, _field in enumerate(pb.iter_fields(data, max_fields=ctx.limits.metadata_entries), 1):
        if count % 65536 == 0:
            ctx.check_time()
