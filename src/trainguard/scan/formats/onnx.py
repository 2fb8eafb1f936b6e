"""ONNX models: external data that leaves the model folder, custom operator domains.

An ONNX model is a ``ModelProto`` protobuf with no magic bytes. It cannot run
Python, but it can make its loader *read files*: a tensor whose
``external_data`` location is absolute, climbs out with ``..`` or follows a
symbolic link is read from wherever it points (CVE-2022-25882 and its bypass
CVE-2024-27318 in ``onnx``), so a model can pull a private key into a tensor.
Nodes from domains outside the standard ones need a custom operator library
loaded next to the model, which is native code.

The walk covers the main graph, subgraphs in node attributes (``If``, ``Loop``,
``Scan``), training graphs, model-local functions and sparse initializers,
with an explicit stack bounded by ``ScanLimits.message_depth``. The ``onnx``
package is never imported.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from trainguard.errors import LimitExceeded
from trainguard.findings import Rule, Severity
from trainguard.scan import _protobuf as pb
from trainguard.scan.limits import DEFAULT_LIMITS

if TYPE_CHECKING:
    from pathlib import Path

    from trainguard.scan._context import ScanContext

NAME = "onnx"

EXTERNAL_ESCAPE = Rule(
    "onnx.external-data-escape",
    Severity.HIGH,
    "ONNX external data points outside the model folder",
    "Loading the model reads tensor bytes from the external data location. An absolute path, "
    "a '..' component or a symbolic link that leaves the model folder makes the loader read an "
    "arbitrary file (CVE-2022-25882, CVE-2024-27318 in onnx): a model can smuggle a private "
    "key or token into a tensor. Keep external data files inside the model folder.",
)
EXTERNAL_MISSING = Rule(
    "onnx.external-data-missing",
    Severity.MEDIUM,
    "ONNX external data file is missing",
    "A tensor stores its bytes in a file next to the model that is not there, so the model "
    "cannot be loaded as shipped and whatever file appears there later will be read.",
)
EXTERNAL_INVALID = Rule(
    "onnx.external-data-invalid",
    Severity.MEDIUM,
    "ONNX external data reference is malformed",
    "An external data entry has an empty location, unknown keys, a non-numeric offset or "
    "length, or a range past the end of its file. Loaders reject or misread such entries; "
    "a hand-edited reference is a sign of tampering.",
)
CUSTOM_DOMAIN = Rule(
    "onnx.custom-domain",
    Severity.MEDIUM,
    "ONNX model needs custom operators",
    "Nodes from operator domains outside the ONNX standard ones run only when a custom "
    "operator library (native code) is registered with the runtime. Identify that library "
    "and where it comes from before loading the model.",
)

#: Domains whose operators ship with ONNX and ONNX Runtime themselves.
STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training", "com.microsoft"}
)
#: Keys onnx's ExternalDataInfo understands.
_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})
#: ModelProto fields and their wire types (onnx.proto).
_MODEL_FIELDS = {
    1: pb.VARINT,  # ir_version
    2: pb.LEN,  # producer_name
    3: pb.LEN,  # producer_version
    4: pb.LEN,  # domain
    5: pb.VARINT,  # model_version
    6: pb.LEN,  # doc_string
    7: pb.LEN,  # graph
    8: pb.LEN,  # opset_import
    14: pb.LEN,  # metadata_props
    20: pb.LEN,  # training_info
    25: pb.LEN,  # functions
    26: pb.LEN,  # configuration
}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# Patterns are compiled on first use (re caches them).
_DRIVE = r"^[A-Za-z]:"  # C:foo and C:\\foo are both outside the folder
_SEPARATORS = r"[\\/]+"
_LISTED = 20  # names quoted in one finding's evidence


def detect(data: memoryview, filename: str | None) -> bool:
    """A buffer whose top-level fields are all ModelProto fields, with a graph or functions."""
    seen: set[int] = set()
    try:
        # The first tag that is not a ModelProto field ends this quickly for other content.
        for f in pb.iter_fields(data, max_fields=DEFAULT_LIMITS.metadata_entries):
            if _MODEL_FIELDS.get(f.number) != f.wire:
                return False
            if f.number == 1 and not 1 <= f.integer <= 1000:
                return False
            seen.add(f.number)
    except pb.WireError:
        return False
    return 7 in seen or 25 in seen


class _Tensor(NamedTuple):
    name: str
    entries: list[tuple[str, str]]
    external: bool
    where: str


class _Walk:
    """What the walk collected: tensors with external data, nodes by domain, local functions."""

    __slots__ = ("functions", "messages", "ops", "opset_domains", "tensors")

    def __init__(self) -> None:
        self.tensors: list[_Tensor] = []
        self.ops: dict[str, set[str]] = {}
        self.opset_domains: set[str] = set()
        self.functions: set[tuple[str, str]] = set()
        self.messages = 0


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Walk every graph and tensor; report external data and custom domains."""
    limits = ctx.limits
    max_fields = limits.metadata_entries
    model = pb.fields(data, max_fields=max_fields)
    walk = _Walk()
    # (kind, message bytes, depth, where) — an explicit stack instead of recursion.
    stack: list[tuple[str, memoryview, int, str]] = []
    for f in model.get(8, []):
        walk.opset_domains.add(_opset_domain(f.data, max_fields))
    for f in model.get(7, []):
        stack.append(("graph", f.data, 1, "graph"))
    for i, f in enumerate(model.get(20, [])):
        for sub in pb.iter_fields(f.data, max_fields=max_fields):
            if sub.number in (1, 2) and sub.wire == pb.LEN:
                stack.append(("graph", sub.data, 2, f"training_info[{i}]"))
    for f in model.get(25, []):
        stack.append(("function", f.data, 1, "function"))

    while stack:
        kind, buf, depth, where = stack.pop()
        if depth > limits.message_depth:
            raise LimitExceeded("message_depth", depth, limits.message_depth, subject=ctx.subject)
        walk.messages += 1
        if walk.messages % 1024 == 0:
            ctx.check_time()
        if walk.messages > limits.metadata_entries:
            raise LimitExceeded(
                "metadata_entries", walk.messages, limits.metadata_entries, subject=ctx.subject
            )
        stack.extend(_visit(kind, buf, depth, where, walk, max_fields))

    _report_external(walk.tensors, ctx)
    _report_domains(walk, ctx)


