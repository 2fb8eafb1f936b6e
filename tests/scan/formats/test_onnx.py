"""ONNX: external data that leaves the model folder, custom domains, subgraphs (onnx builds the models)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trainguard.findings import Severity
from trainguard.scan import ScanLimits, scan_buffer, scan_paths
from trainguard.scan.formats import onnx as onnx_format

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.external_data_helper import set_external_data  # noqa: E402


def _tensor(name: str, location: str | None = None) -> TensorProto:
    t = numpy_helper.from_array(np.arange(4, dtype=np.float32), name)
    if location is not None:
        set_external_data(t, location=location, offset=0, length=16)
        t.ClearField("raw_data")
    return t


def _model(*initializers: TensorProto, nodes: list[object] | None = None, **kw: object) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph(
        nodes
        or [helper.make_node("Add", ["x", initializers[0].name if initializers else "x"], ["y"])],
        "g",
        [x],
        [y],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, **kw)  # type: ignore[arg-type]
    return bytes(model.SerializeToString())


def _rules(report: object, at_least: Severity = Severity.INFO) -> set[str]:
    return {f.rule for f in report.findings if f.severity >= at_least}  # type: ignore[attr-defined]


def test_plain_model_is_detected_and_clean() -> None:
    data = _model(_tensor("w"))
    assert onnx_format.detect(memoryview(data), "model.onnx")
    report = scan_buffer(data, "model.onnx")
    assert report.checked[0].kind == "onnx"
    assert report.findings == []


def test_external_data_inside_folder_is_clean(tmp_path: Path) -> None:
    model = onnx.load_from_string(_model(_tensor("w")))
    onnx.save_model(
        model,
        tmp_path / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    report = scan_paths([tmp_path / "model.onnx"])
    assert _rules(report) == set()


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("../secret.bin", "'..' component"),  # CVE-2022-25882
        ("sub/../../secret.bin", "'..' component"),  # CVE-2024-27318: nested traversal bypass
        ("..\\secret.bin", "'..' component"),
        ("/etc/hostname", "absolute path"),
        ("C:\\Windows\\win.ini", "absolute path"),
    ],
)
def test_external_data_escape(location: str, reason: str) -> None:
    report = scan_buffer(_model(_tensor("w", location)), "model.onnx")
    escapes = [f for f in report.findings if f.rule == "onnx.external-data-escape"]
    assert len(escapes) == 1
    assert escapes[0].severity is Severity.HIGH
    assert escapes[0].evidence["reason"] == reason
    assert escapes[0].evidence["tensors"] == ["w"]


def test_symlink_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 16)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(outside, folder / "weights.bin")
    (folder / "model.onnx").write_bytes(_model(_tensor("w", "weights.bin")))
    report = scan_paths([folder / "model.onnx"])
    escapes = [f for f in report.findings if f.rule == "onnx.external-data-escape"]
    assert escapes and escapes[0].evidence["reason"] == "symbolic link"


def test_missing_and_short_external_files(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(_model(_tensor("w", "absent.bin")))
    (tmp_path / "short.bin").write_bytes(b"\0" * 8)  # the tensor needs 16 bytes
    (tmp_path / "b.onnx").write_bytes(_model(_tensor("w", "short.bin")))
    report = scan_paths([tmp_path / "a.onnx", tmp_path / "b.onnx"])
    by_subject = {(Path(f.subject).name, f.rule) for f in report.findings}
    assert ("a.onnx", "onnx.external-data-missing") in by_subject
    assert ("b.onnx", "onnx.external-data-invalid") in by_subject


def test_escape_inside_if_subgraph_and_sparse_initializer() -> None:
    branch_out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])
    then_graph = helper.make_graph(
        [helper.make_node("Identity", ["k"], ["b"])],
        "then",
        [],
        [branch_out],
        initializer=[_tensor("k", "../../etc/passwd")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["b"])], "else", [], [branch_out]
    )
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph)
    sparse = helper.make_sparse_tensor(
        _tensor("sv", "/abs/values.bin"),
        numpy_helper.from_array(np.arange(4, dtype=np.int64), "si"),
        [4],
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph(
        [node], "g", [x], [y], initializer=[cond], sparse_initializer=[sparse]
    )
    data = helper.make_model(graph).SerializeToString()
    report = scan_buffer(data, "model.onnx")
    locations = {
        f.evidence["location"] for f in report.findings if f.rule == "onnx.external-data-escape"
    }
    assert locations == {"../../etc/passwd", "/abs/values.bin"}


def test_custom_domain_but_not_local_functions() -> None:
    custom = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example.ops")
    data = _model(
        nodes=[custom],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.ops", 1)],
    )
    report = scan_buffer(data, "model.onnx")
    [finding] = [f for f in report.findings if f.rule == "onnx.custom-domain"]
    assert finding.evidence["domains"] == {"com.example.ops": ["FancyOp"]}

    fn = helper.make_function(
        "local.fns",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    call = helper.make_node("Twice", ["x"], ["y"], domain="local.fns")
    data = _model(
        nodes=[call],
        functions=[fn],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local.fns", 1)],
    )
    assert _rules(scan_buffer(data, "model.onnx")) == set()


def test_nesting_past_the_limit_is_a_finding() -> None:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [out])
    for level in range(12):
        node = helper.make_node("If", ["c"], ["y"], then_branch=graph, else_branch=graph)
        graph = helper.make_graph([node], f"g{level}", [], [out])
    data = helper.make_model(graph).SerializeToString()
    report = scan_buffer(data, "deep.onnx", limits=ScanLimits(message_depth=20))
    assert any(
        f.rule == "limit.exceeded" and f.evidence["limit"] == "message_depth"
        for f in report.findings
    )
    assert _rules(scan_buffer(data, "deep.onnx")) == set()


def test_not_onnx() -> None:
    assert not onnx_format.detect(memoryview(b"\x80\x04K\x01."), None)
    assert not onnx_format.detect(memoryview(b'{"a": 1}'), None)
    data = _model(_tensor("w"))
    assert not onnx_format.detect(memoryview(data[:-3]), None)  # truncated: not well formed
