"""`trainguard ledger ...`: verbs, flags, exit codes and output streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ledger import _factory as f
from tests.ledger.test_verify_tamper import raw
from trainguard.cli.main import build_parser, main
from trainguard.ledger import _fast

VERBS = {
    "maintain",
    "init",
    "keygen",
    "sign",
    "head",
    "verify",
    "blast-radius",
    "lineage",
    "check-report",
    "provenance",
    "register",
    "hash",
    "show",
    "append",
    "export",
}


def _subparsers(parser: object) -> dict[str, object]:
    for action in parser._actions:  # type: ignore[attr-defined]
        if action.__class__.__name__ == "_SubParsersAction":
            return dict(action.choices)
    return {}


def test_verbs_and_flags_are_frozen() -> None:
    ledger = _subparsers(build_parser())["ledger"]
    verbs = _subparsers(ledger)
    assert set(verbs) == VERBS
    flags = {
        name: sorted(o for a in p._actions for o in a.option_strings)  # type: ignore[attr-defined]
        for name, p in verbs.items()
    }
    assert flags["verify"] == sorted(
        [
            "-h",
            "--help",
            "--ledger",
            "--public-key",
            "--since",
            "--require-signed",
            "--no-derived",
            "--jobs",
            "--save-head",
            "--json",
        ]
    )
    assert {
        "--artifact",
        "--file-hash",
        "--env-baseline",
        "--user",
        "--host",
        "--run",
        "--since",
        "--until",
        "--prices",
        "--html",
        "--json",
        "--verify",
        "--from-log",
    } <= set(flags["blast-radius"])
    assert set(_subparsers(verbs["export"])) == {"openlineage", "model-signing"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRAINGUARD_LEDGER", f"sqlite:///{tmp_path / 'l.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _records(path: Path) -> Path:
    lines = [
        f.run("r1", gpus=8, hours=2).to_json(),
        f.used("r1", "base").to_json(),
        f.produced("r1", "ckpt").to_json(),
        f.run("r2", gpus=4, hours=1, start=f.T0 + 10).to_json(),
        f.used("r2", "ckpt").to_json(),
        f.run("r3", gpus=1, hours=1, start=f.T0 + 20).to_json(),
    ]
    path.write_text(
        "".join(json.dumps({k: v for k, v in x.items() if k != "v"}) + "\n" for x in lines)
    )
    return path


def test_end_to_end_with_exit_codes(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "verify"]) == 2  # no ledger yet: an error, with a hint
    assert "ledger init" in capsys.readouterr().err
    assert main(["ledger", "init", "--origin", "test-log"]) == 0
    assert main(["ledger", "keygen", "--out", "k.pem"]) == 0
    assert main(["ledger", "append", str(_records(env / "r.jsonl"))]) == 0
    assert main(["ledger", "sign", "--key", "k.pem"]) == 0
    assert main(["ledger", "head", "--save", "seen.json"]) == 0
    capsys.readouterr()
    assert (
        main(["ledger", "verify", "--json", "--public-key", "k.pem.pub", "--since", "seen.json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["size"] == 6 and out["signatures_checked"]
    assert out["compiled"] is _fast.COMPILED  # says which implementation checked it

    digest = f.digest("base")
    code = main(
        [
            "ledger",
            "blast-radius",
            "--artifact",
            digest,
            "--as-of",
            str(f.T0 + 9000),
            "--json",
            "--html",
            "r.html",
            "--public-key",
            "k.pem.pub",
        ]
    )
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 1 and [r["run_id"] for r in report["affected_runs"]] == ["r1", "r2"]
    assert report["totals"]["affected_gpu_hours"] == 20.0 and "AFFECTED  2 runs" in err
    html = (env / "r.html").read_text()
    assert html.startswith("<!doctype html>") and "r2" in html
    (env / "report.json").write_text(out)
    assert (
        main(
            [
                "ledger",
                "check-report",
                "report.json",
                "--public-key",
                "k.pem.pub",
                "--require-signed",
            ]
        )
        == 0
    )
    assert main(["ledger", "blast-radius", "-q", "--user", "nobody"]) == 0  # nothing affected

    assert main(["ledger", "lineage", "--format", "json", digest]) == 0
    graph = json.loads(capsys.readouterr().out)
    assert {e["to"] for e in graph["edges"]} >= {"r1", "r2"}

    raw(f"sqlite:///{env / 'l.db'}", "UPDATE runs SET user_name = 'eve' WHERE leaf = 0")
    assert main(["ledger", "verify", "--public-key", "k.pem.pub"]) == 1
    assert "derived table runs disagrees" in capsys.readouterr().err


def test_html_escapes_everything(env: Path) -> None:
    from trainguard.ledger._html import render_blast_html

    main(["ledger", "init"])
    evil = f.run("r1").to_json() | {"command": "<script>alert(1)</script>"}
    (env / "e.jsonl").write_text(
        json.dumps(evil) + "\n" + json.dumps(f.used("r1", "x").to_json()) + "\n"
    )
    main(["ledger", "append", "e.jsonl"])
    main(["ledger", "blast-radius", "-q", "--run", "r1", "--as-of", str(f.T0 + 10), "-o", "r.json"])
    html = render_blast_html(json.loads((env / "r.json").read_text()))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_hash_register_provenance(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (env / "w.bin").write_bytes(b"weights")
    main(["ledger", "init"])
    assert main(["ledger", "provenance", "--json", "w.bin"]) == 1
    assert json.loads(capsys.readouterr().out)["findings"][0]["rule"] == "ledger.unknown-provenance"
    assert main(["ledger", "register", "--kind", "model", "w.bin"]) == 0
    assert main(["ledger", "provenance", "-q", "w.bin"]) == 0
    capsys.readouterr()
    assert main(["ledger", "hash", "w.bin"]) == 0
    assert capsys.readouterr().out.startswith("sha256:")
    assert main(["ledger", "maintain"]) == 0
    assert main(["ledger", "show", "0"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["entries"][0]["entry"]["kind"] == "artifact"


def test_bad_time_and_missing_indicator_are_usage_errors(env: Path) -> None:
    main(["ledger", "init"])
    assert main(["ledger", "blast-radius", "--since", "yesterday"]) == 2
    assert main(["ledger", "blast-radius"]) == 2


def test_bulk_append_checks_every_line_first(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainguard.ledger import Ledger, verify_ledger

    good = _records(env / "r.jsonl").read_text(encoding="utf-8")
    # A bad last line: nothing is appended, and the error names the line.
    (env / "bad.jsonl").write_text(good + '{"kind": "edge", "run_id": 5}\n', encoding="utf-8")
    assert main(["ledger", "append", "--bulk", "bad.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "line 7" in err and "nothing was appended" in err
    assert main(["ledger", "append", "--bulk", "-"]) == 2  # stdin cannot be read twice
    with Ledger.open(f"sqlite:///{env / 'l.db'}", create=True) as ledger:
        assert ledger.size() == 0
    # Good input, batches of 4 over 6 records; blank lines are skipped.
    (env / "ok.jsonl").write_text(good.replace("\n", "\n\n"), encoding="utf-8")
    capsys.readouterr()
    assert main(["ledger", "append", "--bulk", "--batch", "4", "--json", "ok.jsonl"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["first"], out["size"], out["appended"]) == (0, 6, 6)
    with Ledger.open(f"sqlite:///{env / 'l.db'}") as ledger:
        result = verify_ledger(ledger, jobs=1)  # indexes rebuilt and consistent
        assert result.size == 6 and result.derived_rows >= 6
        assert [e.record.kind for e in ledger.entries(0, 6)] == [
            json.loads(line)["kind"] for line in good.splitlines()
        ]
