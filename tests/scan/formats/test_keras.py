"""Keras 3 .keras archives (written by hand with zipfile): config.json analysis, nested members."""

from __future__ import annotations

import base64
import io
import json
import marshal
import pickle
import zipfile

import numpy as np
import pytest

from trainguard.findings import Report, Severity
from trainguard.scan import scan_buffer
from trainguard.scan.formats import keras as keras_format

h5py = pytest.importorskip("h5py")


def lambda_code(body: str) -> str:
    """Base64 of the marshalled code of ``lambda x: <body>`` (compiled, never run)."""
    module = compile(f"lambda x: {body}", "<test>", "eval")
    code = next(c for c in module.co_consts if hasattr(c, "co_code"))
    return base64.b64encode(marshal.dumps(code)).decode()


def layer(
    class_name: str, name: str, module: str = "keras.layers", **config: object
) -> dict[str, object]:
    return {
        "module": module,
        "class_name": class_name,
        "config": {"name": name, **config},
        "registered_name": None,
    }


def model(*layers: dict[str, object]) -> dict[str, object]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "sequential", "trainable": True, "layers": list(layers)},
        "registered_name": None,
        "compile_config": {
            "optimizer": {
                "module": "keras.optimizers",
                "class_name": "Adam",
                "config": {"learning_rate": 0.001},
                "registered_name": None,
            },
            "loss": {
                "module": "keras.losses",
                "class_name": "MeanSquaredError",
                "config": {},
                "registered_name": None,
            },
        },
    }


def weights() -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros((4, 4), dtype=np.float32))
    return buf.getvalue()


def archive(config: dict[str, object], extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "metadata.json",
            json.dumps({"keras_version": "3.6.0", "date_saved": "2024-06-01@12:00:00"}),
        )
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", weights())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def rules(report: Report) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for f in report.findings:
        out[f.rule] = max(out.get(f.rule, f.severity), f.severity)
    return out


def test_clean_archive() -> None:
    data = archive(model(layer("Dense", "dense", units=4), layer("Dropout", "drop", rate=0.1)))
    assert keras_format.detect(memoryview(data), "model.keras")
    report = scan_buffer(data, "model.keras")
    assert report.checked[0].kind == "keras"
    assert report.findings == []
    formats = report.checked[0].detail["formats"]
    assert "model.keras::model.weights.h5=hdf5" in formats  # the weights file was scanned too


def test_plain_zip_is_not_keras() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", "{}")
    assert not keras_format.detect(memoryview(buf.getvalue()), "x.zip")


def test_lambda_layer_is_critical() -> None:
    fn = {
        "class_name": "__lambda__",
        "config": {"code": lambda_code("x * 2"), "defaults": None, "closure": None},
    }
    data = archive(model(layer("Dense", "dense", units=4), layer("Lambda", "double", function=fn)))
    [finding] = scan_buffer(data, "m.keras").findings
    assert (finding.rule, finding.severity) == ("keras.lambda-code", Severity.CRITICAL)
    assert finding.evidence["where"] == "config.json"
    assert finding.evidence["items"][0]["layer"] == "double"


@pytest.mark.parametrize(
    ("module", "function"),
    [
        ("builtins", "exec"),  # CVE-2025-1550: arbitrary module/function in config.json
        ("keras.config", "enable_unsafe_deserialization"),  # CVE-2025-9906
        ("keras.models", "load_model"),  # CVE-2025-8747-style chaining
    ],
)
def test_function_references_that_bypass_safe_mode(module: str, function: str) -> None:
    fn = {
        "module": module,
        "class_name": "function",
        "config": function,
        "registered_name": "function",
    }
    data = archive(model(layer("Lambda", "l", function=fn, arguments={"safe_mode": False})))
    found = rules(scan_buffer(data, "m.keras"))
    assert found == {"keras.unsafe-reference": Severity.CRITICAL}


def test_math_functions_are_fine_and_user_functions_are_not() -> None:
    relu = {
        "module": "keras.activations",
        "class_name": "function",
        "config": "relu",
        "registered_name": "function",
    }
    mine = {
        "module": "my_project.fns",
        "class_name": "function",
        "config": "scale",
        "registered_name": "function",
    }
    assert (
        scan_buffer(archive(model(layer("Lambda", "a", function=relu))), "a.keras").findings == []
    )
    found = rules(scan_buffer(archive(model(layer("Lambda", "b", function=mine))), "b.keras"))
    assert found == {"keras.function-reference": Severity.HIGH}


def test_custom_objects_are_named() -> None:
    custom = {
        "module": "my_pkg.layers",
        "class_name": "Gate",
        "config": {"name": "gate"},
        "registered_name": "my_pkg>Gate",
    }
    [finding] = scan_buffer(archive(model(custom)), "m.keras").findings
    assert (finding.rule, finding.severity) == ("keras.custom-object", Severity.MEDIUM)
    assert finding.evidence["items"][0]["registered_name"] == "my_pkg>Gate"


def test_members_are_scanned_as_nested_content() -> None:
    class Call:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("echo never run",))  # pickled, never unpickled

    data = archive(
        model(layer("Dense", "dense", units=4)), {"assets/extra.pkl": pickle.dumps(Call())}
    )
    report = scan_buffer(data, "m.keras")
    nested = [f for f in report.findings if f.subject == "m.keras::assets/extra.pkl"]
    assert nested and max(f.severity for f in nested) >= Severity.HIGH


def test_invalid_config_is_a_finding() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", "{not json")
    assert rules(scan_buffer(buf.getvalue(), "m.keras")) == {
        "keras.config-invalid": Severity.MEDIUM
    }


def test_zip_bomb_member_does_not_hide_the_config() -> None:
    # A highly compressible member before config.json: its limit hit is a finding on that
    # member, and config.json (with a Lambda layer) is still analysed.
    bomb = b"\0" * (80 * 1024 * 1024)
    config = model(
        layer(
            "Lambda",
            "evil",
            function={"class_name": "__lambda__", "config": {"code": lambda_code("x")}},
        )
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("assets/blob.bin", bomb)
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        zf.writestr("config.json", json.dumps(config))
    found = rules(scan_buffer(buf.getvalue(), "bomb.keras"))
    assert found.get("limit.exceeded") is not None
    assert found.get("keras.lambda-code") is Severity.CRITICAL
