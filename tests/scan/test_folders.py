"""Hugging Face model folders: auto_map remote code, trust_remote_code, pickles next to safetensors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainguard.findings import Report, Severity
from trainguard.scan import _pycode, scan_paths

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _write(folder: Path, files: dict[str, str | bytes | dict[str, object] | list[object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(json.dumps(content, indent=2))
    return folder


def _safetensors() -> bytes:
    from safetensors.numpy import save

    return bytes(
        save({"lm_head.weight": np.zeros((4, 8), dtype=np.float32)}, metadata={"format": "pt"})
    )


def _by_rule(report: Report) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for f in report.findings:
        out.setdefault(f.rule, []).append(f)
    return out


def _remote_code_folder(folder: Path, marker: Path) -> Path:
    return _write(
        folder,
        {
            "config.json": {
                "architectures": ["TinyModel"],
                "model_type": "tiny",
                "auto_map": {
                    "AutoConfig": "configuration_tiny.TinyConfig",
                    "AutoModel": "modeling_tiny.TinyModel",
                },
            },
            "configuration_tiny.py": (
                "import subprocess\n\n"
                "from transformers import PretrainedConfig\n\n"
                f"subprocess.run(['touch', {str(marker)!r}], check=False)\n\n\n"
                "class TinyConfig(PretrainedConfig):\n"
                "    model_type = 'tiny'\n"
            ),
            "modeling_tiny.py": (
                "from transformers import PreTrainedModel\n\n"
                "from .configuration_tiny import TinyConfig\n\n\n"
                "class TinyModel(PreTrainedModel):\n"
                "    config_class = TinyConfig\n"
            ),
            "model.safetensors": _safetensors(),
        },
    )


def test_auto_map_code_that_imports_subprocess(tmp_path: Path) -> None:
    folder = _remote_code_folder(tmp_path / "evil", tmp_path / "marker")
    report = scan_paths([folder])
    remote = {Path(f.subject).name: f for f in _by_rule(report)["hf.remote-code"]}  # type: ignore[attr-defined]
    config = remote["configuration_tiny.py"]
    assert config.severity is Severity.HIGH
    assert config.evidence["risky_imports"] == ["subprocess"]
    assert config.evidence["risky_calls"] == [
        "line 5: subprocess.run() runs processes at import time"
    ]
    assert config.evidence["referenced_by"] == ["config.json auto_map.AutoConfig"]
    modeling = remote["modeling_tiny.py"]
    assert modeling.severity is Severity.MEDIUM  # runs with trust_remote_code, nothing risky in it
    assert report.max_severity is Severity.HIGH
    assert not (tmp_path / "marker").exists()  # scanning never ran it


@pytest.mark.slow
def test_the_sample_really_runs_with_trust_remote_code(tmp_path: Path) -> None:
    """Proof in a throwaway process: transformers imports the module and the marker appears."""
    pytest.importorskip("transformers")
    marker = tmp_path / "marker"
    folder = _remote_code_folder(tmp_path / "evil", marker)
    code = "import sys, transformers; transformers.AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)"
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert marker.exists()


def test_clean_folder_has_nothing_at_or_above_medium(tmp_path: Path) -> None:
    from transformers.utils import sentencepiece_model_pb2_new as spm

    sp = spm.ModelProto()
    for piece in ("<unk>", "<s>", "</s>", "▁the"):
        sp.pieces.add(piece=piece, score=-1.0)
    sp.trainer_spec.vocab_size = 4
    folder = _write(
        tmp_path / "clean",
        {
            "config.json": {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 8,
            },
            "generation_config.json": {"max_new_tokens": 32, "do_sample": False},
            "tokenizer_config.json": {
                "chat_template": CHATML,
                "model_max_length": 2048,
                "added_tokens_decoder": {"0": {"content": "<unk>", "special": True}},
            },
            "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>"},
            "tokenizer.json": {
                "version": "1.0",
                "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]},
            },
            "vocab.txt": "[PAD]\n[UNK]\nthe\n",
            "merges.txt": "#version: 0.2\nĠ t\n",
            "README.md": "---\nlicense: apache-2.0\n---\n# Tiny model\n",
            "tokenizer.model": bytes(sp.SerializeToString()),
            "model.safetensors": _safetensors(),
            "model.safetensors.index.json": {
                "metadata": {"total_size": 128},
                "weight_map": {"lm_head.weight": "model.safetensors"},
            },
            ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        },
    )
    report = scan_paths([folder])
    assert report.at_least(Severity.MEDIUM) == [], [
        (f.rule, f.subject, f.message) for f in report.findings
    ]
    kinds = {Path(c.subject).name: c.kind for c in report.checked}
    assert kinds["tokenizer.model"] == "protobuf"
    assert kinds["model.safetensors"] == "safetensors"
    assert kinds["README.md"] == "text"


def test_references_that_cannot_be_reviewed(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "refs",
        {
            "config.json": {
                "auto_map": {
                    "AutoModel": "someone/other-repo--modeling_x.Model",
                    "AutoConfig": "configuration_missing.Config",
                    "AutoModelForCausalLM": "../../escape.Model",
                }
            },
            "tokenizer_config.json": {"auto_map": {"AutoTokenizer": ["tokenization_x.Tok", None]}},
        },
    )
    found = _by_rule(scan_paths([folder]))
    [external] = found["hf.remote-code-external"]
    assert external.evidence["repository"] == "someone/other-repo"  # type: ignore[attr-defined]
    missing = {f.evidence["reference"] for f in found["hf.remote-code-missing"]}  # type: ignore[attr-defined]
    assert missing == {"configuration_missing.Config", "../../escape.Model", "tokenization_x.Tok"}
    assert all(f.severity is Severity.HIGH for f in found["hf.remote-code-missing"])  # type: ignore[attr-defined]


def test_relative_imports_are_followed_and_trust_remote_code_is_reported(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "st",
        {
            "config_sentence_transformers.json": {"model_kwargs": {"trust_remote_code": True}},
            "modules.json": [{"idx": 0, "name": "0", "path": "", "type": "custom_st.Encoder"}],
            "custom_st.py": "from .helpers.net import fetch\n\nclass Encoder:\n    pass\n",
            "helpers/net.py": "import urllib.request\n\ndef fetch(u):\n    return urllib.request.urlopen(u)\n",
        },
    )
    found = _by_rule(scan_paths([folder]))
    [trust] = found["hf.trust-remote-code"]
    assert trust.evidence["key"] == "model_kwargs.trust_remote_code"  # type: ignore[attr-defined]
    remote = {Path(f.subject).name: f for f in found["hf.remote-code"]}  # type: ignore[attr-defined]
    assert remote["custom_st.py"].evidence["referenced_by"] == ["modules.json modules[0].type"]
    assert remote["net.py"].severity is Severity.HIGH
    assert remote["net.py"].evidence["risky_calls"] == [
        "line 4: urllib.request.urlopen() uses the network"
    ]


def test_pickle_weights_next_to_safetensors(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "both",
        {
            "config.json": {"model_type": "llama"},
            "model.safetensors": _safetensors(),
            "pytorch_model.bin": b"\x80\x04K\x01.",
        },
    )
    [finding] = _by_rule(scan_paths([folder]))["hf.pickle-alongside-safetensors"]
    assert finding.severity is Severity.LOW  # type: ignore[attr-defined]


def test_shard_index_that_escapes_the_folder(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "sharded",
        {
            "config.json": {"model_type": "llama"},
            "model.safetensors.index.json": {
                "weight_map": {"a": "model-00001.safetensors", "b": "../../../tmp/evil.bin"}
            },
        },
    )
    [finding] = _by_rule(scan_paths([folder]))["hf.shard-index-escape"]
    assert finding.evidence["shards"] == ["../../../tmp/evil.bin"]  # type: ignore[attr-defined]


def test_special_files_behind_symlinks_are_not_read(tmp_path: Path) -> None:
    folder = _write(tmp_path / "links", {"generation_config.json": {"max_new_tokens": 4}})
    (folder / "config.json").symlink_to("/dev/zero")  # reading it would never end
    (folder / "modeling_x.py").symlink_to("/dev/zero")
    found = _by_rule(scan_paths([folder]))
    assert "not a regular file" in found["hf.config-invalid"][0].message  # type: ignore[attr-defined]
    assert found["hf.remote-code"][0].severity is Severity.HIGH  # type: ignore[attr-defined]


def test_unparsable_code_and_configs(tmp_path: Path) -> None:
    folder = _write(tmp_path / "broken", {"config.json": "{not json", "modeling_x.py": "def f(:\n"})
    found = _by_rule(scan_paths([folder]))
    assert [f.severity for f in found["hf.config-invalid"]] == [Severity.MEDIUM]  # type: ignore[attr-defined]
    [code] = found["hf.remote-code"]
    assert code.severity is Severity.HIGH and "SyntaxError" in code.evidence["error"]  # type: ignore[attr-defined]


def test_diffusers_custom_components(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "pipe",
        {
            "model_index.json": {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": "0.21.0",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "safety_checker": [
                    "stable_diffusion",
                    "StableDiffusionSafetyChecker",
                ],  # a diffusers module
                "feature_extractor": [None, None],
                "scheduler": ["my_scheduler", "FancyScheduler"],
            },
            "scheduler/my_scheduler.py": "import os\nos.system('id')\n",
        },
    )
    found = _by_rule(scan_paths([folder]))
    [missing] = found["hf.remote-code-missing"]
    assert missing.evidence["reference"] == "stable_diffusion.StableDiffusionSafetyChecker"  # type: ignore[attr-defined]
    assert missing.severity is Severity.LOW  # type: ignore[attr-defined]
    [code] = found["hf.remote-code"]
    assert Path(code.subject).parts[-2:] == ("scheduler", "my_scheduler.py")  # type: ignore[attr-defined]
    assert code.severity is Severity.HIGH  # type: ignore[attr-defined]


# -- the Python analysis itself ---------------------------------------------------------


def test_pycode_resolves_aliases_and_import_time_calls() -> None:
    code = _pycode.analyse(
        "import os as o\nimport torch\nfrom subprocess import Popen as P\n"
        "import logging\nlogger = logging.getLogger(__name__)\n"
        "o.system('id')\n"
        "class A:\n    x = P(['id'])\n"
        "def f():\n    torch.load('a')\n    torch.load('b', weights_only=True)\n"
        "    getattr(o, 'sys' + 'tem')('id')\n    eval('1')\n"
        "if __name__ == '__main__':\n    o.system('script only')\n"
    )
    assert code.risky_imports == ["os", "subprocess"]
    assert code.risky_calls == [
        "line 6: os.system() runs processes at import time",
        "line 8: subprocess.Popen() runs processes at import time",
        "line 10: torch.load() deserializes pickles",
        "line 12: getattr() executes code",
        "line 13: eval() executes code",
    ]
    assert code.top_level_calls == []


def test_pycode_clean_modeling_file() -> None:
    code = _pycode.analyse(
        "import math\nimport torch\nfrom torch import nn\n\n"
        "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.l = nn.Linear(4, 4)\n\n    def forward(self, x):\n        return self.l(x) * math.sqrt(2)\n"
    )
    assert (code.risky_imports, code.risky_calls, code.error) == ([], [], None)
