"""PyTorch zip checkpoints (``torch.save``) and TorchScript archives (``torch.jit.save``).

What torch reads, from ``torch/serialization.py`` and ``PyTorchStreamReader``:
the archive prefix is the first central-directory name up to its first ``/``;
records are looked up as ``<prefix>/<name>`` through miniz, *case-insensitively*,
the first duplicate winning; ``torch.load`` refuses archives with a name
outside the prefix, treats the archive as TorchScript when a record is called
exactly ``constants.pkl`` (and hands it to ``torch.jit.load``), and otherwise
unpickles ``data.pkl``, reading tensors from ``data/<key>`` and the small
records ``version`` (or ``.data/version``), ``byteorder``, ``.format_version``,
``.storage_alignment`` and ``.data/serialization_id``. ``torch.jit.load``
unpickles ``data.pkl``, ``constants.pkl`` (and ``bytecode.pkl``, debug
pickles) and compiles ``code/**.py``.

Every pickle ``torch.load`` unpickles with Python goes to the pickle scanner.
TorchScript pickles, which only torch's C++ unpickler reads, are checked for
globals that unpickler would not resolve, and go to the pickle scanner too
when they have any. Every other member except tensor storages is scanned as
whatever it is. Storages are not read (a multi-GB checkpoint scans in
milliseconds); only their layout is checked and their first bytes sniffed for
a pickle. TorchScript code is reviewed with ``ast`` only
(:mod:`trainguard.scan._torchscript`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from trainguard.findings import Rule, Severity
from trainguard.scan._zip import (
    Archive,
    Member,
    central_names,
    looks_like_pickle,
    read_archive,
    read_member,
    scan_member,
    scan_outside,
)

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "torch_zip"

TORCHSCRIPT = Rule(
    "torch.torchscript",
    Severity.LOW,
    "TorchScript archive: loading it runs its code",
    "torch.jit.load (and torch.load, which dispatches to it) compiles the archive's "
    "TorchScript and the model runs it. TorchScript cannot import Python modules, but it can "
    "call any registered operator. The code was reviewed statically; trust its origin.",
)
TORCHSCRIPT_CODE = Rule(
    "torch.torchscript-code",
    Severity.HIGH,
    "TorchScript code does more than compute",
    "The archive's TorchScript calls operators outside torch's own namespaces (native code "
    "from a custom library), operators that read or write files (torch.save, "
    "torch.from_file), communication ops, or Python modules: behaviour no model needs.",
)
TORCHSCRIPT_PICKLE = Rule(
    "torch.torchscript-pickle",
    Severity.HIGH,
    "TorchScript pickle is not what torch writes",
    "TorchScript pickles are read by torch's C++ unpickler, which only resolves torch's own "
    "helpers and classes compiled from the archive. This one references other globals or "
    "opcodes (a Python pickle payload planted in a TorchScript archive, for any tool that "
    "unpickles it with Python); it was also scanned as a Python pickle.",
)
TORCHSCRIPT_UNPARSEABLE = Rule(
    "torch.torchscript-unparseable",
    Severity.HIGH,
    "TorchScript source cannot be parsed",
    "torch's own printer always writes valid Python; a source file that does not parse was "
    "edited by hand, and what the TorchScript compiler makes of it cannot be reviewed.",
)
AMBIGUOUS_PREFIX = Rule(
    "torch.ambiguous-prefix",
    Severity.HIGH,
    "Checkpoint has a torch layout under several prefixes",
    "torch reads the prefix of the first central-directory entry; a tool that picks another "
    "data.pkl reads different content. Every copy was scanned.",
)
CASE_FOLDED = Rule(
    "torch.case-folded-record",
    Severity.HIGH,
    "torch finds a record only by ignoring case",
    "miniz looks records up case-insensitively, so torch unpickles e.g. 'archive/DATA.PKL' as "
    "data.pkl while scanners that look for the exact name skip it.",
)
FOREIGN_MEMBER = Rule(
    "torch.foreign-member",
    Severity.MEDIUM,
    "Checkpoint member outside the archive prefix",
    "torch.load refuses archives with members outside the first entry's folder; other tools "
    "read them. Nothing torch writes looks like this. The members were scanned.",
)
UNREFERENCED_PICKLE = Rule(
    "torch.unreferenced-pickle",
    Severity.MEDIUM,
    "Checkpoint carries a pickle torch never unpickles",
    "A member that is a pickle sits where torch does not unpickle it (a storage, an extra "
    "file, a hidden entry): dead weight at best, a second-stage payload for custom loading "
    "code at worst. It was scanned as a pickle.",
)
STORAGE_LAYOUT = Rule(
    "torch.storage-layout",
    Severity.MEDIUM,
    "Tensor storage is not laid out as torch writes it",
    "torch.save stores tensor data uncompressed at 64-byte aligned offsets. A compressed "
    "storage makes the loader inflate it (a decompression bomb torch does not bound); a "
    "misaligned one shows the file was not written by torch.",
)
MALFORMED = Rule(
    "torch.malformed",
    Severity.MEDIUM,
    "Checkpoint structure torch would reject",
    "A record torch checks (version, byteorder, the archive prefix) is missing or not what "
    "torch writes. torch.load would fail, other tools may still read the archive.",
)

#: Storages are written at multiples of this (caffe2 kFieldAlignment).
ALIGNMENT = 64
_TS_PICKLES = (b"data.pkl", b"constants.pkl", b"bytecode.pkl")


def _padded_number(value: bytes) -> bool:
    return value.strip().isdigit()  # rb"\s*\d+\s*": ASCII whitespace and digits only


_ID_CHARS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.-"


def _serialization_id(value: bytes) -> bool:
    return len(value) <= 256 and not value.translate(None, _ID_CHARS)  # rb"[0-9A-Za-z_.-]{0,256}"


#: Small records torch reads, and what torch writes in them (plain tests, not regexes:
#: every checkpoint has them, and each process would compile the patterns first).
_METADATA: dict[bytes, Callable[[bytes], bool]] = {
    b"version": _padded_number,
    b".data/version": _padded_number,
    b"byteorder": (b"little", b"big").__contains__,
    b".format_version": bytes.isdigit,
    b".storage_alignment": bytes.isdigit,
    b".data/serialization_id": _serialization_id,
}


def layout_prefixes(names: list[bytes]) -> list[bytes]:
    """Prefixes (in order, case-folded) under which a torch pickle record sits."""
    found: list[bytes] = []
    for name in names:
        head, sep, rest = name.partition(b"/")
        if sep and rest.lower() in _TS_PICKLES and head.lower() not in found:
            found.append(head.lower())
    return found


def detect(data: memoryview, filename: str | None) -> bool:
    return bool(layout_prefixes(central_names(data)))


class _View:
    """How torch sees the archive."""

    __slots__ = ("compressed", "dispatches", "foreign", "misaligned", "prefix", "torchscript")

    def __init__(self, prefix: bytes | None, torchscript: bool) -> None:
        self.prefix = prefix
        #: torch.jit.load semantics apply (a constants.pkl record, in any case).
        self.torchscript = torchscript
        #: torch.load dispatches to torch.jit.load (constants.pkl with this exact name).
        self.dispatches = False
        self.foreign: list[str] = []
        self.misaligned: list[str] = []
        self.compressed: list[str] = []


def _relative(member: Member, view: _View) -> bytes | None:
    """The record name torch would use for ``member`` (lower-cased), or ``None``."""
    if view.prefix is None or member.source != "central":
        return None
    head = view.prefix + b"/"
    if member.raw_name[: len(head)].lower() != head.lower():
        return None
    return member.raw_name[len(head) :].lower()


def scan(data: memoryview, ctx: ScanContext) -> None:
    archive = read_archive(data, ctx)
    view = _torch_view(archive, ctx)
    if view.torchscript:
        ctx.add(TORCHSCRIPT, "TorchScript archive: torch.jit.load compiles and runs its code")
    for member in archive.members:
        ctx.check_time()
        if not member.is_dir:
            _scan_member(archive, member, view, ctx)
    if view.foreign:
        ctx.add(
            FOREIGN_MEMBER,
            f"{len(view.foreign)} member(s) outside the prefix "
            f"{(view.prefix or b'').decode('utf-8', 'replace')!r}, first {view.foreign[0]!r}",
            members=view.foreign[:20],
        )
    if view.compressed:
        ctx.add(
            STORAGE_LAYOUT,
            f"{len(view.compressed)} compressed storage(s), first {view.compressed[0]!r}",
            members=view.compressed[:20],
        )
    if view.misaligned:
        ctx.add(
            STORAGE_LAYOUT,
            f"{len(view.misaligned)} storage(s) not {ALIGNMENT}-byte aligned, first "
            f"{view.misaligned[0]!r}",
            severity=Severity.LOW,
            members=view.misaligned[:20],
        )
    scan_outside(archive)


def _torch_view(archive: Archive, ctx: ScanContext) -> _View:
    """The prefix torch picks, whether it is TorchScript, and structural findings."""
    # miniz indexes only as many entries as the end record declares.
    visible = [m for m in archive.members if m.source == "central"][: archive.declared_count]
    prefixes = layout_prefixes([m.raw_name for m in archive.members])
    if len(prefixes) > 1:
        ctx.add(
            AMBIGUOUS_PREFIX,
            f"torch layout under {len(prefixes)} prefixes "
            f"{[p.decode('utf-8', 'replace') for p in prefixes]}",
            prefixes=[p.decode("utf-8", "replace") for p in prefixes],
        )
    first = visible[0].raw_name if visible else b""
    prefix = first.partition(b"/")[0] if b"/" in first else None
    if prefix is None:
        ctx.add(MALFORMED, "the first entry is not in a folder: torch.load refuses the archive")
    view = _View(prefix, False)
    records = {_relative(m, view) for m in visible}
    if prefix is not None and not records & {b"version", b".data/version"}:
        ctx.add(MALFORMED, "no version record: torch.load refuses the archive")
    exact = prefix + b"/constants.pkl" if prefix is not None else None
    view.dispatches = any(m.raw_name == exact for m in visible)
    view.torchscript = view.dispatches or b"constants.pkl" in records
    return view


def _torch_reads_pickle(rel: bytes, view: _View) -> bool:
    if view.torchscript:
        return rel in _TS_PICKLES or rel.endswith(b".debug_pkl")
    return rel == b"data.pkl"


def _scan_member(archive: Archive, member: Member, view: _View, ctx: ScanContext) -> None:
    # torch.load lists records with a case-sensitive prefix test and refuses strays;
    # lookups themselves ignore case, so a stray may still be what torch.jit.load reads.
    prefix = view.prefix
    if (
        member.source == "central"
        and prefix is not None
        and not member.raw_name.startswith(prefix + b"/")
    ):
        view.foreign.append(member.name)
    rel = _relative(member, view)
    if rel is None:
        _scan_unread(archive, member, ctx)
        return
    original = member.raw_name[len(view.prefix or b"") + 1 :]
    if _torch_reads_pickle(rel, view):
        if original != rel and original.lower() == rel and rel in _TS_PICKLES:
            ctx.add(
                CASE_FOLDED,
                f"{member.name!r} is unpickled by torch as {rel.decode()!r}",
                member=member.name,
            )
        if rel == b"data.pkl" and not view.dispatches:
            scan_member(archive, member, "pickle")  # torch.load unpickles it with Python
        else:
            _review_torchscript_pickle(archive, member, ctx)
    elif _is_storage(rel, view):
        _check_storage(archive, member, view, ctx)
    elif rel in _METADATA:
        _check_metadata(archive, member, _METADATA[rel], ctx)
    elif view.torchscript and rel.startswith(b"code/") and rel.endswith(b".py"):
        _review_code(archive, member, ctx)
    else:
        _scan_unread(archive, member, ctx)


def _review_torchscript_pickle(archive: Archive, member: Member, ctx: ScanContext) -> None:
    """A pickle only torch's C++ unpickler reads: check its globals, else scan it as Python."""
    from trainguard.scan._torchscript import review_pickle  # TorchScript archives only

    content = read_member(archive, member)
    if content is None:
        return
    foreign, problem = review_pickle(bytes(content), ctx.check_time)
    if not foreign and problem is None:
        return
    reasons = ([f"globals {foreign[:10]}"] if foreign else []) + ([problem] if problem else [])
    ctx.add(
        TORCHSCRIPT_PICKLE,
        f"{member.name!r}: " + "; ".join(reasons),
        member=member.name,
        globals=foreign[:20],
    )
    scan_member(archive, member, "pickle", content)


