"""A tolerant zip reader for untrusted archives: every member any loader would read.

Loaders disagree about zips, and every disagreement is a way past a scanner.
``torch.load`` reads through miniz: it finds entries through the central
directory (as many as the end record counts, looked up case-insensitively, the
first duplicate winning), locates data through the *local* header's name and
extra lengths, and ignores CRCs and the local name. Python's ``zipfile`` (what
``numpy.load``, Keras and most peer scanners use) walks the central directory
by byte size, lets the last duplicate win, and *rejects* a bad CRC or a local
name that differs from the central one, so a scanner built on it errors out on
archives torch loads happily (GHSA-7q5r-7gvp-wc82, GHSA-mjqp-26hc-grxg).
Streaming readers follow local headers one after another and see entries the
central directory never mentions.

This module never uses ``zipfile``. It parses the structures itself, keeps the
union of what those readers see (every central entry, every duplicate, local
entries the directory hides) and reports each disagreement as a ``zip.*``
finding. Stored members are returned zero-copy from the caller's buffer;
compressed ones are inflated incrementally under ``ScanLimits`` so a zip bomb
is a finding, not an outage.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Literal

from trainguard.errors import LimitExceeded
from trainguard.findings import Severity
from trainguard.scan import _zipcheck as check
from trainguard.scan._decompress import inflate
from trainguard.scan._pages import expect_random_access, prefetch, prefetch_pages
from trainguard.scan._zipformat import (
    CENTRAL,
    CENTRAL_SIZE,
    EOCD,
    EOCD64_SIZE,
    EOCD_SIZE,
    FLAG_DESCRIPTOR,
    FLAG_ENCRYPTED,
    FLAG_PATCHED,
    FLAG_STRONG,
    FLAG_UTF8,
    LOCAL,
    LOCAL_SIZE,
    LOCATOR64_SIZE,
    METHODS,
    CentralRecord,
    EndRecord,
    LocalRecord,
    find_end,
    parse_central,
    parse_end,
    parse_local,
    zipfile_name,
)
from trainguard.scan._ziprules import (
    AMBIGUOUS_DIRECTORY,
    CORRUPT,
    CRC_MISMATCH,
    DUPLICATE_NAME,
    ENCRYPTED,
    HEADER_MISMATCH,
    HIDDEN_ENTRY,
    NAME_MISMATCH,
    NO_DIRECTORY,
    OVERLAP,
    UNACCOUNTED,
    UNSUPPORTED_METHOD,
)

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

__all__ = [
    "Archive",
    "Member",
    "central_names",
    "is_zip",
    "local_member",
    "looks_like_pickle",
    "read_archive",
    "read_member",
    "scan_member",
    "scan_outside",
]

#: Limits that concern one member: the archive's other members are still scanned.
MEMBER_LIMITS = frozenset({"member_bytes", "decompression_ratio", "decoder_memory_bytes"})
#: Names, pairs and gaps listed in one aggregated finding's evidence.
_EVIDENCE_ITEMS = 20
#: Name, extra and comment lengths, 28 bytes into a central directory record.
_CENTRAL_LENGTHS = struct.Struct("<HHH")


class Member:
    """One archive member as a loader would locate it (read-only by convention).

    ``data_offset`` is computed from the *local* header's name and extra
    lengths (as miniz and zipfile do); sizes, method, CRC and flags come from
    the central directory, or from the local header for ``local-only``
    members. ``index`` is the position in the central directory (-1 if none).
    """

    # A plain slotted class: a checkpoint has thousands of members, and a
    # dataclass costs about a millisecond to create at import (every command pays it).
    __slots__ = _MEMBER_FIELDS = (
        "name",
        "method",
        "compressed_size",
        "size",
        "crc",
        "local_header_offset",
        "data_offset",
        "flags",
        "source",
        "raw_name",
        "index",
    )

    def __init__(
        self,
        name: str,
        method: int,
        compressed_size: int,
        size: int,
        crc: int,
        local_header_offset: int,
        data_offset: int,
        flags: int,
        source: Literal["central", "local-only"],
        raw_name: bytes = b"",
        index: int = -1,
    ) -> None:
        self.name = name
        self.method = method
        self.compressed_size = compressed_size
        self.size = size
        self.crc = crc
        self.local_header_offset = local_header_offset
        self.data_offset = data_offset
        self.flags = flags
        self.source = source
        self.raw_name = raw_name
        self.index = index

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self._MEMBER_FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Member):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._MEMBER_FIELDS)
        return f"Member({args})"

    @property
    def is_dir(self) -> bool:
        return self.raw_name.endswith(b"/") and self.size == 0

    @property
    def supported(self) -> bool:
        """Whether :meth:`Archive.read` can decode this member's method."""
        return self.method in METHODS

    @property
    def end(self) -> int:
        return self.data_offset + self.compressed_size


