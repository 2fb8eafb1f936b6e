"""Benign files of model folders are recognised (no false positives); pickles and noise are not."""

from __future__ import annotations

import base64
import io
import json
import pickle
import random
import struct
import zipfile
import zlib

import pytest

from trainguard.findings import Report, Severity
from trainguard.scan import ScanContext, ScanLimits, scan_buffer
from trainguard.scan.formats import media, protobuf, text

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _kinds(report: Report) -> list[str]:
    return [c.kind for c in report.checked]


def _rules(report: Report) -> set[str]:
    return {f.rule for f in report.findings}


class _Call:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("never run",))


# -- text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("config.json", json.dumps({"model_type": "llama", "hidden_size": 8}).encode()),
        ("vocab.txt", "[PAD]\n[UNK]\nthe\n##ing\nçà\n".encode()),
        ("merges.txt", "#version: 0.2\nĠ t\nĠ a\nh e\n".encode()),
        ("README.md", b"# Model card\n\nTrained on stuff.\n"),
        ("modeling.py", b"import torch\n\nclass M(torch.nn.Module):\n    pass\n"),
        ("notes.txt", b"ends without newline."),
        ("empty.txt", b""),
        ("tabs.tsv", b"a\tb\r\nc\td\f\n"),
    ],
)
def test_text_is_recognised_and_quiet(name: str, content: bytes) -> None:
    assert text.detect(memoryview(content), name)
    report = scan_buffer(content, name, filename=name)
    assert _kinds(report) == ["text"]
    assert report.findings == []


@pytest.mark.parametrize("proto", [0, 1])
def test_text_never_claims_a_pickle(proto: int) -> None:
    for obj in (_Call(), [_Call()], {"a": _Call()}):
        data = pickle.dumps(obj, protocol=proto)
        assert not text.detect(memoryview(data), "x.txt"), data
        # Truncated streams still run their opcodes in pickle.load: also not text.
        assert not text.detect(memoryview(data[:-1]), "x.txt"), data[:-1]
    assert not text.detect(memoryview(pickle.dumps({"a": 1}, protocol=0)), "x.txt")


def test_text_rejects_binary() -> None:
    assert not text.detect(memoryview(b"abc\x00def"), None)
    assert not text.detect(memoryview(b"abc\x01def"), None)
    assert not text.detect(memoryview(b"caf\xe9"), None)  # latin-1, not UTF-8


def test_text_named_like_weights_is_not_text() -> None:
    # A truncated or forged weights file stays unknown (a finding) instead of passing as text.
    for name in ("model.safetensors", "pytorch_model.bin", "model.gguf", "weights.pt"):
        assert not text.detect(memoryview(b"hello"), name)
        report = scan_buffer(b"hello", name, filename=name)
        assert report.max_severity is not None and report.max_severity >= Severity.MEDIUM
    assert text.detect(memoryview(b"hello"), "notes.txt")


def test_tokenizer_config_chat_templates() -> None:
    clean = json.dumps({"chat_template": CHATML, "model_max_length": 2048}).encode()
    assert scan_buffer(clean, "tokenizer_config.json").findings == []

    evil = json.dumps(
        {"chat_template": "{{ cycler.__init__.__globals__.os.popen('id').read() }}"}
    ).encode()
    report = scan_buffer(evil, "tokenizer_config.json")
    assert {f.rule: f.severity for f in report.findings}[
        "chat-template.sandbox-escape"
    ] is Severity.CRITICAL

    named = json.dumps(
        {
            "chat_template": [
                {"name": "default", "template": CHATML},
                {"name": "rag", "template": "{% include 'x' %}"},
            ]
        }
    ).encode()
    [finding] = scan_buffer(named, "tokenizer_config.json").findings
    assert (finding.rule, finding.evidence["template"]) == (
        "chat-template.suspicious",
        "chat_template[rag]",
    )

    odd = json.dumps({"chat_template": 5}).encode()
    assert _rules(scan_buffer(odd, "tokenizer_config.json")) == {"chat-template.malformed-field"}


def test_jinja_files_are_templates() -> None:
    data = b"{{ ''.__class__.__mro__ }}"
    report = scan_buffer(data, "chat_template.jinja", filename="chat_template.jinja")
    assert _rules(report) == {"chat-template.sandbox-escape"}
    assert scan_buffer(CHATML.encode(), "c.jinja", filename="chat_template.jinja").findings == []


