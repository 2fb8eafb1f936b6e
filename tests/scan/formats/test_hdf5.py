"""HDF5 / legacy Keras .h5: model configs with Lambda layers, custom objects, external files."""

from __future__ import annotations

import base64
import io
import json
import marshal
import sys

import numpy as np
import pytest

from trainguard.findings import Report, Severity
from trainguard.scan import scan_buffer
from trainguard.scan.formats import hdf5 as hdf5_format

h5py = pytest.importorskip("h5py")


def lambda_code(body: str) -> str:
    """Base64 of the marshalled code of ``lambda x: <body>`` (what Keras' func_dump stores).

    Compiling is not running: the body would only execute if a loader called the function.
    """
    module = compile(f"lambda x: {body}", "<test>", "eval")
    code = next(c for c in module.co_consts if hasattr(c, "co_code"))
    return base64.b64encode(marshal.dumps(code)).decode()


def dense(name: str) -> dict[str, object]:
    return {"class_name": "Dense", "config": {"name": name, "units": 4, "activation": "relu"}}


def sequential(*layers: dict[str, object], name: str = "sequential") -> dict[str, object]:
    return {"class_name": "Sequential", "config": {"name": name, "layers": list(layers)}}


TRAINING = {
    "loss": "mse",
    "metrics": ["accuracy"],
    # TF 2.11+ registers its own optimizers under the "Custom" package.
    "optimizer_config": {"class_name": "Custom>Adam", "config": {"learning_rate": 0.001}},
}


def h5(attrs: dict[str, str], **kw: object) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w", **kw) as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        f.create_dataset("model_weights/dense/kernel", data=np.zeros((4, 4), dtype=np.float32))
    return buf.getvalue()


def rules(report: Report) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for f in report.findings:
        out[f.rule] = max(out.get(f.rule, f.severity), f.severity)
    return out


def test_clean_keras2_model_and_plain_data_files() -> None:
    data = h5(
        {
            "model_config": json.dumps(sequential(dense("a"), dense("b"))),
            "training_config": json.dumps(TRAINING),
            "keras_version": "2.15.0",
        }
    )
    assert hdf5_format.detect(memoryview(data), "model.h5")
    report = scan_buffer(data, "model.h5")
    assert report.checked[0].kind == "hdf5"
    assert report.findings == []
    assert scan_buffer(h5({}), "data.h5").findings == []


def test_lambda_bytecode_is_critical() -> None:
    layer = {
        "class_name": "Lambda",
        "config": {
            "name": "sneaky",
            "function": [
                lambda_code("(__import__('os').system('touch /tmp/x'), x)[1]"),
                None,
                None,
            ],
            "function_type": "lambda",
            "module": "__main__",
        },
    }
    report = scan_buffer(h5({"model_config": json.dumps(sequential(dense("d"), layer))}), "m.h5")
    [finding] = [f for f in report.findings if f.rule == "keras.lambda-code"]
    assert finding.severity is Severity.CRITICAL
    item = finding.evidence["items"][0]
    assert item["layer"] == "sneaky"
    assert "system" in item["names"] and len(item["code_sha256"]) == 64


def test_function_references() -> None:
    os_system = {
        "class_name": "Lambda",
        "config": {"name": "l", "function": "system", "function_type": "function", "module": "os"},
    }
    user_fn = {
        "class_name": "Lambda",
        "config": {
            "name": "u",
            "function": "my_fn",
            "function_type": "function",
            "module": "mylib.ops",
        },
    }
    report = scan_buffer(h5({"model_config": json.dumps(sequential(os_system, user_fn))}), "m.h5")
    found = rules(report)
    assert found["keras.unsafe-reference"] is Severity.CRITICAL
    assert found["keras.function-reference"] is Severity.HIGH