class Archive:
    """A parsed archive over the caller's buffer; see :func:`read_archive`."""

    __slots__ = ("ctx", "data", "declared_count", "members", "outside")

    def __init__(self, data: memoryview, ctx: ScanContext) -> None:
        self.data = data
        self.ctx = ctx
        self.members: list[Member] = []
        #: Entries the end record declares: what miniz (torch) reads from the directory.
        self.declared_count = 0
        #: Regions outside the archive proper: (offset, end) of a prefix and of trailing bytes.
        self.outside: list[tuple[int, int]] = []

    def by_name(self, name: str) -> Member | None:
        """The first central member called ``name`` (the one miniz picks), or ``None``."""
        for member in self.members:
            if member.name == name and member.source == "central":
                return member
        return None

    def read(self, member: Member) -> memoryview | bytes:
        """The member's content: zero-copy when stored, inflated under limits otherwise.

        Content stops at the declared size, as loaders stop. The CRC is checked
        (a mismatch is a finding; the bytes are still returned, as torch uses
        them). Damage is reported and what could be decoded is returned.
        Raises :class:`LimitExceeded` on :data:`MEMBER_LIMITS` or the file's
        time/total budgets. Returns
        ``b""`` for an unsupported method (reported when the archive was read).
        """
        ctx = self.ctx
        ctx.check_time()
        start = min(member.data_offset, len(self.data))
        end = min(member.end, len(self.data))
        prefetch(self.data, start, end)  # read in full next: one read-ahead, not a fault a page
        raw = self.data[start:end]
        if end < member.end:
            ctx.add(
                CORRUPT,
                f"member {member.name!r} is truncated: {end - start} of "
                f"{member.compressed_size} compressed bytes present",
                member=member.name,
            )
        if not member.supported:
            return b""
        if member.method == 0:
            out = raw[: member.size]
            complete = len(raw) >= member.size
        else:
            result = inflate(member.method, raw, member.size, ctx)
            out = memoryview(result.data)
            complete = result.complete and len(result.data) == member.size
            if result.error is not None:
                ctx.add(
                    CORRUPT,
                    f"member {member.name!r}: compressed stream invalid after "
                    f"{len(result.data)} bytes ({result.error})",
                    member=member.name,
                )
            elif len(result.data) > member.size:
                ctx.add(
                    CORRUPT,
                    f"member {member.name!r} inflates past its declared size {member.size}",
                    member=member.name,
                )
                out = out[: member.size]
                complete = True
            elif not complete and member.source == "central":
                ctx.add(
                    CORRUPT,
                    f"member {member.name!r}: compressed stream ends after {len(out)} of "
                    f"{member.size} declared bytes",
                    member=member.name,
                )
        crc_known = not (member.source == "local-only" and member.flags & FLAG_DESCRIPTOR)
        if complete and crc_known:
            self._check_crc(member, out)
        return out

    def _check_crc(self, member: Member, out: memoryview) -> None:
        actual = zlib.crc32(out)
        if actual == member.crc:
            return
        pickle = looks_like_pickle(out) or member.raw_name.lower().endswith(b".pkl")
        self.ctx.add(
            CRC_MISMATCH,
            f"member {member.name!r} has CRC {actual:08x}, its header says {member.crc:08x}"
            + (
                "; it is a pickle, which torch loads and zipfile-based scanners skip"
                if pickle
                else ""
            ),
            severity=Severity.HIGH if pickle else None,
            member=member.name,
        )


def looks_like_pickle(data: memoryview | bytes) -> bool:
    """Cheap sniff for a binary pickle (protocol 2+): PROTO opcode first, STOP last."""
    return len(data) >= 3 and data[0] == 0x80 and 2 <= data[1] <= 5 and data[-1] == 0x2E


def central_names(data: memoryview, limit: int = 100_000) -> list[bytes]:
    """Raw member names for ``detect``: the central directory's, else the local headers'.

    Reports nothing and never raises; at most ``limit`` names.
    """
    try:
        end_pos = find_end(data)
        names: list[bytes] = []
        if end_pos is not None:
            end = parse_end(data, end_pos)
            _prefetch_directory(data, end)
            pos = _directory_start(data, end)
            size = len(data)
            # parse_central's walk, reading only the lengths: detection runs on every file.
            while pos is not None and pos + CENTRAL_SIZE <= size and len(names) < limit:
                if data[pos : pos + 4] != CENTRAL:
                    break
                name_len, extra_len, comment_len = _CENTRAL_LENGTHS.unpack_from(data, pos + 28)
                start = pos + CENTRAL_SIZE
                if start + name_len + extra_len > size:
                    raise ValueError("central directory record runs past the end of the file")
                names.append(bytes(data[start : start + name_len]))
                pos = start + name_len + extra_len + comment_len
            if names:
                return names
        return [local.raw_name for local in check.walk_locals(data, 0, limit)]
    except (struct.error, ValueError, IndexError):
        return []


def is_zip(data: memoryview) -> bool:
    """Content test: a local header at offset 0, or an end record whose directory is there.

    The second form catches archives behind a prefix (self-extracting files,
    polyglots), which Python's zipfile opens even though torch does not.
    """
    head = bytes(data[:4])
    if head == LOCAL or (head == EOCD and len(data) >= EOCD_SIZE):
        return True
    try:
        end_pos = find_end(data)
        return end_pos is not None and _directory_start(data, parse_end(data, end_pos)) is not None
    except (struct.error, ValueError):
        return False


def _prefetch_directory(data: memoryview, end: EndRecord) -> None:
    """Read-ahead over the central directory, which sits right before the end records."""
    prefetch(data, end.offset - end.cd_size - EOCD64_SIZE - LOCATOR64_SIZE, end.offset)


def _directory_start(data: memoryview, end: EndRecord) -> int | None:
    """Where the central directory starts: zipfile's prefix-shifted offset, else miniz's."""
    for base in (end.base, 0):
        pos = end.cd_offset + base
        if 0 <= pos <= len(data) - 4 and bytes(data[pos : pos + 4]) == CENTRAL:
            return pos
    return None


