"""The pickle format end to end: detection, real torch checkpoints, stream structure, nesting."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.scan.pickle._samples import P, call_pickle, nested_call
from trainguard.findings import Finding, Report, Severity
from trainguard.scan import scan_buffer, scan_paths
from trainguard.scan.formats import pickle as pickle_format


def findings(data: bytes) -> list[Finding]:
    return scan_buffer(data, "sample.pkl").findings


def rules(report_or_list: Report | list[Finding]) -> set[str]:
    return {f.rule for f in report_or_list}


def above_info(report: Report) -> list[tuple[str, str, str]]:
    return [(f.subject, f.rule, f.message) for f in report.findings if f.severity > Severity.INFO]


# -- detection ----------------------------------------------------------------


@pytest.mark.parametrize("proto", range(6))
def test_detects_pickles_of_every_protocol(proto: int) -> None:
    data = pickle.dumps({"a": [1, 2.0, "x", None]}, protocol=proto)
    assert pickle_format.detect(memoryview(data), None)


@pytest.mark.parametrize(
    "data",
    [
        b"cos\nsystem\n(S'echo'\ntR.",
        b"(S'echo'\nios\nsystem\n.",
        b"cos\nsystem\n(S'echo'\ntR",  # broken: no STOP, still executes
        b"\x80\x04\x95\x00\x00",  # a protocol 4 header
        b"I1\n.",
    ],
)
def test_detects_protocol_0_and_broken_pickles(data: bytes) -> None:
    assert pickle_format.detect(memoryview(data), None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"# README\n\nThis model was trained with care.\n",
        b"Readme: see docs\n",
        json.dumps({"architectures": ["Bert"], "hidden_size": 768}).encode(),
        b"import os\nprint(os.getcwd())\n",
        b"def f():\n    return 1\n",
        b"class Model:\n    pass\n",
        b"hello world\n",
        b"lol",
        b"cat\ndog\nfish\nbird\n",  # a vocabulary file
        b"cls\nsep\npad\n",
        b"a,b,c\n1,2,3\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"PK\x03\x04",
    ],
)
def test_rejects_text_and_other_binaries(data: bytes) -> None:
    assert not pickle_format.detect(memoryview(data), None)


def test_probe_counts_an_obj_as_a_call_only_with_a_class_above_its_mark() -> None:
    # Found by the mutation fuzzer: GLOBAL's "c" turned into a MARK leaves an OBJ with
    # nothing above the mark; the unpickler fails there, before any import.
    from trainguard.scan.pickle._probe import probe

    broken = probe(b"(os\nsystem\n(Vtouch /tmp/x\ntR.")
    assert broken.error == "stack" and not broken.imports
    called = probe(b"(cos\nsystem\nS'echo'\no.")
    assert called.error is None and called.imports and called.reached_stop


def test_a_pickle_named_file_that_imports_then_breaks_is_scanned_as_a_pickle() -> None:
    # GLOBAL of a module nobody knows, then bytes that break the stream: the
    # unpickler imports "evil" (running evil.py where one is importable) before it
    # fails. As a .pkl it is a pickle; as a vocabulary file it stays text.
    data = b"cevil\nx\nsystem\n(Vtouch /tmp/x\ntR."
    named = scan_buffer(data, "m.pkl", filename="m.pkl")
    assert named.max_severity is not None and named.max_severity >= Severity.MEDIUM
    assert any(f.rule == "pickle.unknown-global" for f in named.findings), named.findings
    assert scan_buffer(data, "vocab.txt", filename="vocab.txt").findings == []
    assert scan_buffer(b"cat\ndog\nfish\n", "v.txt", filename="v.txt").findings == []


def test_rejects_random_binary() -> None:
    import random

    rng = random.Random(1234)
    accepted = 0
    for _ in range(500):
        blob = bytes(rng.randrange(256) for _ in range(256))
        accepted += pickle_format.detect(memoryview(blob), None)
    assert accepted <= 5  # only blobs that happen to start with PROTO 0-5


# -- real torch checkpoints ----------------------------------------------------


def _checkpoint() -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    dtypes = [
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.int8,
        torch.uint8,
        torch.int64,
        torch.bool,
        torch.complex64,
        torch.complex128,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
        torch.uint16,
    ]
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "param": torch.nn.Parameter(torch.ones(3)),
        "dtypes": {str(d): torch.zeros(2, dtype=d) for d in dtypes},
        "view": torch.arange(10.0)[2:5],
        "sparse": torch.eye(3).to_sparse(),
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "numpy": {
            "array": np.arange(6).reshape(2, 3),
            "scalar": np.float32(1.5),
            "f": np.ones(2, order="F"),
        },
        "nested": [(1, {"k": {2, 3}}), "text", b"bytes", None],
        "step": 12,
    }


@pytest.mark.slow
@pytest.mark.parametrize("zipfile_format", [True, False], ids=["zip", "legacy"])
def test_real_torch_checkpoints_have_no_findings(tmp_path: Path, zipfile_format: bool) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "checkpoint.pt"
    torch.save(_checkpoint(), path, _use_new_zipfile_serialization=zipfile_format)
    report = scan_paths([path])
    assert above_info(report) == []
    formats = report.checked[0].detail["formats"]
    assert any(f.endswith("=pickle") or f.endswith("=torch_legacy") for f in formats)


@pytest.mark.slow
def test_quantized_tensors_have_no_findings(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    q = torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)
    qc = torch.quantize_per_channel(
        torch.ones(2, 2), torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), 0, torch.quint8
    )
    for legacy in (False, True):
        path = tmp_path / f"q{legacy}.pt"
        torch.save({"q": q, "qc": qc}, path, _use_new_zipfile_serialization=not legacy)
        assert above_info(scan_paths([path])) == []


@pytest.mark.slow
def test_thousands_of_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(1500)])
    path = tmp_path / "many.pt"
    torch.save(model.state_dict(), path)
    report = scan_paths([path])
    assert above_info(report) == []


@pytest.mark.slow
def test_training_args_bin_is_only_low(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    training_args = pytest.importorskip("transformers.training_args")
    # accelerate is not installed here; device setup is the only part that needs it and it
    # is not part of the pickled state.
    monkeypatch.setattr(
        training_args.TrainingArguments,
        "_setup_devices",
        property(lambda self: torch.device("cpu")),
    )
    args = training_args.TrainingArguments(output_dir=str(tmp_path / "out"))
    path = tmp_path / "training_args.bin"
    torch.save(args, path)
    report = scan_paths([path])
    severities = {f.severity for f in report.findings}
    assert severities == {Severity.LOW}
    names = {f.evidence["module"] + "." + f.evidence["name"] for f in report.findings}
    assert "transformers.training_args.TrainingArguments" in names
    assert rules(report) == {"pickle.non-weights-global"}


@pytest.mark.slow
def test_plain_pickle_of_a_tensor_scans_the_embedded_checkpoint() -> None:
    torch = pytest.importorskip("torch")
    data = pickle.dumps(torch.ones(3), protocol=2)
    report = scan_buffer(data, "tensor.pkl")
    found = {(f.rule, f.evidence.get("name")) for f in report.findings}
    assert ("pickle.dangerous-global", "_load_from_bytes") in found
    assert any("nested@" in c for c in report.checked[0].detail["formats"])
    assert max(f.severity for f in report.findings) == Severity.HIGH


# -- stream structure -----------------------------------------------------------


def test_trailing_garbage_is_medium() -> None:
    found = findings(pickle.dumps([1, 2], protocol=2) + b"\x00\x00garbage")
    assert [(f.rule, f.severity) for f in found] == [("pickle.trailing-data", Severity.MEDIUM)]


def test_concatenated_pickles_are_all_scanned(marker_dir: Path) -> None:
    evil = call_pickle("os", "system", [f"touch {marker_dir}/m"], proto=2)
    found = findings(pickle.dumps(["benign"], protocol=2) + evil + pickle.dumps(1))
    got = rules(found)
    assert {"pickle.multiple-streams", "pickle.dangerous-global"} <= got
    streams = [f for f in found if f.rule == "pickle.multiple-streams"]
    assert [f.evidence["stream"] for f in streams] == [2, 3]


def test_truncated_pickle_keeps_findings_before_the_break() -> None:
    data = call_pickle("os", "system", ["id"], proto=2)[:-1]
    found = findings(data)
    assert {"pickle.truncated", "pickle.dangerous-global"} <= rules(found)


def test_unknown_opcode_after_payload() -> None:
    data = call_pickle("os", "system", ["id"], proto=2)[:-1] + b"\xff\xff"
    found = findings(data)
    assert {"pickle.unknown-opcode", "pickle.dangerous-global"} <= rules(found)


def test_unsupported_protocol_is_reported() -> None:
    found = findings(b"\x80\x09K\x01.")
    assert "pickle.unsupported-protocol" in rules(found)


def test_out_of_band_buffer_is_reported() -> None:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(pickle.PickleBuffer(b"x"), protocol=5, buffer_callback=buffers.append)
    assert "pickle.out-of-band-buffer" in rules(findings(data))


def test_frame_past_the_end_is_reported() -> None:
    data = b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00K\x01."
    assert "pickle.truncated" in rules(findings(data))


# -- nested payloads ---------------------------------------------------------------


def _inner(marker_dir: Path) -> bytes:
    return call_pickle("os", "system", [f"touch {marker_dir}/inner"], proto=2)


def _nested_findings(report: Report) -> set[str]:
    return {f.rule for f in report.findings if "nested@" in f.subject}


def test_pickle_loads_of_bytes_literal_is_scanned(marker_dir: Path) -> None:
    report = scan_buffer(call_pickle("pickle", "loads", [_inner(marker_dir)]), "outer.pkl")
    assert "pickle.dangerous-global" in _nested_findings(report)
    outer = [f for f in report.findings if f.subject == "outer.pkl"]
    assert any(f.evidence.get("module") == "pickle" for f in outer)


def test_nested_via_codecs_encode_as_protocol_2_writes_bytes(marker_dir: Path) -> None:
    text = _inner(marker_dir).decode("latin-1")
    arg = nested_call("_codecs", "encode", [text, "latin1"], proto=2)
    report = scan_buffer(call_pickle("_pickle", "loads", [arg], proto=2), "outer.pkl")
    assert "pickle.dangerous-global" in _nested_findings(report)


@pytest.mark.parametrize(
    ("module", "name", "wrap"),
    [
        ("base64", "b64decode", lambda b: base64.b64encode(b).decode()),
        ("zlib", "decompress", zlib.compress),
    ],
)
def test_nested_via_decoders(marker_dir: Path, module: str, name: str, wrap: Any) -> None:
    arg = nested_call(module, name, [wrap(_inner(marker_dir))])
    report = scan_buffer(call_pickle("pickle", "loads", [arg]), "outer.pkl")
    assert "pickle.dangerous-global" in _nested_findings(report)


def test_torch_load_of_bytesio_is_scanned(marker_dir: Path) -> None:
    arg = nested_call("io", "BytesIO", [_inner(marker_dir)])
    report = scan_buffer(call_pickle("torch", "load", [arg]), "outer.pkl")
    assert "pickle.dangerous-global" in _nested_findings(report)


def test_nested_loader_on_computed_data_is_unresolved() -> None:
    arg = nested_call("mylib", "fetch", ["x"])
    found = findings(call_pickle("pickle", "loads", [arg]))
    assert "pickle.nested-unresolved" in rules(found)


def test_deep_nesting_hits_the_nesting_limit(marker_dir: Path) -> None:
    data = _inner(marker_dir)
    for _ in range(12):
        data = call_pickle("pickle", "loads", [data])
    report = scan_buffer(data, "deep.pkl")
    assert "limit.exceeded" in rules(report)


def test_scanner_never_imports_the_payload_modules() -> None:
    # A module that does not exist would raise if anything tried to import it.
    data = call_pickle("trainguard_no_such_module_xyz", "boom", ["x"])
    found = findings(data)
    assert "pickle.unknown-global" in rules(found)
    assert "trainguard_no_such_module_xyz" not in os.sys.modules  # type: ignore[attr-defined]


def test_p_assembler_sanity() -> None:
    assert bytes(P(2).int_(1).stop()) == b"\x80\x02K\x01."


def test_evidence_is_json_compatible(marker_dir: Path) -> None:
    inner = call_pickle("os", "system", [f"touch {marker_dir}/m"], proto=2)
    data = call_pickle("pickle", "loads", [inner]) + b"\x80\x02\x82\x01N\x85R." + b"junk"
    report = scan_buffer(data, "all.pkl")
    assert len(report.findings) >= 4
    json.dumps(report.to_dict())
