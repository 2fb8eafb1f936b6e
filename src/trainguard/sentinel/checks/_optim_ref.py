"""Reference optimizers, vectorised over sampled coordinates, in float64.

Each function takes ``[rows, k]`` float64 matrices (one row per parameter tensor,
``k`` sampled coordinates) and per-row hyper-parameters (``[rows, 1]``), and
returns the parameters PyTorch's optimizer must produce, following the exact
update order of ``torch.optim`` 2.x (``_single_tensor_sgd``/``_single_tensor_adam``;
the foreach and fused implementations compute the same thing up to rounding).
Nothing here syncs with the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["ADAM_HP", "SGD_HP", "adam", "hyperparameters", "kind_of", "sgd"]

Tensor = torch.Tensor

#: Hyper-parameters in the order of the columns of the per-group table.
SGD_HP = ("lr", "weight_decay", "momentum", "dampening", "nesterov", "maximize")
ADAM_HP = ("lr", "weight_decay", "beta1", "beta2", "eps", "amsgrad", "maximize", "decoupled")


def kind_of(optimizer: torch.optim.Optimizer) -> str:
    """``"sgd"``, ``"adam"`` (Adam and AdamW) or ``"unknown"`` (descent check only)."""
    if type(optimizer) is torch.optim.SGD:
        return "sgd"
    if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
        return "adam"
    return "unknown"


def hyperparameters(kind: str, group: Mapping[str, Any]) -> list[Any]:
    """One group's hyper-parameters as numbers (or 0-d tensors), in the table's order."""
    if kind == "sgd":
        return [
            group["lr"],
            group["weight_decay"],
            group["momentum"],
            group["dampening"],
            float(bool(group["nesterov"])),
            float(bool(group["maximize"])),
        ]
    beta1, beta2 = group["betas"]
    decoupled = group.get("decoupled_weight_decay", False)
    return [
        group["lr"],
        group["weight_decay"],
        beta1,
        beta2,
        group["eps"],
        float(bool(group["amsgrad"])),
        float(bool(group["maximize"])),
        float(bool(decoupled)),
    ]


def sgd(p: Tensor, g: Tensor, buf: Tensor, has_buf: Tensor, hp: Tensor) -> Tensor:
    """SGD with momentum, dampening, Nesterov, weight decay and maximize.

    ``buf``/``has_buf``: the momentum buffer before the step and whether it existed
    (the first step initialises it to the gradient).
    """
    lr, wd, mom, damp, nesterov, maximize = (hp[:, i : i + 1] for i in range(6))
    d = torch.where(maximize > 0, -g, g)
    d = d + wd * p
    new_buf = torch.where(has_buf, mom * buf + (1 - damp) * d, d)
    stepped = torch.where(nesterov > 0, d + mom * new_buf, new_buf)
    d = torch.where(mom != 0, stepped, d)
    return p - lr * d


def adam(
    p: Tensor, g: Tensor, m: Tensor, v: Tensor, vmax: Tensor, step: Tensor, hp: Tensor
) -> Tensor:
    """Adam/AdamW (amsgrad, maximize, L2 or decoupled weight decay).

    ``m``, ``v``, ``vmax``: the moments before the step (zeros when the state is new);
    ``step``: ``[rows, 1]`` steps taken before this one.
    """
    lr, wd, b1, b2, eps, amsgrad, maximize, decoupled = (hp[:, i : i + 1] for i in range(8))
    g = torch.where(maximize > 0, -g, g)
    t = step + 1
    p_dec = torch.where(decoupled > 0, p * (1 - lr * wd), p)
    g = torch.where(decoupled > 0, g, g + wd * p)
    m = m + (1 - b1) * (g - m)  # lerp
    v = v * b2 + (1 - b2) * g * g
    v_hat = torch.where(amsgrad > 0, torch.maximum(vmax, v), v)
    denom = v_hat.sqrt() / (1 - b2**t).sqrt() + eps
    return p_dec - (lr / (1 - b1**t)) * m / denom