def read_archive(data: memoryview, ctx: ScanContext) -> Archive:
    """Parse the zip in ``data``, reporting every anomaly on ``ctx`` (rules ``zip.*``).

    Members are central-directory entries in directory order, then entries
    found only as local headers. Raises :class:`LimitExceeded` past
    ``ScanLimits.archive_members``; other damage is reported and parsing goes
    on with what can be recovered.
    """
    # Members are located by offset and tensors are never read: faults must not read ahead.
    expect_random_access(data)
    archive = Archive(data, ctx)
    end_pos = find_end(data)
    if end_pos is None:
        ctx.add(NO_DIRECTORY, "no end of central directory record found", size=len(data))
        _check_layout(archive, None, None)
        return archive
    end = parse_end(data, end_pos)
    _prefetch_directory(data, end)
    _check_end(archive, end)
    limit = ctx.limits.archive_members
    if end.entries > limit:
        raise LimitExceeded("archive_members", end.entries, limit, subject=ctx.subject)
    archive.declared_count = end.entries
    records, cd_span = _read_directory(data, end, ctx)
    base = cd_span[0] - end.cd_offset if cd_span is not None else 0
    prefetch_pages(data, [record.local_offset + base for record in records])
    parsed: dict[int, LocalRecord] = {}  # local headers by offset, parsed once
    for index, record in enumerate(records):
        member = _member_from_central(data, record, base, index, ctx, parsed)
        if member is not None:
            archive.members.append(member)
    _check_layout(archive, end, cd_span, parsed)
    return archive


def _read_directory(
    data: memoryview, end: EndRecord, ctx: ScanContext
) -> tuple[list[CentralRecord], tuple[int, int] | None]:
    """Central records, walked like zipfile (by size) but past it while records follow."""
    start = _directory_start(data, end)
    if start is None:
        if end.entries:
            ctx.add(CORRUPT, f"central directory not found at offset {end.cd_offset}")
        return [], None
    limit = ctx.limits.archive_members
    records: list[CentralRecord] = []
    pos = start
    cd_end = start + end.cd_size
    while pos + CENTRAL_SIZE <= len(data) and bytes(data[pos : pos + 4]) == CENTRAL:
        ctx.check_time()
        if len(records) >= limit:
            raise LimitExceeded("archive_members", len(records) + 1, limit, subject=ctx.subject)
        try:
            record = parse_central(data, pos)
        except (struct.error, ValueError) as exc:
            ctx.add(CORRUPT, f"central directory record at {pos} is damaged: {exc}")
            break
        records.append(record)
        pos = record.next_offset
        if pos >= cd_end and len(records) >= end.entries:
            break
    if len(records) != end.entries:
        ctx.add(
            AMBIGUOUS_DIRECTORY,
            f"end record declares {end.entries} entries, the central directory holds "
            f"{len(records)}: torch reads the first {min(end.entries, len(records))}, "
            f"zipfile those within {end.cd_size} bytes",
            declared=end.entries,
            found=len(records),
        )
    return records, (start, pos)


def _check_end(archive: Archive, end: EndRecord) -> None:
    """End-record anomalies: a signature zipfile would pick instead, bytes after it."""
    data, ctx = archive.data, archive.ctx
    # zipfile takes the last signature in the file's last 64 KiB; find_end took the last
    # one with a full record after it. They differ when a signature follows that one.
    later = bytes(data[end.offset + 1 :]).rfind(EOCD)
    if later >= 0:
        ctx.add(
            AMBIGUOUS_DIRECTORY,
            "an end-record signature within the last bytes of the file makes Python's zipfile "
            "give up while miniz (torch) uses an earlier one",
            offset=end.offset + 1 + later,
        )
    after = end.offset + EOCD_SIZE + end.comment_length
    if after > len(data):
        ctx.add(CORRUPT, "the end record's comment runs past the end of the file")
    elif after < len(data):
        archive.outside.append((after, len(data)))
        ctx.add(
            UNACCOUNTED,
            f"{len(data) - after} bytes after the end of central directory",
            where="trailing",
            offset=after,
            size=len(data) - after,
        )


