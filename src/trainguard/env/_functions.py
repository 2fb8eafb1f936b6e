"""Critical functions in memory: are they still the code their source files define?

Two checks, both about the live function objects of the running process:

* against the *source*: a Python function's code object must equal the code
  object that compiling its own file gives at the same name and first line,
  and the file must lie in the package (or the standard library) the name
  belongs to. A function swapped in memory, a ``__code__`` replaced in place,
  or a wrapper around a foreign function all fail this;
* against a *capture*: the innermost function behind each name (after
  unwrapping legitimate ``functools.wraps`` layers, which torch adds at run
  time, e.g. the optimizer profiling hook) must be the object seen when the
  census was captured, with the same code, defaults and globals.

Built-in functions (``time.sleep``, ``os.kill``) must stay built-ins bound to a
C module; a Python function in their place is a replacement.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
import types
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "Fingerprint",
    "SourceIndex",
    "check_function",
    "check_module",
    "fingerprint",
    "resolve",
]


#: Modules whose callable wrapper types (lru_cache, partial...) may stand in for a function.
_WRAPPER_MODULES = ("functools", "_functools", "builtins", "typing", "contextlib")
_CYTHON_TYPES = ("cython_function_or_method", "fused_cython_function")


def resolve(dotted: str) -> object | None:
    """The object ``dotted`` names, using only modules already imported (never imports)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: object = module
        for attr in parts[cut:]:
            try:
                obj = getattr(obj, attr)
            except Exception:  # a property may raise anything
                return None
        return obj
    return None


def _raw(obj: object) -> object:
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    if isinstance(obj, types.MethodType):
        return obj.__func__
    return obj


class SourceIndex:
    """Code objects compiled from source files, by ``(co_name, co_firstlineno)``; cached."""

    def __init__(self) -> None:
        self._cache: dict[
            tuple[str, int, int], dict[tuple[str, int], list[types.CodeType]] | None
        ] = {}
        self._files: dict[str, types.ModuleType] = {}
        self._files_for = -1

    def module_for(self, filename: str) -> types.ModuleType | None:
        """The imported module whose source file is ``filename``.

        Wrappers copy ``__module__`` from what they wrap, so the file, not
        ``__module__``, tells which module's globals a function must run with.
        """
        if self._files_for != len(sys.modules):
            self._files = {}
            for module in list(sys.modules.values()):
                origin = getattr(module, "__file__", None)
                if isinstance(origin, str) and origin.endswith(".py"):
                    self._files[os.path.realpath(origin)] = module
            self._files_for = len(sys.modules)
        return self._files.get(os.path.realpath(filename))

    def codes(self, filename: str) -> dict[tuple[str, int], list[types.CodeType]] | None:
        try:
            st = os.stat(filename)
        except OSError:
            return None
        key = (filename, st.st_mtime_ns, st.st_size)
        if key not in self._cache:
            self._cache[key] = self._compile(filename)
        return self._cache[key]

    @staticmethod
    def _compile(filename: str) -> dict[tuple[str, int], list[types.CodeType]] | None:
        try:
            with open(filename, "rb") as fh:
                source = fh.read()
            top = compile(source, filename, "exec", dont_inherit=True)
        except (OSError, SyntaxError, ValueError):
            return None
        index: dict[tuple[str, int], list[types.CodeType]] = {}
        stack = [top]
        while stack:
            code = stack.pop()
            index.setdefault((code.co_name, code.co_firstlineno), []).append(code)
            stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        return index

    def matches(self, code: types.CodeType) -> bool | None:
        """True/False, or None when the source cannot be read or compiled."""
        index = self.codes(code.co_filename)
        if index is None:
            return None
        return any(c == code for c in index.get((code.co_name, code.co_firstlineno), ()))