def _visit(
    kind: str, buf: memoryview, depth: int, where: str, walk: _Walk, max_fields: int
) -> list[tuple[str, memoryview, int, str]]:
    """Record what one message says; return the nested messages to visit."""
    msg = pb.fields(buf, max_fields=max_fields)
    out: list[tuple[str, memoryview, int, str]] = []
    nxt = depth + 1

    def push(kind2: str, number: int, label: str) -> None:
        for f in msg.get(number, []):
            out.append((kind2, f.data, nxt, label))

    if kind == "graph":
        push("node", 1, where)
        push("tensor", 5, f"{where}/initializer")
        push("sparse", 15, f"{where}/sparse_initializer")
    elif kind == "function":
        domain = _string(msg, 10)
        walk.functions.add((domain, _string(msg, 1)))
        for f in msg.get(9, []):
            walk.opset_domains.add(_opset_domain(f.data, max_fields))
        push("node", 7, f"function {domain}.{_string(msg, 1)}")
        push("attr", 11, f"function {domain}.{_string(msg, 1)}")
    elif kind == "node":
        op = _string(msg, 4)
        walk.ops.setdefault(_string(msg, 7), set()).add(op)
        push("attr", 5, f"{where}/{op}")
    elif kind == "attr":
        push("tensor", 5, where)
        push("tensor", 10, where)
        push("graph", 6, f"{where}/subgraph")
        push("graph", 11, f"{where}/subgraph")
        push("sparse", 22, where)
        push("sparse", 23, where)
    elif kind == "sparse":
        push("tensor", 1, f"{where}/values")
        push("tensor", 2, f"{where}/indices")
    elif kind == "tensor":
        entries = [_entry(f.data, max_fields) for f in msg.get(13, [])]
        location = msg.get(14, [])
        external = bool(location) and location[-1].integer == _EXTERNAL
        if entries or external:
            walk.tensors.append(_Tensor(_string(msg, 8), entries, external, where))
    return out


def _string(msg: dict[int, list[pb.Field]], number: int) -> str:
    values = msg.get(number)
    return pb.text(values[-1], 1024) if values else ""


def _opset_domain(buf: memoryview, max_fields: int) -> str:
    return _string(pb.fields(buf, max_fields=max_fields), 1)


def _entry(buf: memoryview, max_fields: int) -> tuple[str, str]:
    msg = pb.fields(buf, max_fields=max_fields)
    key = msg.get(1)
    value = msg.get(2)
    return (pb.text(key[-1]) if key else "", pb.text(value[-1]) if value else "")


# -- external data ------------------------------------------------------------