def _member_from_central(
    data: memoryview,
    record: CentralRecord,
    base: int,
    index: int,
    ctx: ScanContext,
    parsed: dict[int, LocalRecord],
) -> Member | None:
    offset = record.local_offset + base
    if not 0 <= offset <= len(data) - LOCAL_SIZE or bytes(data[offset : offset + 4]) != LOCAL:
        ctx.add(
            CORRUPT,
            f"member {record.name!r}: no local header at offset {offset}",
            member=record.name,
            offset=offset,
        )
        return None
    local = parsed.get(offset) or parse_local(data, offset)
    parsed[offset] = local
    _compare_headers(record, local, ctx)
    if record.method == 0 and record.size != record.compressed_size:
        ctx.add(
            CORRUPT,
            f"stored member {record.name!r} declares {record.size} bytes but holds "
            f"{record.compressed_size}",
            member=record.name,
        )
    if record.flags & (FLAG_ENCRYPTED | FLAG_STRONG | FLAG_PATCHED):
        ctx.add(
            ENCRYPTED,
            f"member {record.name!r} has flags {record.flags:#06x} (encrypted/patched); "
            "scanned as plain bytes",
            member=record.name,
            flags=record.flags,
        )
    if record.method not in METHODS:
        ctx.add(
            UNSUPPORTED_METHOD,
            f"member {record.name!r} uses compression method {record.method}; not examined",
            member=record.name,
            method=record.method,
        )
    return Member(
        name=record.name,
        method=record.method,
        compressed_size=record.compressed_size,
        size=record.size,
        crc=record.crc,
        local_header_offset=offset,
        data_offset=local.data_offset,
        flags=record.flags,
        source="central",
        raw_name=record.raw_name,
        index=index,
    )


def _compare_headers(record: CentralRecord, local: LocalRecord, ctx: ScanContext) -> None:
    central_str = zipfile_name(record.raw_name, record.flags)
    if local.raw_name == record.raw_name and not (local.flags ^ record.flags) & FLAG_UTF8:
        local_str = central_str  # same bytes, same charset: the same name
    else:
        local_str = zipfile_name(local.raw_name, local.flags)
    if local.raw_name != record.raw_name or central_str != local_str or central_str is None:
        ctx.add(
            NAME_MISMATCH,
            f"central directory names {record.name!r}, its local header {local.name!r}",
            member=record.name,
            local_name=local.name,
        )
    diffs = []
    if local.method != record.method:
        diffs.append(f"method {local.method} vs {record.method}")
    if (local.flags ^ record.flags) & ~0x0006:  # bits 1-2 only hint the deflate level
        diffs.append(f"flags {local.flags:#06x} vs {record.flags:#06x}")
    if not local.flags & FLAG_DESCRIPTOR:
        for what, lv, cv in (
            ("compressed size", local.compressed_size, record.compressed_size),
            ("size", local.size, record.size),
            ("crc", local.crc, record.crc),
        ):
            if lv != cv:
                diffs.append(f"{what} {lv} vs {cv}")
    if diffs:
        ctx.add(
            HEADER_MISMATCH,
            f"member {record.name!r}: local vs central " + ", ".join(diffs),
            member=record.name,
        )