def _is_storage(rel: bytes, view: _View) -> bool:
    for folder in (b"data/", b"constants/") if view.torchscript else (b"data/",):
        if rel.startswith(folder) and len(rel) > len(folder) and b"/" not in rel[len(folder) :]:
            return True
    return False


def _scan_unread(archive: Archive, member: Member, ctx: ScanContext) -> None:
    """A member torch.load does not read: scan it; a pickle there is itself suspicious."""
    content = read_member(archive, member) if member.supported else None
    pickled = content is not None and looks_like_pickle(content)
    if pickled or member.raw_name.lower().endswith((b".pkl", b".pickle")):
        ctx.add(
            UNREFERENCED_PICKLE,
            f"{member.name!r} is a pickle torch does not unpickle",
            member=member.name,
        )
    if content is not None:
        scan_member(archive, member, "pickle" if pickled else None, content)


def _check_storage(archive: Archive, member: Member, view: _View, ctx: ScanContext) -> None:
    if member.method != 0:
        view.compressed.append(member.name)
        _scan_unread(archive, member, ctx)
        return
    if member.data_offset % ALIGNMENT:
        view.misaligned.append(member.name)
    # Sniff without reading the tensor: a pickle starts with PROTO and ends with STOP. The
    # head shares a page with the local header already read; the tail is touched only when
    # the head matches (a cold multi-GB file must not cost a page fault per storage).
    data, start = archive.data, member.data_offset
    end = min(member.end, len(data))
    if (
        end - start >= 3
        and data[start] == 0x80
        and 2 <= data[start + 1] <= 5
        and data[end - 1] == 0x2E
    ):
        ctx.add(
            UNREFERENCED_PICKLE,
            f"storage {member.name!r} holds a pickle; torch reads it as raw tensor bytes",
            member=member.name,
        )
        scan_member(archive, member, "pickle")


def _check_metadata(
    archive: Archive, member: Member, expected: Callable[[bytes], bool], ctx: ScanContext
) -> None:
    content = read_member(archive, member)
    if content is not None and len(content) <= 4096 and expected(bytes(content)):
        return  # exactly what torch writes: nothing more to scan
    ctx.add(
        MALFORMED,
        f"record {member.name!r} is not what torch writes ({member.size} bytes)",
        member=member.name,
    )
    if content is not None:
        scan_member(archive, member, None, content)


def _review_code(archive: Archive, member: Member, ctx: ScanContext) -> None:
    from trainguard.scan._torchscript import review_source  # TorchScript archives only

    source = read_member(archive, member)
    if source is None:
        return
    issues, error = review_source(bytes(source))
    if error is not None:
        ctx.add(TORCHSCRIPT_UNPARSEABLE, f"{member.name!r}: {error}", member=member.name)
        return
    if issues:
        first = issues[0]
        ctx.add(
            TORCHSCRIPT_CODE,
            f"{member.name!r} line {first.line}: {first.construct}: {first.reason}"
            + (f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""),
            member=member.name,
            issues=[i.to_dict() for i in issues],
        )
