"""Process-wide wrappers around the seed and RNG-state functions, with their callers' stacks.

``torch.manual_seed``, ``torch.seed``, ``torch.set_rng_state``, the ``torch.cuda``
equivalents, ``random.seed``/``random.setstate`` and ``numpy.random.seed``/
``set_state`` are replaced by wrappers that call the original and then tell every
listener who called them (a stack of ``file:line in function``). Calls made from
inside PyTorch itself (``torch.random.fork_rng`` as used by activation
checkpointing) are not reported: they restore the state they saved.

The wrappers catch code that calls these functions by name. Code that reaches the
generators directly (``torch.default_generator.manual_seed``) bypasses them; the
RNG check's state hashing is what sees that. The census checks that the wrappers
are still installed.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["SEED_FUNCTIONS", "add_listener", "remove_listener"]

#: (module, attribute) of every function wrapped.
SEED_FUNCTIONS = (
    ("torch", "manual_seed"),
    ("torch", "seed"),
    ("torch", "set_rng_state"),
    ("torch.random", "manual_seed"),
    ("torch.random", "seed"),
    ("torch.random", "set_rng_state"),
    ("torch.cuda", "manual_seed"),
    ("torch.cuda", "manual_seed_all"),
    ("torch.cuda", "seed"),
    ("torch.cuda", "seed_all"),
    ("torch.cuda", "set_rng_state"),
    ("torch.cuda", "set_rng_state_all"),
    ("random", "seed"),
    ("random", "setstate"),
    ("numpy.random", "seed"),
    ("numpy.random", "set_state"),
)

Listener = Callable[[str, tuple[Any, ...], list[str]], None]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_lock = threading.Lock()
_listeners: list[Listener] = []
_installed: list[tuple[object, str, object, object]] = []  # owner, attr, original, wrapper
_local = threading.local()


def _caller_is_torch(stack: Sequence[traceback.FrameSummary]) -> bool:
    # The frame that called the wrapped function is the last one before the wrapper.
    return bool(stack) and stack[-1].filename.startswith(_TORCH_DIR)


def _wrap(qualname: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nested = getattr(_local, "active", False)
        _local.active = True
        try:
            result = original(*args, **kwargs)
        finally:
            _local.active = nested
        if not nested:
            stack = traceback.extract_stack(limit=14)[:-1]
            if not _caller_is_torch(stack):
                frames = [f"{f.filename}:{f.lineno} in {f.name}" for f in stack]
                shown = tuple(
                    a if isinstance(a, int | float | str) else type(a).__name__ for a in args
                )
                for listener in list(_listeners):
                    listener(qualname, shown, frames)
        return result

    wrapper.__trainguard_original__ = original  # type: ignore[attr-defined]
    return wrapper


def _install() -> list[tuple[object, str, object]]:
    wrappers: dict[int, Callable[..., Any]] = {}
    patches: list[tuple[object, str, object]] = []
    for module_name, attr in SEED_FUNCTIONS:
        owner = sys.modules.get(module_name)
        original = getattr(owner, attr, None) if owner is not None else None
        if owner is None or original is None or not callable(original):
            continue
        wrapper = wrappers.get(id(original))
        if wrapper is None:
            wrapper = wrappers[id(original)] = _wrap(f"{module_name}.{attr}", original)
        setattr(owner, attr, wrapper)
        _installed.append((owner, attr, original, wrapper))
        patches.append((owner, attr, wrapper))
    return patches


def add_listener(listener: Listener) -> list[tuple[object, str, object]]:
    """Start reporting seed calls to ``listener``; returns the (owner, attr, wrapper) patches."""
    with _lock:
        if not _installed:
            _install()
        _listeners.append(listener)
        return [(o, a, w) for o, a, _, w in _installed]


def remove_listener(listener: Listener) -> None:
    """Stop reporting to ``listener``; the last one out restores the original functions."""
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)
        if _listeners:
            return
        for owner, attr, original, wrapper in reversed(_installed):
            if getattr(owner, attr, None) is wrapper:  # leave someone else's replacement alone
                setattr(owner, attr, original)
        _installed.clear()