def _report_external(tensors: list[_Tensor], ctx: ScanContext) -> None:
    base = _model_dir(ctx)
    by_location: dict[tuple[str, str], list[_Tensor]] = {}
    for t in tensors:
        info = dict(t.entries)
        unknown = sorted({k for k, _ in t.entries} - _EXTERNAL_KEYS)
        problems = []
        if unknown:
            problems.append(f"unknown keys {unknown}")
        if t.entries and not t.external:
            problems.append("external_data entries on a tensor whose data_location is not EXTERNAL")
        if not info.get("location"):
            problems.append("no location")
        for key in ("offset", "length"):
            if key in info and not info[key].strip().isdigit():
                problems.append(f"{key} {info[key][:40]!r} is not a non-negative integer")
        if problems:
            ctx.add(
                EXTERNAL_INVALID,
                f"tensor {t.name!r}: {'; '.join(problems)}",
                tensor=t.name,
                where=t.where,
                entries=dict(t.entries),
            )
        for key in ("location", "basepath"):
            value = info.get(key)
            # basepath is only checked lexically: onnx resolves against the model's folder.
            if value and (key == "location" or _lexical_escape(value) is not None):
                by_location.setdefault((key, value), []).append(t)

    for (key, location), group in sorted(by_location.items()):
        names = [t.name for t in group[:_LISTED]]
        evidence: dict[str, Any] = {
            "location": location,
            "tensors": names,
            "count": len(group),
            "key": key,
        }
        reason = _lexical_escape(location)
        if reason is not None:
            ctx.add(
                EXTERNAL_ESCAPE,
                f"external data {key} {location!r} is an escape ({reason}); "
                f"{len(group)} tensor(s) would read it",
                reason=reason,
                **evidence,
            )
            continue
        if base is None or key != "location":
            continue  # a buffer or archive member: nothing on disk to resolve against
        _check_on_disk(base, location, group, evidence, ctx)


def _check_on_disk(
    base: Path, location: str, group: list[_Tensor], evidence: dict[str, Any], ctx: ScanContext
) -> None:
    real_base = os.path.realpath(base)
    target = os.path.realpath(os.path.join(base, location))
    if os.path.commonpath([real_base, target]) != real_base:
        ctx.add(
            EXTERNAL_ESCAPE,
            f"external data location {location!r} resolves to {target} through a symbolic "
            "link, outside the model folder",
            reason="symbolic link",
            resolved=target,
            **evidence,
        )
        return
    if not os.path.isfile(target):
        ctx.add(
            EXTERNAL_MISSING,
            f"external data file {location!r} is missing ({len(group)} tensor(s) need it)",
            **evidence,
        )
        return
    size = os.path.getsize(target)
    for t in group:
        info = dict(t.entries)
        offset, length = info.get("offset", "0").strip(), info.get("length", "0").strip()
        if offset.isdigit() and length.isdigit() and int(offset) + int(length) > size:
            ctx.add(
                EXTERNAL_INVALID,
                f"tensor {t.name!r} reads bytes {offset}+{length} of {location!r}, "
                f"which has {size} bytes",
                tensor=t.name,
                location=location,
                file_size=size,
            )


def _lexical_escape(location: str) -> str | None:
    """Why ``location`` leaves its folder whatever the file system says, or None."""
    if "\x00" in location:
        return "contains a NUL byte"
    if location.startswith(("/", "\\")) or re.match(_DRIVE, location):
        return "absolute path"
    if ".." in re.split(_SEPARATORS, location):
        return "'..' component"
    return None


def _model_dir(ctx: ScanContext) -> Path | None:
    """The folder of the scanned file when the subject is a file on disk (not a member)."""
    if ctx.depth != 0:
        return None
    from pathlib import Path  # ONNX files only

    path = Path(ctx.subject)
    try:
        return path.parent if path.is_file() else None
    except OSError:
        return None


# -- domains --------------------------------------------------------------------


def _report_domains(walk: _Walk, ctx: ScanContext) -> None:
    local = walk.functions
    custom: dict[str, set[str]] = {}
    for domain, ops in walk.ops.items():
        if domain in STANDARD_DOMAINS:
            continue
        needed = {op for op in ops if (domain, op) not in local}
        if needed:
            custom[domain] = needed
    local_domains = {d for d, _ in local}
    for domain in walk.opset_domains - STANDARD_DOMAINS - local_domains:
        custom.setdefault(domain, set())
    if custom:
        ctx.add(
            CUSTOM_DOMAIN,
            f"operators from non-standard domain(s) {', '.join(sorted(custom))} need a custom "
            "operator library",
            domains={d: sorted(ops)[:_LISTED] for d, ops in sorted(custom.items())},
        )
