"""Generic tar archives (uncompressed; ``.tar.gz`` arrives here through ``compressed``).

Members are listed with ``tarfile`` over the mapped buffer, bounded by
``ScanLimits.archive_members``, and each regular file is scanned as whatever
it is (a checkpoint, a pickle, another archive). Model tarballs are usually
*extracted* before loading, so members an extractor would place outside the
target directory (absolute names, ``..``, links that point out) and special
files are findings: Python before 3.14 extracts them without a filter.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from trainguard.findings import Rule, Severity
from trainguard.scan._tar import TarReader, is_tar

if TYPE_CHECKING:
    import tarfile

    from trainguard.scan._context import ScanContext

NAME = "tar"

UNSAFE_PATH = Rule(
    "tar.unsafe-path",
    Severity.HIGH,
    "Tar member escapes the extraction directory",
    "An absolute member name, a '..' component, or a link whose target leaves the archive "
    "makes extraction write or expose files elsewhere (CVE-2007-4559, tar slip): a model "
    "tarball that overwrites code or configuration when unpacked.",
)
LINK = Rule(
    "tar.link",
    Severity.MEDIUM,
    "Tar archive contains links",
    "Symbolic and hard links are followed by extractors and by loaders that open extracted "
    "files, so a link can make a 'model file' be some other file on the host.",
)
SPECIAL = Rule(
    "tar.special-file",
    Severity.MEDIUM,
    "Tar archive contains device files or FIFOs",
    "Device nodes and FIFOs have no place in a model archive; extracting them as root "
    "creates devices, and reading a FIFO blocks the loader.",
)
CORRUPT = Rule(
    "tar.corrupt",
    Severity.MEDIUM,
    "Tar archive is damaged",
    "tarfile stopped before the end of the archive. Members after the damage were not "
    "listed; other extractors may still recover them.",
)
TRAILING = Rule(
    "tar.trailing-data",
    Severity.MEDIUM,
    "Bytes follow the end of the tar archive",
    "Non-zero data after the archive's end is ignored by tar readers but may be read by "
    "another tool: a polyglot or a hidden payload. It was scanned separately.",
)
POLYGLOT = Rule(
    "tar.polyglot",
    Severity.MEDIUM,
    "Tar archive is also a pickle",
    "The first header's name field holds a pickle, so pickle.load (numpy.load with "
    "allow_pickle, joblib fallbacks) runs it while tar tools see an archive. It was scanned "
    "as a pickle too.",
)
DUPLICATE = Rule(
    "tar.duplicate-name",
    Severity.MEDIUM,
    "Tar archive has several members with the same name",
    "Extraction keeps the last copy and tarfile.getmember returns the last one, while a "
    "scanner may inspect the first. Every copy was scanned.",
)


def escapes(name: str) -> bool:
    """Whether ``name`` (a member name or link target) leaves the extraction directory."""
    norm = name.replace("\\", "/")
    return norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in norm.split("/")


def check_member(info: tarfile.TarInfo, ctx: ScanContext) -> None:
    """Report what extracting ``info`` would do outside a plain regular file."""
    if escapes(info.name):
        ctx.add(UNSAFE_PATH, f"member name {info.name!r} leaves the target", member=info.name)
    if info.issym() or info.islnk():
        target = info.linkname
        # A symlink target is relative to the link's folder; a hard link's to the archive root.
        resolved = posixpath.join(posixpath.dirname(info.name), target) if info.issym() else target
        kind = "symbolic link" if info.issym() else "hard link"
        if escapes(target) or escapes(posixpath.normpath(resolved)):
            ctx.add(
                UNSAFE_PATH,
                f"{kind} {info.name!r} -> {target!r} points outside the archive",
                member=info.name,
                target=target,
            )
        else:
            ctx.add(LINK, f"{kind} {info.name!r} -> {target!r}", member=info.name, target=target)
    elif info.ischr() or info.isblk() or info.isfifo():
        ctx.add(SPECIAL, f"member {info.name!r} is a device or FIFO", member=info.name)


def detect(data: memoryview, filename: str | None) -> bool:
    return is_tar(data)


def scan_polyglot(data: memoryview, ctx: ScanContext) -> None:
    """Scan ``data`` as a pickle as well when it also parses as one (a tar header's name
    field is free-form, so a protocol-0 pickle fits in it)."""
    from trainguard.scan.formats import by_name

    fmt = by_name("pickle")
    if fmt is not None and fmt.detect(data, None):
        ctx.add(POLYGLOT, "the archive's first bytes are also a pickle")
        ctx.scan_nested(data, "<as pickle>", "pickle")


def scan(data: memoryview, ctx: ScanContext) -> None:
    import tarfile  # loaded with the first tar file, not at start-up

    scan_polyglot(data, ctx)
    reader = TarReader(data, ctx)
    seen: dict[str, int] = {}
    try:
        for info in reader:
            check_member(info, ctx)
            seen[info.name] = seen.get(info.name, 0) + 1
            if info.isreg() and info.size:
                ctx.scan_nested(reader.content(info), info.name, None)
    except tarfile.TarError as exc:
        ctx.add(CORRUPT, f"tarfile stopped at offset {reader.end}: {exc}", offset=reader.end)
        return
    report_tail(reader, seen, ctx)


def report_tail(reader: TarReader, seen: dict[str, int], ctx: ScanContext) -> None:
    """Duplicate names and trailing bytes, once the whole archive was listed."""
    for name, count in seen.items():
        if count > 1:
            ctx.add(
                DUPLICATE, f"{count} members named {name!r}; tar readers use the last", member=name
            )
    tail = reader.trailing()
    if tail is not None:
        offset, rest = tail
        ctx.add(TRAILING, f"{len(rest)} bytes after the end of the archive", offset=offset)
        ctx.scan_nested(rest, "<trailing>", None)
