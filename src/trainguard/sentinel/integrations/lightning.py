"""Lightning: a ``Callback`` that protects ``Trainer.fit`` (``lightning`` imported lazily).

Example::

    import lightning as L
    from trainguard.sentinel.integrations.lightning import sentinel_callback

    callback = sentinel_callback(checks={"updates": "veto"})
    L.Trainer(max_epochs=1, callbacks=[callback]).fit(module, loader)
    print(callback.sentinel.alarms)

At ``on_fit_start`` (after the strategy created the optimizers) the callback
protects the LightningModule with the first optimizer and its scheduler. Lightning
calls ``training_step`` rather than the module, so the callback starts the
sentinel's pre-forward phase at ``on_train_batch_start``, and observes the loss at
``on_before_backward``. Works with ``lightning`` or ``pytorch_lightning``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from trainguard.sentinel._core import Sentinel
from trainguard.sentinel._protect import protect

__all__ = ["sentinel_callback"]


@functools.cache
def _callback_class() -> type:
    import importlib

    try:
        callbacks: Any = importlib.import_module("lightning.pytorch.callbacks")
    except ImportError:
        callbacks = importlib.import_module("pytorch_lightning.callbacks")

    class SentinelCallback(callbacks.Callback):  # type: ignore[misc]
        """Protects a Lightning ``fit`` with the trainguard sentinel."""

        def __init__(self, **options: Any) -> None:
            self.options = options
            self.sentinel: Sentinel | None = None

        def on_fit_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
            if not trainer.optimizers:
                raise RuntimeError("Lightning created no optimizer to protect")
            optimizer = trainer.optimizers[0]
            optimizer = getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer
            configs = getattr(trainer, "lr_scheduler_configs", []) or []
            scheduler = configs[0].scheduler if configs else None
            self.sentinel = protect(pl_module, optimizer, scheduler=scheduler, **self.options)

        def on_train_batch_start(
            self, trainer: Any, pl_module: torch.nn.Module, batch: Any, batch_idx: int
        ) -> None:
            if self.sentinel is not None:
                self.sentinel._on_forward(pl_module, ())

        def on_before_backward(
            self, trainer: Any, pl_module: torch.nn.Module, loss: torch.Tensor
        ) -> None:
            if self.sentinel is not None:
                self.sentinel.observe(loss=loss)

        def on_fit_end(self, trainer: Any, pl_module: torch.nn.Module) -> None:
            if self.sentinel is not None:
                self.sentinel.close()

    return SentinelCallback


def sentinel_callback(**options: Any) -> Any:
    """A Lightning ``Callback`` that runs the sentinel; ``options`` go to ``protect()``."""
    return _callback_class()(**options)
