"""The public surface: __all__, runnable docstrings, records, canonical encoding, URLs, keys."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import trainguard.ledger as ledger_pkg
from tests.ledger import _factory as f
from trainguard.errors import ConfigError, LedgerIntegrityError, UsageError
from trainguard.ledger import _canonical
from trainguard.ledger.records import Edge, PreflightResult, Run, record_from_json
from trainguard.ledger.signing import PublicKey, SignedTreeHead, SigningKey
from trainguard.ledger.storage import default_url, parse_url, resolve_url

PUBLIC_MODULES = [
    "trainguard.ledger",
    "trainguard.ledger.storage",
    "trainguard.ledger.signing",
    "trainguard.ledger.records",
    "trainguard.ledger.capture",
    "trainguard.ledger.export",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    # Classes and functions defined in this module or its (private) submodules.
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and callable(v)
        and (
            getattr(v, "__module__", "") == name
            or getattr(v, "__module__", "").startswith(name + ".")
        )
    }
    assert set(module.__all__) >= public
    assert all(hasattr(module, n) for n in module.__all__)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*PUBLIC_MODULES, "trainguard.ledger.capture"])
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_package_example_is_present() -> None:
    assert ">>> verify_ledger(" in (ledger_pkg.__doc__ or "")


def test_canonical_encoding_is_jcs_for_the_allowed_domain() -> None:
    data = _canonical.encode({"b": [1, True, None], "a": "é\n\u2028", "c": {"z": 1, "y": -2}})
    assert data == '{"a":"é\\n\u2028","b":[1,true,null],"c":{"y":-2,"z":1}}'.encode()
    assert _canonical.decode(data) == {
        "a": "é\n\u2028",
        "b": [1, True, None],
        "c": {"y": -2, "z": 1},
    }
    for bad in ({"f": 1.5}, {"n": 2**60}, {"k": b"x"}, {"é": 1}, {"s": "\ud800"}):
        with pytest.raises(ValueError):
            _canonical.encode(bad)
    for bad_bytes in (b'{"a":1, "b":2}', b'{"a":1,"a":2}', b'{"a":1.0}', b"[1]", b"\xff"):
        with pytest.raises(ValueError):
            _canonical.decode(bad_bytes)


def test_records_round_trip_and_validate() -> None:
    run = f.run("r-1", env=f.digest("env"))
    assert record_from_json(run.to_json()) == run
    pre = PreflightResult("gpu-1", 1, False, 1, files=(("torch/x.py", f.digest("x")),))
    assert record_from_json(pre.to_json()) == pre
    with pytest.raises(UsageError):
        Run(
            "bad id",
            user="u",
            hosts=("h",),
            world_size=1,
            accelerator_type="cpu",
            accelerator_count=1,
            started_at=0,
        )
    with pytest.raises(UsageError):
        Edge("r", "sideways", f.digest("x"), "checkpoint", 0)
    with pytest.raises(UsageError):
        Edge("r", "used", "md5:abc", "checkpoint", 0)
    with pytest.raises(UsageError):
        record_from_json({**run.to_json(), "extra": 1})
    with pytest.raises(UsageError):
        record_from_json({**run.to_json(), "world_size": "8"})
    with pytest.raises(UsageError):
        record_from_json({**run.to_json(), "v": 2})
    with pytest.raises(UsageError):
        record_from_json({"kind": "nope", "v": 1})


def test_ledger_url_rule(tmp_path: Path) -> None:
    assert parse_url("sqlite:////abs/l.db").path == Path("/abs/l.db")
    assert parse_url("sqlite:///rel/l.db").path == Path("rel/l.db")
    assert parse_url("plain.db").path == Path("plain.db")
    assert parse_url("sqlite:///l.db?synchronous=normal").synchronous == "normal"
    assert parse_url("sqlite:///l.db").synchronous == "full"
    pg = parse_url("postgresql://u:secret@h:5432/db?schema=team_a&sslmode=disable")
    assert (
        pg.schema == "team_a"
        and "schema" not in (pg.dsn or "")
        and "sslmode=disable" in (pg.dsn or "")
    )
    assert "secret" not in pg.text
    for bad in (
        "mysql://x",
        "sqlite:relative",
        "postgresql://h/db?schema=Bad-Name",
        "",
        "sqlite:///x?foo=1",
    ):
        with pytest.raises(UsageError):
            parse_url(bad)
    env = {"XDG_DATA_HOME": str(tmp_path)}
    assert default_url(env) == f"sqlite:///{tmp_path}/trainguard/ledger.db"
    assert resolve_url(None, env).path == tmp_path / "trainguard" / "ledger.db"
    assert resolve_url(None, {**env, "TRAINGUARD_LEDGER": "sqlite:///x.db"}).path == Path("x.db")
    assert resolve_url(
        "sqlite:///y.db", {**env, "TRAINGUARD_LEDGER": "sqlite:///x.db"}
    ).path == Path("y.db")


def test_keys_and_signed_heads(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key.save(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError):
        key.save(tmp_path / "k.pem")
    again = SigningKey.from_file(tmp_path / "k.pem")
    assert again.public_key == key.public_key
    (tmp_path / "k.pub").write_bytes(key.public_key.to_pem())
    assert PublicKey.from_file(tmp_path / "k.pub").key_id == key.public_key.key_id
    head = key.sign_head("log", 5, b"\x01" * 32, timestamp=7)
    assert head.message() == b"log\n5\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\ntimestamp 7\n"
    assert SignedTreeHead.from_json(head.to_json()) == head
    head.verify([key.public_key])
    with pytest.raises(LedgerIntegrityError):
        SignedTreeHead.from_json({**head.to_json(), "size": 6}).verify([key.public_key])
    with pytest.raises(LedgerIntegrityError):
        SignedTreeHead.from_json({**head.to_json(), "root": "zz"})


def test_step_metrics_keep_floats_exactly_nan_included() -> None:
    from trainguard.ledger import StepMetrics

    m = StepMetrics.of("r1", 9, 1, 1714000000, {"loss": 0.1 + 0.2, "grad_norm": float("nan")})
    back = record_from_json(_canonical.decode(_canonical.encode(m.to_json())))
    assert back == m
    floats = back.floats()  # type: ignore[attr-defined]
    assert floats["loss"] == 0.1 + 0.2 and floats["grad_norm"] != floats["grad_norm"]
    for bad in ({"Loss": "1.0"}, {"loss": "1.0; drop"}, {"loss": "0x10"}):
        with pytest.raises(UsageError, match="metrics"):
            StepMetrics("r1", 9, 1, 1714000000, bad)
