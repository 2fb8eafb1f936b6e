"""Benign artifacts as real tools write them: a scanner must stay quiet on all of these.

Written by the libraries themselves (``torch.save``, HF ``TrainingArguments``,
``safetensors``, ``numpy.save``, ``joblib.dump``...), never hand-made, so a
false positive here is one users would hit.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from tests.corpus._formats import (
    dense_layer,
    gguf_bytes,
    h5_bytes,
    keras_v3_archive,
    keras_v3_config,
    onnx_model,
)
from tests.corpus._model import BENIGN, Writer
from tests.corpus._torchscript import save_plain_module

#: Every dtype torch.save writes for a state dict, including the float8 and unsigned ones.
DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.complex64,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
)


def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(32, 16),
        torch.nn.LayerNorm(16),
        torch.nn.Linear(16, 16),
        torch.nn.BatchNorm1d(16),
        torch.nn.Linear(16, 4),
    )


def _saved(obj: object, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def _dtype_state() -> dict[str, torch.Tensor]:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {f"t.{str(dt).removeprefix('torch.')}": base.to(dt) for dt in DTYPES}
    state["view.row"] = state["t.float32"][1]  # shares the float32 storage
    state["noncontiguous"] = base.t()
    state["scalar"] = torch.tensor(3.5)
    state["empty"] = torch.empty(0, 3)
    return state


def _trained() -> tuple[
    torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler
]:
    model = _module()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    x = torch.randint(0, 32, (8,))
    for _ in range(2):
        model(x).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def _torch_samples(w: Writer) -> None:
    w.benign(
        "torch-dtypes",
        "torch-dtypes.pt",
        _saved(_dtype_state()),
        "torch.save of every dtype, views included",
    )
    model, opt, sched = _trained()
    w.benign(
        "torch-module-state",
        "pytorch_model.bin",
        _saved(model.state_dict()),
        "nn.Module state_dict (OrderedDict with _metadata)",
    )
    w.benign("torch-adamw", "optimizer.pt", _saved(opt.state_dict()), "AdamW optimizer state dict")
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randint(0, 32, (8,))).sum().backward()
    sgd.step()
    w.benign(
        "torch-sgd", "sgd.pt", _saved(sgd.state_dict()), "SGD-with-momentum optimizer state dict"
    )
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 3,
        "global_step": 1200,
        "best_metric": 0.8125,
        "config": {"lr": 1e-3, "name": "run-7", "layers": [16, 16, 4], "tied": False},
    }
    w.benign(
        "torch-checkpoint",
        "checkpoint.pt",
        _saved(checkpoint),
        "full training checkpoint: model, optimizer, scheduler, counters",
    )
    # What HF Trainer writes as rng_state.pth: python, numpy and torch RNG states.
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    w.benign(
        "hf-rng-state",
        "rng_state.pth",
        _saved(rng),
        "HF Trainer rng_state.pth (numpy RNG state included)",
    )
    w.benign(
        "torch-legacy-state",
        "legacy.pt",
        _saved(model.state_dict(), _use_new_zipfile_serialization=False),
        "legacy (non-zip) torch.save of a state dict",
    )
    path = w.path(BENIGN, "torchscript", "scripted.pt")
    save_plain_module(path)
    w.add(BENIGN, "torchscript", path, "TorchScript archive of a plain module (no load-time code)")
    if w.large:
        big = {
            "lm_head.weight": torch.randn(64 * 256, 1024),
            "embed.weight": torch.randn(4096, 256),
        }
        w.benign("torch-large", "large.pt", _saved(big), "a 68 MB state dict")


def _training_args(w: Writer) -> None:
    """What HF Trainer saves as training_args.bin: ``torch.save(TrainingArguments)``.

    Device set-up needs ``accelerate`` (which needs torch, so it is not installed
    here); it is skipped and the device it would cache is set as it would be.
    """
    from unittest import mock

    from transformers import TrainingArguments, training_args

    with (
        tempfile.TemporaryDirectory() as out,
        mock.patch.object(training_args, "is_torch_available", return_value=False),
    ):
        args = TrainingArguments(
            output_dir=out, report_to=[], learning_rate=3e-5, num_train_epochs=2
        )
    args.__dict__["_setup_devices"] = torch.device("cpu")
    args._n_gpu = 0
    w.benign("hf-training-args", "training_args.bin", _saved(args), "HF Trainer training_args.bin")


def _array_samples(w: Writer) -> None:
    import joblib
    from safetensors.torch import save

    tensors = {
        "w.f32": torch.randn(8, 8),
        "w.f16": torch.randn(8, 8).half(),
        "w.bf16": torch.randn(8, 8).bfloat16(),
        "w.i64": torch.arange(10),
        "w.bool": torch.ones(3, dtype=torch.bool),
    }
    w.benign(
        "safetensors",
        "model.safetensors",
        save(tensors, metadata={"format": "pt"}),
        "safetensors via the safetensors library",
    )
    arrays = {
        "f32": np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8),
        "i64": np.arange(100, dtype=np.int64),
        "bool": np.array([True, False, True]),
        "rec": np.zeros(4, dtype=[("x", "<f4"), ("y", "<i8")]),
    }
    for name, array in arrays.items():
        buf = io.BytesIO()
        np.save(buf, array)
        w.benign(f"npy-{name}", f"{name}.npy", buf.getvalue(), f"numeric .npy ({array.dtype})")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    w.benign("npz", "arrays.npz", buf.getvalue(), "numeric .npz")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    w.benign("npz-compressed", "arrays-compressed.npz", buf.getvalue(), "numeric compressed .npz")
    for sid, compress in (("joblib-arrays", 0), ("joblib-arrays-zlib", 3)):
        path = w.path(BENIGN, sid, f"{sid}.joblib")
        joblib.dump(
            {"coef": arrays["f32"], "intercept": arrays["i64"][:4]}, path, compress=compress
        )
        w.add(BENIGN, sid, path, f"joblib of numpy arrays (compress={compress})")


def _plain_pickles(w: Writer) -> None:
    vocab = {"<pad>": 0, "<unk>": 1, "hello": 2, "world": 3}
    w.benign(
        "pickle-vocab",
        "vocab.pkl",
        pickle.dumps(vocab, protocol=4),
        "protocol 4 pickle of a vocabulary dict",
    )
    w.benign(
        "pickle-proto0",
        "stats.pkl",
        pickle.dumps({"mean": [0.5, 0.25], "n": 12, "tag": "ok"}, protocol=0),
        "protocol 0 text pickle of plain data",
    )


def _other_formats(w: Writer) -> None:
    template = (
        "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    w.benign(
        "gguf",
        "model.gguf",
        gguf_bytes(
            {
                "general.architecture": "llama",
                "general.name": "corpus",
                "general.alignment": 32,
                "tokenizer.chat_template": template,
            },
            {"token_embd.weight": [0.25] * 16, "output.weight": [0.5] * 8},
        ),
        "GGUF with an ordinary chat template",
    )
    w.benign("onnx", "model.onnx", onnx_model(), "ONNX model with inline weights")
    weights = h5_bytes({}, {"layers/dense/vars/0": [0.0] * 4})
    w.benign(
        "keras",
        "model.keras",
        keras_v3_archive(keras_v3_config([dense_layer("dense", 4)]), weights),
        "Keras v3 archive of Dense layers",
    )
    folder = w.path(BENIGN, "hf-folder", "hf-folder")
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8})
    )
    (folder / "generation_config.json").write_text(json.dumps({"max_new_tokens": 32}))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "model_max_length": 2048})
    )
    from safetensors.torch import save

    (folder / "model.safetensors").write_bytes(save({"lm_head.weight": torch.zeros(4, 8)}))
    w.add(BENIGN, "hf-folder", Path(folder), "HF model folder without remote code")


def build(w: Writer) -> None:
    """Add the benign samples."""
    _torch_samples(w)
    _training_args(w)
    _array_samples(w)
    _plain_pickles(w)
    _other_formats(w)
