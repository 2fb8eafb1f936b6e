"""Python kernels in torch's dispatcher, and global torch function/dispatch modes.

``torch.library.Library("aten", "IMPL").impl("add.Tensor", fn, "CPU")`` makes
every CPU ``torch.add`` in the process call ``fn``: sabotage without touching
a file. The C++ dispatcher knows every registration; ``_dispatch_dump`` prints
each kernel with the place it was registered from: a C++ source for built-in
kernels, a ``file.py:line`` for Python ones, and marks a kernel that a later
registration displaced as ``(inactive)``.

The registration site cannot be trusted on its own (``torch.library.impl``
reports its own line inside torch), so registrations are compared with a
reference: the set a pristine interpreter produces after importing the same
torch modules (:func:`pristine_registrations`), or the set captured earlier
in this process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["Registration", "active_modes", "pristine_registrations", "python_registrations"]

#: (operator, dispatch key, inactive, registered-at)
Registration = tuple[str, str, bool, str]

_LINE = re.compile(r"^(\S+?)( \(inactive\))?: registered at (.*?) :: ")
_CPP = re.compile(r"\.(cpp|cc|cxx|c|h|hpp|cu|cuh|mm)(:\d+)?$")


def _torch() -> Any:
    return sys.modules.get("torch")


def python_registrations(torch: Any | None = None) -> set[Registration]:
    """Every kernel registered from Python, active or displaced, across all operators."""
    torch = torch or _torch()
    if torch is None:
        return set()
    out: set[Registration] = set()
    for name in torch._C._dispatch_get_all_op_names():
        for line in torch._C._dispatch_dump(name).splitlines():
            match = _LINE.match(line)
            if match and not _CPP.search(match.group(3)):
                out.add((name, match.group(1), bool(match.group(2)), match.group(3)))
    return out


def cpp_displaced(torch: Any | None = None, ops: Iterable[str] = ()) -> set[tuple[str, str]]:
    """``(operator, key)`` pairs of ``ops`` whose C++ kernel is now inactive (displaced)."""
    torch = torch or _torch()
    out: set[tuple[str, str]] = set()
    if torch is None:
        return out
    for name in set(ops):
        for line in torch._C._dispatch_dump(name).splitlines():
            match = _LINE.match(line)
            if match and match.group(2) and _CPP.search(match.group(3)):
                out.add((name, match.group(1)))
    return out


def _reference_script(modules: list[str]) -> str:
    return (
        "import importlib, json, re, sys\n"
        f"mods = {modules!r}\n"
        "import torch\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception:\n"
        "        pass\n"
        f"_LINE = re.compile({_LINE.pattern!r})\n"
        f"_CPP = re.compile({_CPP.pattern!r})\n"
        "out = []\n"
        "for name in torch._C._dispatch_get_all_op_names():\n"
        "    for line in torch._C._dispatch_dump(name).splitlines():\n"
        "        m = _LINE.match(line)\n"
        "        if m and not _CPP.search(m.group(3)):\n"
        "            out.append([name, m.group(1), bool(m.group(2)), m.group(3)])\n"
        "sys.stdout.write(json.dumps(out))\n"
    )


def pristine_registrations(
    python: str | None = None, *, timeout: float = 300.0
) -> set[Registration]:
    """The Python registrations of a fresh interpreter after importing the torch modules
    this process has imported. Runs ``python -I`` (no user site, no PYTHON* variables).

    Raises ``RuntimeError`` when the reference process fails.
    """
    modules = sorted(
        n
        for n, m in list(sys.modules.items())
        if m is not None and (n == "torch" or n.startswith("torch."))
    )
    proc = subprocess.run(
        [python or sys.executable, "-I", "-c", _reference_script(modules)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reference interpreter failed: {proc.stderr.strip()[-300:]}")
    return {(str(a), str(b), bool(c), str(d)) for a, b, c, d in json.loads(proc.stdout)}


def active_modes(torch: Any | None = None) -> list[tuple[str, str]]:
    """``(kind, class)`` of every torch function / dispatch mode active right now."""
    torch = torch or _torch()
    if torch is None:
        return []
    modes: list[tuple[str, str]] = []
    try:
        from torch.overrides import _get_current_function_mode_stack
        from torch.utils._python_dispatch import _get_current_dispatch_mode_stack
    except ImportError:  # pragma: no cover - other torch versions
        return modes
    for kind, stack in (
        ("function", _get_current_function_mode_stack()),  # type: ignore[no-untyped-call]
        ("dispatch", _get_current_dispatch_mode_stack()),
    ):
        for mode in stack:
            cls = type(mode)
            modes.append((kind, f"{cls.__module__}.{cls.__qualname__}"))
    return modes