def test_custom_objects_and_tf_ops_inside_nested_models() -> None:
    inner = sequential(
        {"class_name": "MyAttention", "config": {"name": "att"}},
        {"class_name": "Custom>Gate", "config": {"name": "gate"}},
        {"class_name": "TFOpLambda", "config": {"name": "w", "function": "io.write_file"}},
        {"class_name": "TFOpLambda", "config": {"name": "add", "function": "math.add"}},
        name="inner",
    )
    outer = {"class_name": "Functional", "config": {"name": "outer", "layers": [inner]}}
    report = scan_buffer(h5({"model_config": json.dumps(outer)}), "m.h5")
    found = rules(report)
    assert found == {"keras.custom-object": Severity.MEDIUM, "keras.tf-op": Severity.HIGH}
    [tf_op] = [f for f in report.findings if f.rule == "keras.tf-op"]
    assert {i["function"] for i in tf_op.evidence["items"]} == {"io.write_file", "math.add"}
    [custom] = [f for f in report.findings if f.rule == "keras.custom-object"]
    assert {i["class_name"] for i in custom.evidence["items"]} == {"MyAttention", "Custom>Gate"}


def test_tf_math_ops_are_low() -> None:
    ops = [
        {"class_name": "TFOpLambda", "config": {"name": f"op{i}", "function": fn}}
        for i, fn in enumerate(["__operators__.add", "math.multiply", "reshape", "nn.relu"])
    ]
    report = scan_buffer(h5({"model_config": json.dumps(sequential(*ops))}), "m.h5")
    assert rules(report) == {"keras.tf-op": Severity.LOW}
    other = {"class_name": "TFOpLambda", "config": {"name": "x", "function": "random.uniform"}}
    assert rules(scan_buffer(h5({"model_config": json.dumps(sequential(other))}), "m.h5")) == {
        "keras.tf-op": Severity.MEDIUM
    }


def test_training_config_is_analysed_too() -> None:
    training = {"loss": {"class_name": "function", "module": "subprocess", "config": "run"}}
    data = h5(
        {
            "model_config": json.dumps(sequential(dense("d"))),
            "training_config": json.dumps(training),
        }
    )
    [finding] = scan_buffer(data, "m.h5").findings
    assert (finding.rule, finding.evidence["where"]) == (
        "keras.unsafe-reference",
        "training_config",
    )


def test_invalid_config_is_a_finding() -> None:
    report = scan_buffer(h5({"model_config": '{"class_name": "Sequential", '}), "m.h5")
    assert rules(report) == {"keras.config-invalid": Severity.MEDIUM}


def test_references_to_other_files() -> None:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["link"] = h5py.ExternalLink("/etc/secret.h5", "/data")
        f.create_dataset("raw", (4,), dtype="i4", external=[("../../etc/hostname", 0, 16)])
        layout = h5py.VirtualLayout(shape=(4,), dtype="i4")
        layout[:] = h5py.VirtualSource("elsewhere.h5", "x", shape=(4,))
        f.create_virtual_dataset("vds", layout)
        group = f.create_group("g")
        group["self"] = group  # a hard-link cycle must not loop forever
    [finding] = scan_buffer(buf.getvalue(), "refs.h5").findings
    assert finding.rule == "hdf5.external-reference" and finding.severity is Severity.MEDIUM
    kinds = {(r["kind"], r["file"]) for r in finding.evidence["references"]}
    assert kinds == {
        ("external link", "/etc/secret.h5"),
        ("external storage", "../../etc/hostname"),
        ("virtual dataset", "elsewhere.h5"),
    }


def test_user_block_offsets_are_found() -> None:
    data = h5({"model_config": json.dumps(sequential(dense("d")))}, userblock_size=1024)
    assert data[:8] != b"\x89HDF\r\n\x1a\n"
    assert hdf5_format.detect(memoryview(data), None)
    assert scan_buffer(data, "ub.h5").checked[0].kind == "hdf5"


def test_byte_level_fallback_without_h5py(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = {
        "class_name": "Lambda",
        "config": {
            "name": "l",
            "function": [lambda_code("x"), None, None],
            "function_type": "lambda",
        },
    }
    data = h5({"model_config": json.dumps(sequential(layer))})
    clean = h5({"model_config": json.dumps(sequential(dense("d")))})
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    report = scan_buffer(data, "m.h5")
    assert rules(report) == {"hdf5.heuristic": Severity.LOW, "keras.lambda-code": Severity.CRITICAL}
    assert rules(scan_buffer(clean, "c.h5")) == {"hdf5.heuristic": Severity.LOW}
