"""Hugging Face ``Trainer``: a ``TrainerCallback`` that protects the run (transformers imported lazily).

Example::

    from transformers import Trainer
    from trainguard.sentinel.integrations.hf_trainer import sentinel_callback

    callback = sentinel_callback(checks={"updates": "veto"})
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[callback])
    trainer.train()
    print(callback.sentinel.alarms)

At ``on_train_begin`` the callback calls :func:`trainguard.protect` with the
trainer's model, optimizer and LR scheduler (unwrapping Accelerate's wrappers, so
the hooks sit on the torch optimizer that really steps). The loss is observed
from the model's output (``outputs.loss``, as HF models return it when labels are
given) by a forward hook; the sentinel closes at ``on_train_end``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from trainguard.sentinel._core import Sentinel
from trainguard.sentinel._protect import protect

__all__ = ["sentinel_callback"]


def _unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    inner = optimizer
    # accelerate.AcceleratedOptimizer subclasses Optimizer without being one: unwrap it.
    while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
        inner = inner.optimizer
    if not isinstance(inner, torch.optim.Optimizer):
        raise TypeError(f"cannot find the torch optimizer inside {type(optimizer).__name__}")
    return inner


def _unwrap_scheduler(scheduler: Any) -> Any:
    return getattr(scheduler, "scheduler", scheduler)  # accelerate.AcceleratedScheduler


def _loss_of(output: Any) -> torch.Tensor | None:
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    if (
        loss is None
        and isinstance(output, tuple | list)
        and output
        and isinstance(output[0], torch.Tensor)
    ):
        loss = output[0] if output[0].dim() == 0 else None
    return loss if isinstance(loss, torch.Tensor) else None


@functools.cache
def _callback_class() -> type:
    from transformers import TrainerCallback

    class SentinelCallback(TrainerCallback):
        """Protects a ``Trainer`` run with the trainguard sentinel."""

        def __init__(self, **options: Any) -> None:
            self.options = options
            self.sentinel: Sentinel | None = None
            self._handle: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
            if model is None or optimizer is None:
                raise RuntimeError("the Trainer gave the callback no model or optimizer")
            self.sentinel = protect(
                model,
                _unwrap_optimizer(optimizer),
                scheduler=_unwrap_scheduler(kwargs.get("lr_scheduler")),
                **self.options,
            )
            sentinel = self.sentinel

            def observe(module: torch.nn.Module, inputs: Any, output: Any) -> None:
                loss = _loss_of(output)
                if loss is not None and module.training:
                    sentinel.observe(loss=loss)

            self._handle = model.register_forward_hook(observe)
            sentinel.ctx.own_hooks.append(("module_forward", model, self._handle.id))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._handle is not None:
                self._handle.remove()
                self._handle = None
            if self.sentinel is not None:
                self.sentinel.close()

    return SentinelCallback


def sentinel_callback(**options: Any) -> Any:
    """A ``transformers.TrainerCallback`` that runs the sentinel; ``options`` go to ``protect()``.

    After training, ``callback.sentinel.alarms`` lists the alarms.
    """
    return _callback_class()(**options)
