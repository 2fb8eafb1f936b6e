"""What the census looks at: PyTorch's hook registries, mode stacks and dispatch tables.

Pure inspection helpers, no judgement: :mod:`.census` compares their results with
the baseline taken at ``protect()``. Every function returns plain data.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.modules.module as module_mod
import torch.optim.optimizer as optim_mod

__all__ = [
    "GLOBAL_MODULE_HOOKS",
    "GLOBAL_OPTIMIZER_HOOKS",
    "MODULE_HOOK_DICTS",
    "WATCH_OPS",
    "defined_in_torch",
    "describe_callable",
    "dispatch_dump",
    "mode_sources",
    "mode_stack",
    "resolve",
]

#: The process-global module hook registries (``register_module_forward_hook``...).
GLOBAL_MODULE_HOOKS = (
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
    "_global_buffer_registration_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
)
#: The process-global optimizer hook registries (``register_optimizer_step_pre_hook``...).
GLOBAL_OPTIMIZER_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
#: Per-module hook dictionaries.
MODULE_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
#: Per-optimizer hook dictionaries.
OPTIMIZER_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)
#: Operators whose kernels every training step relies on; their dispatch tables are
#: compared with the baseline every census (a Python kernel over one of them is an alarm).
WATCH_OPS = (
    "aten::add.Tensor",
    "aten::add_.Tensor",
    "aten::sub.Tensor",
    "aten::mul.Tensor",
    "aten::mul_.Tensor",
    "aten::div.Tensor",
    "aten::neg",
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::linear",
    "aten::copy_",
    "aten::lerp_.Scalar",
    "aten::addcdiv_.Scalar",
    "aten::addcmul_.Tensor",
    "aten::sqrt",
    "aten::_foreach_add_.List",
    "aten::_foreach_add_.Scalar",
    "aten::_foreach_mul_.Scalar",
    "aten::_foreach_addcdiv_.ScalarList",
    "aten::_foreach_lerp_.Scalar",
    "aten::_fused_adam_",
    "aten::_fused_adamw_",
    "aten::_fused_sgd_",
    "aten::native_dropout",
    "aten::bernoulli_.float",
    "aten::nll_loss_forward",
    "aten::_log_softmax",
)


def resolve(dotted: str) -> Any:
    """The object ``dotted`` names among already imported modules (never imports; else None)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        obj: Any = sys.modules.get(".".join(parts[:cut]))
        if obj is None:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def _unwrap(fn: Any) -> Any:
    for _ in range(8):
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif inspect.ismethod(fn):
            fn = fn.__func__
        else:
            break
    return fn


def describe_callable(fn: Any) -> dict[str, Any]:
    """Who a hook or function is: qualified name, module, and file:line of its code."""
    inner = _unwrap(fn)
    code = getattr(inner, "__code__", None)
    if code is None and callable(inner):
        code = getattr(vars(type(inner)).get("__call__"), "__code__", None)
    return {
        "name": getattr(inner, "__qualname__", type(inner).__qualname__),
        "module": getattr(inner, "__module__", None),
        "where": f"{code.co_filename}:{code.co_firstlineno}" if code is not None else None,
    }


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def defined_in_torch(info: dict[str, Any]) -> bool:
    """True when :func:`describe_callable` found the code inside the torch package."""
    where = info.get("where")
    return isinstance(where, str) and where.startswith(_TORCH_DIR)


def code_identity(fn: Any) -> tuple[int, int]:
    """(id of the object, id of its code object): changes when either is replaced."""
    inner = _unwrap(fn)
    return id(fn), id(getattr(inner, "__code__", None))


def hook_keys(registry: dict[int, Callable[..., Any]]) -> tuple[int, ...]:
    return tuple(registry.keys())


def global_registries() -> Iterable[tuple[str, dict[int, Any]]]:
    for name in GLOBAL_MODULE_HOOKS:
        reg = getattr(module_mod, name, None)
        if isinstance(reg, dict):
            yield f"torch.nn.modules.module.{name}", reg
    for name in GLOBAL_OPTIMIZER_HOOKS:
        reg = getattr(optim_mod, name, None)
        if isinstance(reg, dict):
            yield f"torch.optim.optimizer.{name}", reg


def mode_stack() -> list[str]:
    """Types of the TorchFunctionModes and TorchDispatchModes on the stacks now."""
    modes = []
    for i in range(torch._C._len_torch_function_stack()):
        modes.append("function:" + type(torch._C._get_function_stack_at(i)).__qualname__)
    for i in range(torch._C._len_torch_dispatch_stack()):
        modes.append("dispatch:" + type(torch._C._get_dispatch_stack_at(i)).__qualname__)
    return modes


def mode_sources() -> list[dict[str, Any]]:
    """Where each mode on the stacks defines its handler (``__torch_function__``/``__torch_dispatch__``)."""
    out = []
    for i in range(torch._C._len_torch_function_stack()):
        out.append(describe_callable(type(torch._C._get_function_stack_at(i)).__torch_function__))
    for i in range(torch._C._len_torch_dispatch_stack()):
        out.append(describe_callable(type(torch._C._get_dispatch_stack_at(i)).__torch_dispatch__))
    return out


def mode_depth() -> int:
    """Cheap (O(1)) total depth of both mode stacks."""
    return int(torch._C._len_torch_function_stack()) + int(torch._C._len_torch_dispatch_stack())


def dispatch_dump(op: str) -> str | None:
    """The dispatcher's registration table for ``op`` (None when the op does not exist)."""
    try:
        return str(torch._C._dispatch_dump(op))
    except RuntimeError:
        return None


def python_library_impls() -> int:
    """How many kernels were registered through ``torch.library`` (a cheap change signal)."""
    impls = getattr(torch.library, "_impls", None)
    return len(impls) if impls is not None else -1
