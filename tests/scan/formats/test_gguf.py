"""GGUF: real files from gguf's writer stay clean; malformed tables and hostile templates do not."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainguard.findings import Report, Severity
from trainguard.scan import ScanLimits, scan_buffer
from trainguard.scan.formats import gguf as gguf_format

gguf = pytest.importorskip("gguf")

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# CVE-2024-34359: llama-cpp-python rendered this with a plain jinja2.Environment.
ESCAPE_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch MARKER') }}"
)


def _written(tmp_path: Path, template: str | None = LLAMA3_TEMPLATE, **kw: object) -> bytes:
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(path, "llama", **kw)  # type: ignore[arg-type]
    writer.add_block_count(2)
    writer.add_context_length(4096)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_int64("test.i64", -5)
    writer.add_float64("test.f64", 0.5)
    writer.add_token_list(["<s>", "</s>", "▁the", "▁a"])
    writer.add_token_scores([0.0, 0.0, -1.0, -2.0])
    writer.add_array("test.nested", [[1, 2], [3], ["x", "y"]])
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((32,), dtype=np.float16))
    writer.add_tensor(
        "blk.0.attn_q.weight",
        np.zeros((2, 32), dtype=np.int8),
        raw_dtype=gguf.GGMLQuantizationType.I8,
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _rules(report: Report) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for f in report.findings:
        out[f.rule] = max(out.get(f.rule, f.severity), f.severity)
    return out


# -- a hand writer for malformed files ------------------------------------------


def _s(text: str, wide: bool = True) -> bytes:
    raw = text.encode()
    return struct.pack("<Q" if wide else "<I", len(raw)) + raw


def _handmade(
    kv: list[tuple[str, int, bytes]],
    tensors: list[tuple[str, list[int], int, int]],
    data: bytes,
    *,
    version: int = 3,
    alignment: int = 32,
) -> bytes:
    wide = version >= 2
    count = "<Q" if wide else "<I"
    out = bytearray(b"GGUF" + struct.pack("<I", version))
    out += struct.pack(count, len(tensors)) + struct.pack(count, len(kv))
    for key, vtype, value in kv:
        out += _s(key, wide) + struct.pack("<I", vtype) + value
    for name, dims, ggml_type, offset in tensors:
        out += _s(name, wide) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack(count, d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
    out += b"\0" * (-len(out) % alignment)
    return bytes(out + data)


F32 = 0
U32_KV = 4
STRING_KV = 8
ARRAY_KV = 9


def test_writer_files_are_clean(tmp_path: Path) -> None:
    data = _written(tmp_path)
    assert gguf_format.detect(memoryview(data), "model.gguf")
    report = scan_buffer(data, "model.gguf")
    assert report.checked[0].kind == "gguf"
    assert report.findings == []


def test_big_endian_files_are_clean(tmp_path: Path) -> None:
    data = _written(tmp_path, endianess=gguf.GGUFEndian.BIG)
    assert data[4:8] == struct.pack(">I", 3)
    assert scan_buffer(data, "be.gguf").findings == []


def test_v1_and_v2_layouts_parse() -> None:
    for version in (1, 2):
        data = _handmade(
            [("general.name", STRING_KV, _s("m", version >= 2))],
            [("w", [8], F32, 0)],
            bytes(32),
            version=version,
        )
        assert scan_buffer(data, f"v{version}.gguf").findings == [], version


def test_sandbox_escape_template_is_critical(tmp_path: Path) -> None:
    data = _written(tmp_path, template=ESCAPE_TEMPLATE)
    report = scan_buffer(data, "evil.gguf")
    [finding] = [f for f in report.findings if f.rule == "gguf.chat-template.sandbox-escape"]
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["template"] == "tokenizer.chat_template"
    assert any("__globals__" in c for c in finding.evidence["constructs"])


def test_named_templates_are_checked(tmp_path: Path) -> None:
    data = _written(
        tmp_path,
        template=[  # type: ignore[arg-type]
            {"name": "default", "template": LLAMA3_TEMPLATE},
            {
                "name": "tool_use",
                "template": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
            },
        ],
    )
    report = scan_buffer(data, "named.gguf")
    escapes = [f for f in report.findings if f.rule == "gguf.chat-template.sandbox-escape"]
    assert [f.evidence["template"] for f in escapes] == ["tokenizer.chat_template.tool_use"]


def test_payload_really_runs_without_a_sandbox(tmp_path: Path) -> None:
    """The sample is real: a plain Environment runs it, the sandbox refuses it (CVE-2024-34359)."""
    template = ESCAPE_TEMPLATE.replace("MARKER", str(tmp_path / "ran"))
    code = (
        "import jinja2, json, sys\n"
        "t = json.loads(sys.argv[1])\n"
        "jinja2.Environment().from_string(t).render(messages=[])\n"
        "try:\n"
        "    from jinja2.sandbox import ImmutableSandboxedEnvironment\n"
        "    ImmutableSandboxedEnvironment().from_string(t).render(messages=[])\n"
        "except jinja2.exceptions.SecurityError:\n"
        "    print('sandbox refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(template)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (tmp_path / "ran").exists()
    assert "sandbox refused" in result.stdout


def test_template_of_the_wrong_type_is_a_finding() -> None:
    kv = [("tokenizer.chat_template", U32_KV, struct.pack("<I", 7))]
    report = scan_buffer(_handmade(kv, [], b""), "t.gguf")
    assert _rules(report) == {"gguf.malformed": Severity.MEDIUM}


def test_bad_chat_template_syntax_is_a_finding() -> None:
    kv = [("tokenizer.chat_template", STRING_KV, _s("{% if %}"))]
    assert _rules(scan_buffer(_handmade(kv, [], b""), "t.gguf")) == {
        "gguf.chat-template.unparsable": Severity.MEDIUM
    }


@pytest.mark.parametrize(
    ("name", "data", "severity"),
    [
        ("version 4", b"GGUF" + struct.pack("<IQQ", 4, 0, 0), Severity.HIGH),
        (
            "truncated kv",
            _handmade([("general.name", STRING_KV, _s("model"))], [], b"")[:30],
            Severity.HIGH,
        ),
        ("unknown value type", _handmade([("k", 13, b"\0" * 8)], [], b""), Severity.HIGH),
        (
            "unknown array type",
            _handmade([("k", ARRAY_KV, struct.pack("<IQ", 77, 1))], [], b""),
            Severity.HIGH,
        ),
        (
            "array past the end",
            _handmade([("k", ARRAY_KV, struct.pack("<IQ", 5, 1 << 40))], [], b""),
            Severity.HIGH,
        ),
        (
            "string past the end",
            _handmade([("k", STRING_KV, struct.pack("<Q", 1 << 40))], [], b""),
            Severity.HIGH,
        ),
        (
            "duplicate key",
            _handmade([("k", U32_KV, bytes(4)), ("k", U32_KV, bytes(4))], [], b""),
            Severity.HIGH,
        ),
        (
            "alignment 24",
            _handmade([("general.alignment", U32_KV, struct.pack("<I", 24))], [], b""),
            Severity.HIGH,
        ),
        ("five dims", _handmade([], [("w", [1, 1, 1, 1, 1], F32, 0)], bytes(32)), Severity.HIGH),
        ("unknown ggml type", _handmade([], [("w", [8], 4, 0)], bytes(32)), Severity.HIGH),
        ("row not a block multiple", _handmade([], [("w", [33], 2, 0)], bytes(64)), Severity.HIGH),
        ("misaligned offset", _handmade([], [("w", [4], F32, 4)], bytes(32)), Severity.HIGH),
        ("past the end", _handmade([], [("w", [64], F32, 0)], bytes(32)), Severity.HIGH),
        (
            "overlap",
            _handmade([], [("a", [16], F32, 0), ("b", [8], F32, 32)], bytes(64)),
            Severity.HIGH,
        ),
        (
            "duplicate tensor",
            _handmade([], [("a", [8], F32, 0), ("a", [8], F32, 32)], bytes(64)),
            Severity.HIGH,
        ),
        ("gap", _handmade([], [("a", [8], F32, 64)], bytes(96)), Severity.MEDIUM),
        (
            "absurd tensor count",
            b"GGUF" + struct.pack("<IQQ", 3, 1 << 19, 0) + bytes(64),
            Severity.HIGH,
        ),
    ],
)
def test_malformed_structure(name: str, data: bytes, severity: Severity) -> None:
    report = scan_buffer(data, "bad.gguf")
    assert report.checked[0].kind == "gguf"
    rules = _rules(report)
    assert rules.get("gguf.malformed") == severity, (name, rules)


def test_trailing_bytes_are_low() -> None:
    data = _handmade([], [("w", [8], F32, 0)], bytes(32) + b"hidden payload" * 8)
    assert _rules(scan_buffer(data, "t.gguf")) == {"gguf.trailing-data": Severity.LOW}


def test_limits_hold() -> None:
    nested = struct.pack("<IQ", ARRAY_KV, 1) * 40 + struct.pack("<IQ", U32_KV, 0)
    data = _handmade([("deep", ARRAY_KV, nested)], [], b"")
    report = scan_buffer(data, "deep.gguf", limits=ScanLimits(message_depth=10))
    assert [f.evidence.get("limit") for f in report.findings] == ["message_depth"]
    assert scan_buffer(data, "deep.gguf").findings == []

    many = _handmade([("k", U32_KV, bytes(4))] * 3, [], b"")
    report = scan_buffer(many, "many.gguf", limits=ScanLimits(metadata_entries=2))
    assert [f.evidence.get("limit") for f in report.findings] == ["metadata_entries"]