def _chain(fn: types.FunctionType, depth: int = 0) -> Iterator[types.FunctionType]:
    """``fn``, the functions it wraps (``__wrapped__``) and those in its closure."""
    yield fn
    if depth >= 4:
        return
    seen = {id(fn)}
    inner = [getattr(fn, "__wrapped__", None)]
    inner += [c.cell_contents for c in (fn.__closure__ or ()) if _cell_full(c)]
    for obj in inner:
        raw = _raw(obj)
        if isinstance(raw, types.FunctionType) and id(raw) not in seen:
            seen.add(id(raw))
            yield from _chain(raw, depth + 1)


def _cell_full(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises ValueError when empty
    except ValueError:
        return False
    return True


def innermost(obj: object) -> object:
    """Follow ``__wrapped__`` to the function a name really stands for."""
    raw = _raw(obj)
    for _ in range(16):
        nxt = getattr(raw, "__wrapped__", None)
        if nxt is None:
            break
        raw = _raw(nxt)
    return raw


@dataclass(frozen=True)
class Fingerprint:
    """What a name pointed to when captured: the innermost object and its mutable parts."""

    obj: object
    code: types.CodeType | None
    defaults: object
    kwdefaults: object
    globals_id: int | None

    def differs(self, other: Fingerprint) -> str | None:
        if other.obj is not self.obj:
            return "a different object than when captured"
        if other.code is not self.code:
            return "its __code__ was replaced since captured"
        # Identity, not equality: defaults may hold tensors, and a reassignment is the event.
        if other.defaults is not self.defaults or not _same_items(
            other.kwdefaults, self.kwdefaults
        ):
            return "its default arguments changed since captured"
        if other.globals_id != self.globals_id:
            return "its globals changed since captured"
        return None


def _same_items(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(a[k] is b[k] for k in a)
    return a is b


def fingerprint(obj: object) -> Fingerprint:
    inner = innermost(obj)
    if isinstance(inner, types.FunctionType):
        kwdefaults = dict(inner.__kwdefaults__) if inner.__kwdefaults__ is not None else None
        return Fingerprint(
            inner, inner.__code__, inner.__defaults__, kwdefaults, id(inner.__globals__)
        )
    return Fingerprint(inner, None, None, None, None)


@functools.lru_cache(maxsize=4096)
def _realpath(path: str) -> str:
    return os.path.realpath(path)


@functools.lru_cache(maxsize=256)
def _roots_for(top_name: str, origin: str | None) -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = [_realpath(paths["stdlib"]), _realpath(paths["platstdlib"])]
    if origin and os.path.basename(origin).startswith("__init__."):
        # A package's folder; a single-file module (random.py) lives in the stdlib.
        roots.append(os.path.dirname(_realpath(origin)))
    return tuple(dict.fromkeys(roots))


def allowed_roots(dotted: str) -> tuple[str, ...]:
    """Folders a function named ``dotted`` may legitimately be defined in."""
    top_name = dotted.split(".", 1)[0]
    origin = getattr(sys.modules.get(top_name), "__file__", None)
    return _roots_for(top_name, origin if isinstance(origin, str) else None)


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    real = _realpath(path)
    return any(real == r or real.startswith(r + os.sep) for r in roots)


def check_function(
    dotted: str, obj: object, index: SourceIndex, *, generated_ok: bool = False
) -> list[str]:
    """Problems with the live object ``obj`` bound to ``dotted`` (empty when sound).

    ``generated_ok`` accepts code compiled from ``<string>``: the dunder methods
    that ``dataclasses`` and ``collections.namedtuple`` generate.
    """
    raw = _raw(obj)
    if isinstance(raw, types.BuiltinFunctionType):
        owner = getattr(raw, "__self__", None)
        if isinstance(owner, types.ModuleType):
            top = dotted.split(".", 1)[0]
            if owner.__name__ in sys.builtin_module_names or owner.__name__.split(".")[0] == top:
                return []
            return [f"is a built-in of module {owner.__name__!r}, not of {top!r}"]
        owner_mod = type(owner).__module__ if owner is not None else ""
        if owner_mod.split(".")[0] in (dotted.split(".", 1)[0], "builtins"):
            return []
        return [f"is a built-in method of an unexpected {type(owner).__qualname__} object"]
    if isinstance(
        raw, (types.WrapperDescriptorType, types.MethodDescriptorType, types.MethodWrapperType)
    ):
        return []
    if type(raw).__name__ in _CYTHON_TYPES:
        # Cython functions are compiled code like built-ins; only their home can be checked.
        home = str(getattr(raw, "__module__", "") or "")
        if home.split(".")[0] == dotted.split(".", 1)[0]:
            return []
        return [f"is a compiled function of module {home!r}"]
    if not isinstance(raw, types.FunctionType):
        if isinstance(raw, type) or not callable(raw):
            return []
        kind = type(raw)
        trusted = kind.__module__.split(".")[0] in (dotted.split(".", 1)[0], *_WRAPPER_MODULES)
        if not trusted:
            return [f"is a {kind.__qualname__} object from {kind.__module__}, not a function"]
        inner = innermost(raw)
        if not isinstance(inner, types.FunctionType):
            return []
        raw = inner
    roots = allowed_roots(dotted)
    problems = []
    for fn in _chain(raw):
        code = fn.__code__
        where = f"{code.co_filename}:{code.co_firstlineno}"
        if generated_ok and code.co_filename == "<string>":
            continue
        if not _inside(code.co_filename, roots):
            problems.append(f"runs {fn.__qualname__} from {where}, outside its package")
            continue
        match = index.matches(code)
        if match is False:
            problems.append(f"code of {fn.__qualname__} differs from its source {where}")
        elif match is None:
            problems.append(
                f"source {code.co_filename} of {fn.__qualname__} cannot be read to compare"
            )
        home_module = index.module_for(code.co_filename)
        if home_module is not None and fn.__globals__ is not home_module.__dict__:
            problems.append(f"{fn.__qualname__} runs with globals other than its module's")
    return problems


def check_module(module: types.ModuleType, index: SourceIndex) -> list[tuple[str, str]]:
    """Every function and method the module's source defines at top level, checked in memory.

    Returns ``(dotted name, problem)`` pairs. Names the source defines but the
    module no longer binds to a function are judged by :func:`check_function`
    (a replacement by a foreign callable is a problem; a re-binding to a
    torch or functools object is not).
    """
    filename = getattr(module, "__file__", None)
    if not filename or not filename.endswith(".py"):
        return []
    codes = index.codes(filename)
    if codes is None:
        return []
    top_level = [c for c in codes.get(("<module>", 0), []) + codes.get(("<module>", 1), [])]
    problems: list[tuple[str, str]] = []
    name = module.__name__
    seen: set[str] = set()
    for top in top_level:
        for const in top.co_consts:
            if not isinstance(const, types.CodeType) or const.co_name.startswith("<"):
                continue
            attr_name = const.co_name
            if attr_name in seen:
                continue
            seen.add(attr_name)
            attr = module.__dict__.get(attr_name)
            if attr is None:
                continue
            if isinstance(attr, type):
                if attr.__module__ != name:
                    continue
                # Every function in the class, not only those the source defines:
                # a method added in memory (AdamW.step over the inherited one) counts.
                generated = hasattr(attr, "__dataclass_fields__") or hasattr(attr, "_fields")
                for member_name, member in list(vars(attr).items()):
                    if isinstance(member, property):
                        member = member.fget
                    if not isinstance(_raw(member), types.FunctionType):
                        continue
                    dotted = f"{name}.{attr_name}.{member_name}"
                    dunder = member_name.startswith("__") and member_name.endswith("__")
                    found = check_function(dotted, member, index, generated_ok=generated and dunder)
                    problems += [(dotted, p) for p in found]
            else:
                dotted = f"{name}.{attr_name}"
                problems += [(dotted, p) for p in check_function(dotted, attr, index)]
    return problems