def test_auto_map_json_is_left_to_the_folder_checks() -> None:
    data = json.dumps({"auto_map": {"AutoModel": "modeling_x.M"}}).encode()
    assert scan_buffer(data, "config.json").findings == []


# -- media --------------------------------------------------------------------------


def _png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0\0"))
        + chunk(b"IEND", b"")
    )


def _bmp() -> bytes:
    pixels = b"\0\0\xff\0"
    dib = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    size = 14 + len(dib) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(dib)) + dib + pixels


def _ico() -> bytes:
    png = _png()
    return (
        struct.pack("<HHH", 0, 1, 1)
        + struct.pack("<BBBBHHII", 1, 1, 0, 0, 1, 32, len(png), 22)
        + png
    )


MEDIA = {
    "logo.png": _png(),
    "photo.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32) + b"\xff\xd9",
    "anim.gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    "pic.webp": b"RIFF\x1a\x00\x00\x00WEBPVP8 " + bytes(14),
    "paper.pdf": b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
    "scan.tiff": b"II*\x00\x08\x00\x00\x00" + bytes(8),
    "icon.bmp": _bmp(),
    "favicon.ico": _ico(),
}


@pytest.mark.parametrize("name", sorted(MEDIA))
def test_media_is_recognised_and_quiet(name: str) -> None:
    data = MEDIA[name]
    assert media.detect(memoryview(data), name)
    report = scan_buffer(data, name, filename=name)
    assert _kinds(report) == ["media"] and report.findings == []


def test_weak_magic_is_not_enough() -> None:
    assert not media.detect(memoryview(b"BM" + bytes(30)), None)  # wrong declared size
    assert not media.detect(memoryview(b"\x00\x00\x01\x00" + bytes(30)), None)  # no icon entries


def test_image_with_an_appended_zip_is_a_polyglot() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", "{}")
    data = _png() + buf.getvalue()
    # The zip format claims it first (zip readers open it from the end); either way, a finding.
    report = scan_buffer(data, "innocent.png")
    assert report.max_severity is not None and report.max_severity >= Severity.MEDIUM
    ctx = ScanContext("innocent.png", ScanLimits())
    media.scan(memoryview(data), ctx)
    assert [f.rule for f in ctx.findings] == ["media.zip-polyglot"]
    ctx = ScanContext("logo.png", ScanLimits())
    media.scan(memoryview(_png()), ctx)
    assert ctx.findings == []


# -- protobuf -----------------------------------------------------------------------


def _sentencepiece() -> bytes:
    spm = pytest.importorskip("transformers.utils.sentencepiece_model_pb2_new")
    model = spm.ModelProto()
    for i, piece in enumerate(["<unk>", "<s>", "</s>", "▁the", "▁a", "ing"]):
        p = model.pieces.add()
        p.piece, p.score = piece, -float(i)
        if i < 3:
            p.type = 2 if i == 0 else 3
    model.trainer_spec.model_type = 1
    model.trainer_spec.vocab_size = 6
    model.normalizer_spec.name = "nmt_nfkc"
    model.normalizer_spec.precompiled_charsmap = bytes(range(256))
    return bytes(model.SerializeToString())


def test_sentencepiece_model_is_protobuf_and_quiet() -> None:
    data = _sentencepiece()
    assert protobuf.detect(memoryview(data), "tokenizer.model")
    report = scan_buffer(data, "tokenizer.model", filename="tokenizer.model")
    assert _kinds(report) == ["protobuf"] and report.findings == []


def test_protobuf_rejects_noise_and_pickles() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        noise = rng.randbytes(rng.choice([16, 24, 64, 256, 4096]))
        assert not protobuf.detect(memoryview(noise), None), noise.hex()
    for proto in range(6):
        for obj in (_Call(), {"a": [1, 2, 3], "b": "x" * 40}, list(range(50)), "text"):
            data = pickle.dumps(obj, protocol=proto)
            assert not protobuf.detect(memoryview(data), None), (proto, data)
    assert not protobuf.detect(memoryview(base64.b64encode(_sentencepiece())), None)


def test_truncated_protobuf_is_not_recognised() -> None:
    data = _sentencepiece()
    assert not protobuf.detect(memoryview(data[:-5]), None)
    report = scan_buffer(data[:-5], "tokenizer.model")
    assert report.findings and report.findings[0].severity >= Severity.MEDIUM
