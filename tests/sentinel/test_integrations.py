"""The Hugging Face Trainer and Lightning adapters: a short run clean and with an attack."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from tests.sentinel._util import TinyNet, batch, quiet

pytestmark = pytest.mark.slow


# -- Hugging Face ---------------------------------------------------------------------------


class _TokenData(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "labels": ids}


def _hf_run(tmp_path: Any, attack_at: int | None) -> Any:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from trainguard.sentinel.integrations.hf_trainer import sentinel_callback

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    )
    callback = sentinel_callback(**quiet())
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=24, learning_rate=1e-3,
        lr_scheduler_type="cosine", report_to=[], logging_steps=1000, save_strategy="no",
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=_TokenData(), callbacks=[callback])

    class Saboteur(TrainerCallback):  # type: ignore[misc]
        def on_step_end(
            self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
        ) -> None:
            if state.global_step == attack_at:
                with torch.no_grad():
                    model.transformer.h[0].attn.c_attn.weight.mul_(-1)

    if attack_at is not None:
        trainer.add_callback(Saboteur())
    trainer.train()
    return callback.sentinel


def test_hf_trainer_clean_run(tmp_path: Any) -> None:
    sentinel = _hf_run(tmp_path, None)
    assert sentinel.step == 24 and sentinel.alarms == []
    anomaly = next(c for c in sentinel.checks if c.name == "anomaly")
    assert anomaly.count[0] == 24  # the loss was observed from the model's output every step
    updates = next(c for c in sentinel.checks if c.name == "updates")
    assert (
        updates.kind == "adam" and sentinel.ctx.schedulers
    )  # the torch optimizer and scheduler, unwrapped


def test_hf_trainer_edited_weights(tmp_path: Any) -> None:
    sentinel = _hf_run(tmp_path, 10)
    (alarm,) = sentinel.alarms
    assert alarm.check == "weights" and alarm.step == 10
    assert alarm.evidence["tensors"] == ["transformer.h.0.attn.c_attn.weight"]


# -- Lightning ------------------------------------------------------------------------------


def _lightning_run(attack_at: int | None) -> Any:
    pl = pytest.importorskip("lightning.pytorch")
    from trainguard.sentinel.integrations.lightning import sentinel_callback

    class Module(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = TinyNet()

        def training_step(self, data: Any, idx: int) -> torch.Tensor:
            x, y = data
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 5)}

        def on_train_batch_start(self, data: Any, idx: int) -> None:
            if idx == attack_at:
                with torch.no_grad():
                    self.net.fc2.weight.add_(0.1)

    data = [batch(i) for i in range(20)]
    callback = sentinel_callback(**quiet())
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=None))
    return callback.sentinel


def test_lightning_clean_run() -> None:
    sentinel = _lightning_run(None)
    assert sentinel.step == 20 and sentinel.alarms == []


def test_lightning_edited_weights() -> None:
    sentinel = _lightning_run(7)
    (alarm,) = sentinel.alarms
    assert (
        alarm.check == "weights"
        and alarm.step == 7
        and alarm.evidence["tensors"] == ["net.fc2.weight"]
    )
