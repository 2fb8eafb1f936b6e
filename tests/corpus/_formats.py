"""Malicious non-pickle formats: safetensors, GGUF, Keras, ONNX and HF model folders.

Writers for safetensors and GGUF are here too (the benign corpus reuses them):
hand-written so that a sample can break exactly one rule of the format.
"""

from __future__ import annotations

import base64
import json
import marshal
import struct
import zipfile
from io import BytesIO
from pathlib import Path

from tests.corpus._asm import os_system
from tests.corpus._model import (
    MALICIOUS,
    RULE_GGUF,
    RULE_HF,
    RULE_KERAS,
    RULE_ONNX,
    RULE_SAFETENSORS,
    Writer,
)

# -- safetensors --------------------------------------------------------------


def safetensors_bytes(
    tensors: dict[str, tuple[str, list[int], tuple[int, int]]],
    data: bytes,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """A safetensors file with the given header entries (name -> dtype, shape, offsets)."""
    header: dict[str, object] = {
        name: {"dtype": dtype, "shape": shape, "data_offsets": list(offsets)}
        for name, (dtype, shape, offsets) in tensors.items()
    }
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


# -- GGUF ---------------------------------------------------------------------

_GGUF_STRING = 8
_GGUF_UINT32 = 4
_GGUF_F32 = 0


def _gguf_str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_bytes(kv: dict[str, str | int], tensors: dict[str, list[float]]) -> bytes:
    """A GGUF v3 file with string/uint32 metadata and 1-D float32 tensors."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, value in kv.items():
        out += _gguf_str(key)
        if isinstance(value, str):
            out += struct.pack("<I", _GGUF_STRING) + _gguf_str(value)
        else:
            out += struct.pack("<II", _GGUF_UINT32, value)
    blobs = bytearray()
    for name, values in tensors.items():
        blobs += b"\0" * (-len(blobs) % 32)
        out += _gguf_str(name) + struct.pack("<IQIQ", 1, len(values), _GGUF_F32, len(blobs))
        blobs += struct.pack(f"<{len(values)}f", *values)
    out += b"\0" * (-len(out) % 32)
    return bytes(out + blobs)


# -- Keras --------------------------------------------------------------------


def _lambda_code(python: str) -> str:
    """Base64 of the marshalled code of ``lambda x: (<python>, x)[1]`` (Keras' func_dump).

    Compiling is not running: the lambda body only executes when Keras calls it.
    """
    module = compile(f"lambda x: ({python}, x)[1]", "<corpus>", "eval")
    code = next(c for c in module.co_consts if hasattr(c, "co_code"))
    return base64.b64encode(marshal.dumps(code)).decode()


def keras_v3_config(layers: list[dict[str, object]]) -> dict[str, object]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "sequential", "trainable": True, "layers": layers},
        "registered_name": None,
    }


def keras_v3_archive(config: dict[str, object], weights_h5: bytes) -> bytes:
    """A ``.keras`` zip: config.json, metadata.json, model.weights.h5."""
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "metadata.json",
            json.dumps({"keras_version": "3.6.0", "date_saved": "2024-06-01@12:00:00"}),
        )
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", weights_h5)
    return buf.getvalue()


def h5_bytes(attrs: dict[str, str], datasets: dict[str, list[float]]) -> bytes:
    """An HDF5 file (written with h5py) with root attributes and float datasets."""
    import h5py
    import numpy as np

    buf = BytesIO()
    with h5py.File(buf, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        for name, values in datasets.items():
            f.create_dataset(name, data=np.asarray(values, dtype=np.float32))
    return buf.getvalue()


def dense_layer(name: str, units: int) -> dict[str, object]:
    return {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {"name": name, "units": units, "activation": "relu", "use_bias": True},
        "registered_name": None,
    }


# -- ONNX ---------------------------------------------------------------------


def onnx_model(external_location: str | None = None) -> bytes:
    """A one-node Add model; with ``external_location`` its weight lives in that file."""
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    if external_location is not None:
        weight.ClearField("float_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external_location), ("offset", "0"), ("length", "16")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "corpus",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def build(w: Writer) -> None:
    """Add the malicious non-pickle samples."""
    f32x16 = bytes(64)
    w.malicious(
        "safetensors-overlap",
        "safetensors-overlap.safetensors",
        safetensors_bytes(
            {"a": ("F32", [16], (0, 64)), "b": ("F32", [16], (32, 96))}, f32x16 + bytes(32)
        ),
        "safetensors tensors whose byte ranges overlap",
        rule=RULE_SAFETENSORS,
        loader=None,
    )
    w.malicious(
        "safetensors-out-of-range",
        "safetensors-out-of-range.safetensors",
        safetensors_bytes({"a": ("F32", [16], (0, 64)), "b": ("F32", [16], (64, 128))}, f32x16),
        "safetensors offsets past the end of the file",
        rule=RULE_SAFETENSORS,
        loader=None,
    )
    sid = "safetensors-gap"
    # The gap between the tensors smuggles a pickle no safetensors reader looks at.
    smuggled = os_system(w.shell(sid)).ljust(128, b"\0")
    w.malicious(
        sid,
        f"{sid}.safetensors",
        safetensors_bytes(
            {
                "a": ("F32", [16], (0, 64)),
                "b": ("F32", [16], (64 + len(smuggled), 128 + len(smuggled))),
            },
            f32x16 + smuggled + f32x16,
        ),
        "safetensors with unreferenced bytes (a pickle) between tensors",
        rule=RULE_SAFETENSORS,
        loader=None,
    )
    sid = "gguf-chat-template"
    template = (
        "{% for message in messages %}{{ message['content'] }}{% endfor %}"
        "{{ self.__init__.__globals__.__builtins__.__import__('os').system("
        + json.dumps(w.shell(sid))
        + ") }}"
    )
    w.malicious(
        sid,
        f"{sid}.gguf",
        gguf_bytes(
            {
                "general.architecture": "llama",
                "general.name": "corpus",
                "tokenizer.chat_template": template,
            },
            {"token_embd.weight": [0.0] * 8},
        ),
        "GGUF chat template escaping the Jinja2 sandbox (CVE-2024-34359)",
        rule=RULE_GGUF,
        loader="gguf-chat-template",
    )
    sid = "keras-lambda"
    lambda_layer = {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "function": {
                "class_name": "__lambda__",
                "config": {"code": _lambda_code(w.python(sid)), "defaults": None, "closure": None},
            },
        },
        "registered_name": None,
    }
    weights = h5_bytes({}, {"layers/dense/vars/0": [0.0] * 4})
    w.malicious(
        sid,
        f"{sid}.keras",
        keras_v3_archive(keras_v3_config([dense_layer("dense", 4), lambda_layer]), weights),
        "Keras v3 .keras archive with a Lambda layer (marshalled bytecode)",
        rule=RULE_KERAS,
        loader=None,
    )
    sid = "keras-h5-lambda"
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {"class_name": "Dense", "config": {"name": "dense", "units": 4}},
                {
                    "class_name": "Lambda",
                    "config": {
                        "name": "lambda",
                        "function": [_lambda_code(w.python(sid)), None, None],
                        "function_type": "lambda",
                    },
                },
            ],
        },
    }
    w.malicious(
        sid,
        f"{sid}.h5",
        h5_bytes(
            {
                "model_config": json.dumps(config),
                "keras_version": "2.15.0",
                "backend": "tensorflow",
            },
            {"model_weights/dense/kernel": [0.0] * 4},
        ),
        "Keras 2 HDF5 model with a Lambda layer",
        rule=RULE_KERAS,
        loader=None,
    )
    w.malicious(
        "onnx-external-traversal",
        "onnx-external-traversal.onnx",
        onnx_model("../../../../../../etc/passwd"),
        "ONNX initializer whose external data path escapes the model folder",
        rule=RULE_ONNX,
        loader=None,
    )
    _hf_remote_code(w)


def _hf_remote_code(w: Writer) -> None:
    sid = "hf-auto-map"
    folder = w.path(MALICIOUS, sid, sid)
    folder.mkdir()
    config = {
        "architectures": ["CorpusModel"],
        "model_type": "corpus",
        "auto_map": {
            "AutoConfig": "configuration_corpus.CorpusConfig",
            "AutoModel": "modeling_corpus.CorpusModel",
        },
        "hidden_size": 8,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "configuration_corpus.py").write_text(
        "import subprocess\n\n"
        "from transformers import PretrainedConfig\n\n"
        f"subprocess.run(['touch', {w.marker(sid)!r}], check=False)\n\n\n"
        "class CorpusConfig(PretrainedConfig):\n"
        '    model_type = "corpus"\n'
    )
    (folder / "modeling_corpus.py").write_text(
        "from transformers import PreTrainedModel\n\n"
        "from .configuration_corpus import CorpusConfig\n\n\n"
        "class CorpusModel(PreTrainedModel):\n"
        "    config_class = CorpusConfig\n"
    )
    w.add(
        MALICIOUS,
        sid,
        Path(folder),
        "HF folder whose auto_map remote code imports subprocess",
        rule=RULE_HF,
        loader="hf-remote-code",
    )