def _check_layout(
    archive: Archive,
    end: EndRecord | None,
    cd_span: tuple[int, int] | None,
    parsed: dict[int, LocalRecord] | None = None,
) -> None:
    """Duplicates, overlaps, hidden local entries and bytes no member accounts for.

    ``parsed``: the local headers read so far, by offset.
    """
    data, ctx = archive.data, archive.ctx
    limit = ctx.limits.archive_members
    for group in check.duplicate_groups(archive.members):
        names = sorted({m.name for m in group})
        exact = len({m.raw_name for m in group}) == 1
        ctx.add(
            DUPLICATE_NAME,
            f"{len(group)} members named {names[0]!r}"
            + ("" if exact else f" compared case-insensitively as torch does ({names})")
            + "; torch reads the first, zipfile the last; every copy was scanned",
            member=names[0],
            names=names,
        )
    spans = [check.member_span(data, m) for m in archive.members]
    pairs = check.overlapping_pairs(archive.members, spans, cd_span)
    if pairs:
        ctx.add(
            OVERLAP,
            f"{len(pairs)} overlapping pair(s), first {pairs[0]}",
            pairs=pairs[:_EVIDENCE_ITEMS],
        )
    structure = list(spans)
    data_end = len(data)
    if cd_span is not None:
        structure.append(cd_span)
    if end is not None:
        data_end = min(data_end, end.offset + EOCD_SIZE + end.comment_length)
        structure.append((end.offset, data_end))
        if end.zip64_span is not None:
            structure.append(end.zip64_span)
    known = {m.local_header_offset for m in archive.members}
    for local in check.hidden_locals(data, structure, known, limit, ctx.check_time, parsed):
        if len(archive.members) >= limit:
            raise LimitExceeded("archive_members", limit + 1, limit, subject=ctx.subject)
        member = local_member(data, local)
        if end is not None:  # with no directory at all, nothing is hidden from it
            ctx.add(
                HIDDEN_ENTRY,
                f"local entry {member.name!r} at offset {local.offset} is not in the central "
                "directory",
                member=member.name,
                offset=local.offset,
            )
        archive.members.append(member)
        structure.append(check.member_span(data, member))
    gaps = check.gaps(structure, data_end)
    if gaps and gaps[0][0] == 0:
        archive.outside.insert(0, gaps[0])
    if gaps:
        ctx.add(
            UNACCOUNTED,
            f"{sum(e - s for s, e in gaps)} bytes in {len(gaps)} region(s) belong to no member "
            f"(first at offset {gaps[0][0]})",
            where="prefix" if gaps[0][0] == 0 else "between entries",
            regions=[list(g) for g in gaps[:_EVIDENCE_ITEMS]],
        )


def read_member(archive: Archive, member: Member) -> memoryview | bytes | None:
    """:meth:`Archive.read`, with member-level limits turned into a finding (``None``).

    :data:`MEMBER_LIMITS` concern this member only, so the archive's other
    members are still scanned; file-level budgets (time, total decompression)
    propagate and end the file's scan.
    """
    from trainguard.scan._rules import LIMIT_HIT

    try:
        return archive.read(member)
    except LimitExceeded as exc:
        if exc.limit not in MEMBER_LIMITS:
            raise
        archive.ctx.add(
            LIMIT_HIT,
            f"member {member.name!r} not scanned: {exc.message}",
            limit=exc.limit,
            member=member.name,
        )
        return None


def scan_member(
    archive: Archive,
    member: Member,
    hint: str | None,
    content: memoryview | bytes | None = None,
) -> memoryview | bytes | None:
    """Hand ``member`` (read now unless ``content`` is given) to the engine as a nested scan.

    Returns the content scanned, or ``None`` when it could not be read.
    Empty members and unsupported methods are not scanned (nothing a loader
    would get; the method was reported when the archive was read).
    """
    if content is None:
        content = read_member(archive, member)
    if content is not None and member.supported and (len(content) or member.size):
        archive.ctx.scan_nested(content, member.name, hint)
    return content


def scan_outside(archive: Archive) -> None:
    """Nested-scan bytes before and after the archive proper.

    A loader that reads from the start of the file (``torch.load`` of a
    non-zip, ``pickle.load``) sees the prefix, not the zip.
    """
    for start, end in archive.outside:
        where = "<prefix>" if start == 0 else "<trailing>"
        archive.ctx.scan_nested(archive.data[start:end], where, None)


def local_member(data: memoryview, local: LocalRecord) -> Member:
    """A ``local-only`` member from a local header, its sizes bounded by the buffer."""
    room = max(len(data) - local.data_offset, 0)
    csize = min(local.compressed_size, room)
    size = local.size
    if local.flags & FLAG_DESCRIPTOR and local.compressed_size == 0:
        # Sizes live in the descriptor after the data: let the decoder find the end.
        csize = room
        size = room if local.method == 0 else 2**62
    return Member(
        name=local.name,
        method=local.method,
        compressed_size=csize,
        size=size,
        crc=local.crc,
        local_header_offset=local.offset,
        data_offset=local.data_offset,
        flags=local.flags,
        source="local-only",
        raw_name=local.raw_name,
    )
