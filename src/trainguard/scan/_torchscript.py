"""Static review of a TorchScript archive's sources and pickles.

``torch.jit.load`` compiles and later runs the archive's ``code/**.py`` by
design, so its presence is reported. The code itself is only *parsed* here
(``ast.parse``, never compiled or executed) and searched for what a model has
no business doing: operators from namespaces torch does not ship (native code
from a library loaded elsewhere), operators that touch files (``torch.save``,
``torch.from_file``), communication namespaces (``c10d``), Python module
access and imports (TorchScript's own printer never emits them).

The archive's pickles (``data.pkl``, ``constants.pkl``, ``bytecode.pkl``,
debug pickles) are read by torch's C++ unpickler, not Python's: it resolves a
fixed set of globals (``torch._utils._rebuild_tensor_v2``, storages,
``torch.jit._pickle.build_*``, ``collections.OrderedDict``) and classes
compiled from the archive's own code (``__torch__.*``), and fails on anything
else. :func:`review_pickle` lists globals outside that set; a pickle with
none cannot reach Python code through torch.
"""

from __future__ import annotations

import ast
import io
import pickletools
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CodeIssue", "review_pickle", "review_source"]

#: Operator namespaces registered by torch itself that only compute.
BUILTIN_NAMESPACES = frozenset(
    {
        "aten",
        "prim",
        "prims",
        "profiler",
        "quantized",
        "_quantized",
        "quantization",
        "quantized_decomposed",
        "sparse",
        "mkldnn",
        "mkldnn_prepacked",
        "mkl",
        "onednn",
        "rngprims",
        "inductor",
        "inductor_prims",
        "_native",
    }
)
#: Operators (any namespace) that read or write files.
FILE_OPS = frozenset({"save", "from_file", "load_tensor", "load", "load_library"})
#: Bare callables that evaluate code or touch the host.
HOST_BUILTINS = frozenset(
    {"open", "eval", "exec", "compile", "__import__", "input", "breakpoint", "exit", "quit"}
)
#: Python modules whose use means process, file or network access.
HOST_MODULES = frozenset(
    {
        "os",
        "sys",
        "subprocess",
        "socket",
        "shutil",
        "builtins",
        "__builtins__",
        "importlib",
        "ctypes",
        "pickle",
        "marshal",
        "io",
        "pathlib",
        "urllib",
        "http",
        "requests",
        "posix",
        "nt",
        "pty",
        "signal",
    }
)
#: Issues kept per source file.
_MAX_ISSUES = 20
#: Globals torch's TorchScript unpickler resolves itself (torch/csrc/jit/serialization/unpickler.cpp).
TORCHSCRIPT_GLOBALS = frozenset(
    {
        "collections OrderedDict",
        "builtins complex",
        "torch device",
        "torch._utils _rebuild_tensor",
        "torch._utils _rebuild_tensor_v2",
        "torch._utils _rebuild_qtensor",
        "torch._utils _rebuild_sparse_tensor",
        "torch.jit._pickle build_intlist",
        "torch.jit._pickle build_tensorlist",
        "torch.jit._pickle build_doublelist",
        "torch.jit._pickle build_boollist",
        "torch.jit._pickle build_tensor_from_id",
        "torch.jit._pickle restore_type_tag",
    }
)


@dataclass(frozen=True)
class CodeIssue:
    """One suspicious construct: where, what, and why."""

    line: int
    construct: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "construct": self.construct, "reason": self.reason}


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else ``None``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _judge_call(name: str) -> str | None:
    parts = name.split(".")
    namespace = None
    if parts[0] == "ops" and len(parts) >= 3:
        namespace = parts[1]
    elif parts[:2] == ["torch", "ops"] and len(parts) >= 4:
        namespace = parts[2]
    if namespace is not None and namespace not in BUILTIN_NAMESPACES:
        return f"operator namespace {namespace!r} is not one torch ships (custom native code)"
    if parts[0] in ("torch", "ops") and parts[-1] in FILE_OPS:
        return "operator reads or writes files"
    if len(parts) == 1 and parts[0] in HOST_BUILTINS:
        return "builtin evaluates code or touches the host"
    if parts[0] in HOST_MODULES:
        return f"Python module {parts[0]!r} gives process, file or network access"
    if parts[0] == "torch" and len(parts) > 1 and parts[1] == "distributed":
        return "communicates with other processes"
    return None


def review_source(source: bytes) -> tuple[list[CodeIssue], str | None]:
    """Suspicious constructs in one TorchScript source file, and a parse error if any.

    The source is parsed with :func:`ast.parse` only. An unparseable file is
    returned as an error: torch's own printer always emits valid Python.
    """
    try:
        tree = ast.parse(source.decode("utf-8"), mode="exec")
    except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError, MemoryError) as exc:
        return [], f"{type(exc).__name__}: {exc}"
    issues: list[CodeIssue] = []
    for node in ast.walk(tree):
        if len(issues) >= _MAX_ISSUES:
            break
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = ", ".join(a.name for a in node.names)
            issues.append(CodeIssue(line, f"import {names}", "TorchScript code never imports"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            reason = _judge_call(name) if name else None
            if name and reason:
                issues.append(CodeIssue(line, f"{name}(...)", reason))
        elif isinstance(node, ast.Attribute) and not isinstance(
            getattr(node, "ctx", None), ast.Del
        ):
            name = _dotted(node)
            if name and name.split(".")[0] in HOST_MODULES:
                issues.append(CodeIssue(line, name, "refers to a host-access Python module"))
    return _dedupe(issues), None


def _dedupe(issues: list[CodeIssue]) -> list[CodeIssue]:
    """Drop attribute findings already covered by a call on the same line."""
    seen: set[tuple[int, str]] = set()
    out: list[CodeIssue] = []
    for issue in sorted(issues, key=lambda i: (i.line, -len(i.construct))):
        key = (issue.line, issue.construct.removesuffix("(...)").split(".")[0])
        if key in seen:
            continue
        seen.add(key)
        out.append(issue)
    return out


def _resolvable(name: str) -> bool:
    module, _, attr = name.partition(" ")
    if module == "__torch__" or module.startswith("__torch__."):
        return bool(attr)  # a class compiled from the archive's own code
    if module == "torch" and attr.endswith("Storage"):
        return True
    return name in TORCHSCRIPT_GLOBALS


def review_pickle(data: bytes, check_time: Callable[[], None]) -> tuple[list[str], str | None]:
    """Globals in a TorchScript pickle that torch's unpickler would not resolve itself.

    Returns (unresolvable global names, problem): ``problem`` names what makes
    the pickle unlike torch's own output (a parse error, ``STACK_GLOBAL``,
    bytes after ``STOP``). Opcodes are decoded with :mod:`pickletools`;
    nothing is loaded.
    """
    foreign: list[str] = []
    stream = io.BytesIO(data)
    try:
        for n, (op, arg, _pos) in enumerate(pickletools.genops(stream)):
            if n % 10_000 == 0:
                check_time()
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                if not _resolvable(arg) and arg not in foreign:
                    foreign.append(arg)
            elif op.name in ("STACK_GLOBAL", "OBJ", "EXT1", "EXT2", "EXT4"):
                return foreign, f"opcode {op.name}, which torch's TorchScript writer never emits"
    except Exception as exc:  # pickletools raises many types on bad input
        return foreign, f"not a well-formed pickle ({type(exc).__name__}: {exc})"
    if stream.tell() != len(data):
        return foreign, f"{len(data) - stream.tell()} bytes follow the pickle's STOP"
    return foreign, None
