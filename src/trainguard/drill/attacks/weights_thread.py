"""A thread in rank 1 edits a weight between two optimizer steps.

The insider's code needs no hook: a background thread that wakes up between
steps and nudges a parameter in place makes results unreproducible. The thread
is real (a ``threading.Thread`` that owns the edit); the training loop only
wakes it at the planned step so the drill is deterministic.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.drill.attacks._base import JobContext

NAME = "weights-thread"
TITLE = "weights edited between steps from another thread"
INCIDENT = "model weights were altered during training so results could not be reproduced"
EXPECTED_CHECKS = ("weights",)
ATTACK_STEP = 8


def _editor(param: Any, go: threading.Event, done: threading.Event) -> None:
    import torch

    go.wait()
    with torch.no_grad():
        param.add_(1e-3)  # small, silent, everywhere in one tensor
    done.set()


def inject(job: JobContext, model: Any, optimizer: Any, step: int) -> None:
    if job.rank != 1 or step != job.attack_step:
        return
    from trainguard.drill.attacks._base import model_params

    inner = getattr(model, "module", model)
    name, param = next((n, p) for n, p in inner.named_parameters() if n.endswith("mlp.0.weight"))
    assert any(param is p for p in model_params(model))
    go, done = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=_editor, args=(param, go, done), name="tg-drill-editor", daemon=True
    )
    thread.start()
    go.set()
    done.wait(timeout=30)
    job.attacked(step, f"thread {thread.name} added 1e-3 to {name} on rank 1")
