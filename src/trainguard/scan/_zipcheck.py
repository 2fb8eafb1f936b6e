"""Whole-archive analysis for the zip reader: duplicates, overlaps, gaps, hidden headers.

Pure functions over parsed members; :mod:`._zip` turns their results into
findings. Hidden entries are looked for where a reader other than torch could
find them: along the chain of local headers a streaming reader follows, and
in bytes no member accounts for. Member data is not searched: that would read
every tensor of a multi-GB checkpoint, and a zip stored inside a member is
scanned as that member.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from trainguard.scan._zipformat import (
    FLAG_DESCRIPTOR,
    LOCAL,
    LOCAL_SIZE,
    LocalRecord,
    descriptor_length,
    parse_local,
)

if TYPE_CHECKING:
    from trainguard.scan._zip import Member

Span = tuple[int, int]

#: Bytes copied at a time while searching gaps for hidden local headers.
_SEARCH_CHUNK = 4 * 1024 * 1024


def member_span(data: memoryview, member: Member) -> Span:
    """Bytes a member occupies: local header, data and data descriptor."""
    end = min(member.end, len(data))
    if member.flags & FLAG_DESCRIPTOR:
        end += descriptor_length(data, end, member.crc, member.compressed_size, member.size)
    return member.local_header_offset, min(end, len(data))


def duplicate_groups(members: list[Member]) -> list[list[Member]]:
    """Members whose names collide, compared case-insensitively as miniz does."""
    groups: dict[bytes, list[Member]] = defaultdict(list)
    for m in members:
        groups[m.raw_name.lower()].append(m)
    return [g for g in groups.values() if len(g) > 1]


def overlapping_pairs(
    members: list[Member], spans: list[Span], cd_span: Span | None
) -> list[list[str]]:
    """Pairs of member names (or the central directory) whose bytes overlap."""
    ordered = sorted(zip(spans, (m.name for m in members), strict=True))
    pairs: list[list[str]] = []
    reach, reach_name = -1, ""
    for (start, stop), name in ordered:
        if start < reach:
            pairs.append([reach_name, name])
        if stop > reach:
            reach, reach_name = stop, name
        if cd_span is not None and start < cd_span[1] and cd_span[0] < stop:
            pairs.append([name, "<central directory>"])
    return pairs


def gaps(spans: list[Span], end: int) -> list[Span]:
    """The parts of ``[0, end)`` no span covers."""
    out: list[Span] = []
    cursor = 0
    for start, stop in sorted(spans):
        if start > cursor:
            out.append((cursor, min(start, end)))
        cursor = max(cursor, stop)
    if cursor < end:
        out.append((cursor, end))
    return [(s, e) for s, e in out if e > s]


def walk_locals(
    data: memoryview, pos: int, limit: int, parsed: Mapping[int, LocalRecord] | None = None
) -> Iterator[LocalRecord]:
    """Local headers one after another, as a streaming reader follows them.

    ``parsed`` holds headers already parsed (by offset), which are not parsed again.
    """
    count = 0
    while count < limit and 0 <= pos <= len(data) - LOCAL_SIZE:
        local = parsed.get(pos) if parsed else None
        if local is None:
            if bytes(data[pos : pos + 4]) != LOCAL:
                return
            local = parse_local(data, pos)
        yield local
        count += 1
        if local.flags & FLAG_DESCRIPTOR and local.compressed_size == 0:
            return  # the size is only in the data descriptor, after the data
        nxt = local.data_offset + local.compressed_size
        if nxt <= pos:
            return
        pos = nxt


def hidden_locals(
    data: memoryview,
    structure: list[Span],
    known: set[int],
    limit: int,
    check_time: Callable[[], None],
    parsed: Mapping[int, LocalRecord] | None = None,
) -> Iterator[LocalRecord]:
    """Plausible local headers at offsets no central entry points to.

    ``parsed`` holds the headers the central entries point to, already parsed.
    """
    seen = set(known)
    start = 0 if bytes(data[:4]) == LOCAL else min(known, default=len(data))
    cap = limit + len(known) + 1  # past this the caller raises LimitExceeded anyway
    candidates: list[int] = [local.offset for local in walk_locals(data, start, cap, parsed)]
    for gap_start, gap_end in gaps(structure, len(data)):
        if len(candidates) < cap:
            candidates += _signatures(data, gap_start, gap_end, check_time, cap - len(candidates))
    for offset in sorted(set(candidates)):
        if offset in seen:
            continue
        seen.add(offset)
        try:
            local = parse_local(data, offset)
        except (ValueError, IndexError, OverflowError):
            continue
        if local.raw_name and local.data_offset <= len(data):
            yield local


def _signatures(
    data: memoryview, start: int, stop: int, check_time: Callable[[], None], room: int
) -> list[int]:
    """Up to ``room`` local-header signature offsets in ``[start, stop)``, read in chunks."""
    hits: list[int] = []
    for chunk_start in range(start, stop, _SEARCH_CHUNK):
        check_time()
        chunk_stop = min(stop, chunk_start + _SEARCH_CHUNK)
        buf = bytes(data[chunk_start : min(len(data), chunk_stop + 3)])
        pos = buf.find(LOCAL)
        while 0 <= pos < chunk_stop - chunk_start:
            if chunk_start + pos + LOCAL_SIZE <= len(data):
                hits.append(chunk_start + pos)
                if len(hits) >= room:
                    return hits
            pos = buf.find(LOCAL, pos + 1)
    return hits
