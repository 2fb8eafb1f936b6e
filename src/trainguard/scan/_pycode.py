"""Static analysis of Python source shipped with models (``trust_remote_code`` modules).

The source is parsed with :func:`ast.parse` and never imported. The analysis
resolves import aliases (``import subprocess as sp``; ``from os import
system as s``) and reports:

* the modules the file imports, and which of them are risky;
* calls that run commands, execute code, open network connections, load
  native code or deserialize pickles, with their line numbers;
* calls at module level, which run the moment the module is imported;
* relative imports, which loaders fetch and import along with the file.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

__all__ = ["CodeReport", "analyse"]

#: Import roots worth listing: they give code access to processes, code, network or memory.
RISKY_MODULES = frozenset(
    """
    os subprocess socket requests urllib urllib3 http httpx aiohttp ftplib smtplib telnetlib
    paramiko ctypes cffi pickle marshal dill cloudpickle shelve importlib runpy builtins pty
    shutil webbrowser multiprocessing code codeop huggingface_hub
    """.split()  # noqa: SIM905 - a word list
)
#: Fully qualified callables, or module prefixes ending in ".", by category.
_RISKY_CALLS: dict[str, str] = {
    **dict.fromkeys(
        ["eval", "exec", "compile", "__import__", "execfile", "builtins.eval", "builtins.exec",
         "builtins.compile", "builtins.__import__", "importlib.import_module",
         "importlib.__import__", "importlib.util.spec_from_file_location", "runpy.",
         "marshal.load", "marshal.loads", "code.", "codeop."],
        "executes code",
    ),
    **dict.fromkeys(
        ["os.system", "os.popen", "os.execl", "os.execle", "os.execlp", "os.execlpe", "os.execv",
         "os.execve", "os.execvp", "os.execvpe", "os.spawnl", "os.spawnle", "os.spawnlp",
         "os.spawnlpe", "os.spawnv", "os.spawnve", "os.spawnvp", "os.spawnvpe", "os.fork",
         "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "os.kill", "os.killpg",
         "subprocess.", "pty.", "multiprocessing.", "webbrowser."],
        "runs processes",
    ),
    **dict.fromkeys(
        ["socket.", "requests.", "urllib.request.", "urllib3.", "http.client.", "httpx.",
         "aiohttp.", "ftplib.", "smtplib.", "telnetlib.", "paramiko.",
         "huggingface_hub.hf_hub_download", "huggingface_hub.snapshot_download",
         "huggingface_hub.cached_download"],
        "uses the network",
    ),
    **dict.fromkeys(["ctypes.", "cffi."], "loads native code"),
    **dict.fromkeys(
        ["pickle.load", "pickle.loads", "pickle.Unpickler", "dill.", "cloudpickle.",
         "shelve.open", "joblib.load", "torch.load"],
        "deserializes pickles",
    ),
    **dict.fromkeys(
        ["shutil.rmtree", "os.remove", "os.unlink", "os.rmdir", "os.removedirs"],
        "deletes files",
    ),
}  # fmt: skip
#: Module-level calls that are routine in modeling files (logging, typing, availability checks).
_ROUTINE_TOP_LEVEL = (
    "logging.",
    "transformers.utils.logging.",
    "typing.",
    "collections.",
    "dataclasses.",
    "warnings.filterwarnings",
    "os.path.",
    "os.environ.get",
    "os.getenv",
)
_LISTED = 30


@dataclass
class CodeReport:
    """What a Python file does that matters to someone about to import it."""

    imports: list[str] = field(default_factory=list)
    risky_imports: list[str] = field(default_factory=list)
    risky_calls: list[str] = field(default_factory=list)
    top_level_calls: list[str] = field(default_factory=list)
    relative_imports: list[str] = field(default_factory=list)
    error: str | None = None

    def evidence(self) -> dict[str, object]:
        out: dict[str, object] = {
            "imports": self.imports[:_LISTED],
            "risky_imports": self.risky_imports,
            "risky_calls": self.risky_calls[:_LISTED],
            "top_level_calls": self.top_level_calls[:_LISTED],
        }
        if self.error:
            out["error"] = self.error
        return out


def analyse(source: str, filename: str = "<model code>") -> CodeReport:
    """Parse ``source`` (never run it) and report its imports and risky calls."""
    report = CodeReport()
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        return report
    except RecursionError:
        report.error = "RecursionError: nesting too deep for the parser"
        return report
    visitor = _Visitor(report)
    visitor.visit_module(tree)
    report.imports = sorted(visitor.imports)
    report.risky_imports = sorted(m for m in visitor.imports if m.split(".")[0] in RISKY_MODULES)
    report.relative_imports = sorted(visitor.relative)
    return report


def _category(qualified: str, call: ast.Call) -> str | None:
    if qualified == "torch.load" and any(
        kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
        for kw in call.keywords
    ):
        return None  # weights_only=True uses the restricted unpickler
    if qualified in _RISKY_CALLS:
        return _RISKY_CALLS[qualified]
    for prefix, category in _RISKY_CALLS.items():
        if prefix.endswith(".") and qualified.startswith(prefix):
            return category
    if qualified in ("numpy.load", "np.load") and any(
        kw.arg == "allow_pickle"
        and not (isinstance(kw.value, ast.Constant) and kw.value.value is False)
        for kw in call.keywords
    ):
        return "deserializes pickles"
    return None


class _Visitor:
    """Walks the tree with an explicit stack, tracking import aliases and module level."""

    def __init__(self, report: CodeReport) -> None:
        self.report = report
        self.aliases: dict[str, str] = {}
        self.imports: set[str] = set()
        self.relative: set[str] = set()

    def visit_module(self, tree: ast.Module) -> None:
        # Aliases first: a call may precede the import that names it (inside functions).
        for node in ast.walk(tree):
            self._record_import(node)
        stack: list[tuple[ast.AST, bool]] = [(stmt, True) for stmt in reversed(tree.body)]
        while stack:
            node, top = stack.pop()
            if top and _is_main_guard(node):
                continue  # runs only as a script, not on import
            nested = top and not isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
            )
            if isinstance(node, ast.Call):
                self._call(node, top)
            elif isinstance(node, ast.Name) and node.id in ("__builtins__", "globals"):
                self._risky(f"line {node.lineno}: {node.id} executes code", top)
            # Class bodies run at import too; function bodies do not.
            keep_top = nested or (top and isinstance(node, ast.ClassDef))
            stack.extend((child, keep_top) for child in reversed(list(ast.iter_child_nodes(node))))

    def _record_import(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self.imports.add(alias.name)
                local = alias.asname or alias.name.split(".")[0]
                self.aliases[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                dots = "." * node.level
                if node.module:
                    self.relative.add(dots + node.module)
                else:  # from . import a, b: each name may be a sibling module
                    self.relative.update(dots + alias.name for alias in node.names)
                return
            module = node.module or ""
            self.imports.add(module)
            for alias in node.names:
                if alias.name != "*":
                    self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"

    def _qualified(self, func: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return None
        parts.append(self.aliases.get(func.id, func.id))
        return ".".join(reversed(parts))

    def _call(self, call: ast.Call, top: bool) -> None:
        name = self._qualified(call.func)
        if name is None:
            return
        category = _category(name, call)
        if category is None and name in ("getattr", "builtins.getattr") and len(call.args) >= 2:
            target = self._qualified(call.args[0]) or ""
            attr = call.args[1]
            if target.split(".")[0] in RISKY_MODULES or not isinstance(attr, ast.Constant):
                category = "executes code"  # getattr(os, "sys" + "tem") hides the call
        if category is not None:
            self._risky(f"line {call.lineno}: {name}() {category}", top)
        elif top and not name.startswith(_ROUTINE_TOP_LEVEL):
            self.report.top_level_calls.append(f"line {call.lineno}: {name}()")

    def _risky(self, text: str, top: bool) -> None:
        self.report.risky_calls.append(text + (" at import time" if top else ""))


def _is_main_guard(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )
