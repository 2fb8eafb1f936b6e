"""Plain text in model folders: JSON configs, vocabularies, merges, READMEs, source.

Text is recognised conservatively: the whole buffer is UTF-8 with no NUL and
no control characters other than tab, line breaks, form feed and escape, and
it does not parse as a pickle opcode stream (protocol-0 pickles are ASCII, and
``pickle.load`` runs their opcodes even when the stream is truncated). Content
that looks like text but is named like a binary model file (``.safetensors``,
``.pt``, ``.gguf``...) is not claimed either: a truncated or hand-made weights
file should stay an unknown format (a finding), not pass as text.

Text raises no finding by itself, with two exceptions that matter to loaders:
a JSON object with a ``chat_template`` key (``tokenizer_config.json``,
``chat_template.json``) and a ``*.jinja`` template file have their templates
analysed by :mod:`trainguard.scan._jinja`. ``auto_map`` and
``trust_remote_code`` need the folder around the file and are checked by
:mod:`trainguard.scan.folders`.
"""

from __future__ import annotations

import codecs
import re
from typing import IO, TYPE_CHECKING, Any, cast

from trainguard.findings import Rule, Severity
from trainguard.scan._pages import prefetch
from trainguard.scan._templaterules import template_rules

if TYPE_CHECKING:
    from trainguard.scan._context import ScanContext

NAME = "text"

CHAT_TEMPLATE = template_rules("chat-template", "Chat template")
TEMPLATE_FIELD = Rule(
    "chat-template.malformed-field",
    Severity.MEDIUM,
    "chat_template field has an unexpected shape",
    "Tokenizer configs hold a chat template as a string or a list of {name, template} "
    "objects. Anything else is not what a loader expects and was not analysed.",
)

_CHUNK = 1 << 20
#: C0 controls other than \t \n \v \f \r and ESC: binary, not text.
_BINARY = rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]"  # compiled on first use (re caches it)
#: Pickle opcodes that import or call: their presence makes a stream a pickle, not text.
_CALLS = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}
)
_IMPORTS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST"})
_PICKLE_OPCODES = 100_000  # opcodes examined before deciding from what was seen
#: Names of binary model formats: text content under them is a broken or forged file.
_BINARY_SUFFIXES = (
    ".safetensors", ".gguf", ".onnx", ".h5", ".hdf5", ".keras", ".npy", ".npz", ".pt", ".pth",
    ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".msgpack", ".tflite",
)  # fmt: skip


def detect(data: memoryview, filename: str | None) -> bool:
    """UTF-8 without binary control characters that is not a pickle opcode stream."""
    if filename is not None and filename.lower().endswith(_BINARY_SUFFIXES):
        return False  # the name breaks the tie: a weights file that reads as text is broken
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        for start in range(0, len(data), _CHUNK):
            prefetch(data, start, start + _CHUNK)  # detection reads without read-ahead
            chunk = bytes(data[start : start + _CHUNK])
            if re.search(_BINARY, chunk):
                return False
            decoder.decode(chunk, final=False)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return not _looks_like_pickle(data)


class _ViewReader:
    """The file-like reader ``pickletools.genops`` needs, over a memoryview without copying it."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        stop = len(self.data) if n < 0 else min(len(self.data), self.pos + n)
        out = bytes(self.data[self.pos : stop])
        self.pos = stop
        return out

    def readline(self) -> bytes:
        start = self.pos
        step = 4096
        while True:
            window = bytes(self.data[self.pos : self.pos + step])
            at = window.find(b"\n")
            if at >= 0:
                self.pos += at + 1
                return bytes(self.data[start : self.pos])
            self.pos += len(window)
            if not window:
                return bytes(self.data[start : self.pos])
            step *= 2

    def tell(self) -> int:
        return self.pos


def _looks_like_pickle(data: memoryview) -> bool:
    """A complete pickle, or a stream whose opcodes import and call before it breaks."""
    import pickletools  # only content that reads as text gets this far

    seen: set[str] = set()
    try:
        for count, (opcode, _arg, _pos) in enumerate(
            pickletools.genops(cast(IO[bytes], _ViewReader(data))), 1
        ):
            seen.add(opcode.name)
            if opcode.name == "STOP" or count >= _PICKLE_OPCODES:
                break
    except Exception:  # genops raises ValueError and others on non-pickles: decide from `seen`
        pass
    return "STOP" in seen or bool(seen & _IMPORTS and seen & (_CALLS - _IMPORTS))


def scan(data: memoryview, ctx: ScanContext) -> None:
    """Analyse chat templates in tokenizer configs and ``*.jinja`` files; other text is inert."""
    import json

    from trainguard.scan import _jinja  # loaded with the first text file, not at start-up

    if (ctx.filename or "").endswith(".jinja"):
        _jinja.check_template(
            bytes(data).decode("utf-8"), ctx, CHAT_TEMPLATE, where=ctx.filename or "template"
        )
        return
    head = bytes(data[:64]).lstrip()
    if not head.startswith(b"{") or len(data) > ctx.limits.json_header_bytes:
        return
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except ValueError:
        return  # text that starts with a brace; not JSON, nothing a loader parses as a config
    if isinstance(obj, dict) and "chat_template" in obj:
        _check_chat_template(obj["chat_template"], ctx)


def _check_chat_template(value: Any, ctx: ScanContext) -> None:
    from trainguard.scan import _jinja

    if isinstance(value, str):
        _jinja.check_template(value, ctx, CHAT_TEMPLATE, where="chat_template")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                name = item.get("name", i)
                _jinja.check_template(
                    item["template"], ctx, CHAT_TEMPLATE, where=f"chat_template[{name}]"
                )
            else:
                ctx.add(TEMPLATE_FIELD, f"chat_template[{i}] is not a {{name, template}} object")
        return
    if value is not None:
        ctx.add(TEMPLATE_FIELD, f"chat_template is a JSON {type(value).__name__}")
