"""The env, code and preflight commands: exit codes, machine output, baseline writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.env._envcraft import edit_keep_size, make_repo, site_packages
from tests.env.conftest import python_of
from trainguard.cli.main import main

#: A protocol-0 pickle that would call os.system: built as bytes, never loaded.
EVIL_PICKLE = b"cos\nsystem\n(S'true'\ntR."


def env_args(venv: Path, wheelhouse: Path) -> list[str]:
    return ["--python", python_of(venv), "--wheels", str(wheelhouse), "--no-auto-wheels"]


def test_env_verify_exit_codes_and_json(
    demo_venv: Path, wheelhouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["env", "verify", "-q", *env_args(demo_venv, wheelhouse)]) == 0
    edit_keep_size(site_packages(demo_venv) / "tgdemo" / "optim.py", b"p - lr", b"p + lr")
    capsys.readouterr()
    assert main(["env", "verify", "--json", *env_args(demo_venv, wheelhouse)]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["engine"] == "env"
    assert doc["findings"][0]["rule"] == "env.record-mismatch"
    assert "env.record-mismatch" in err
    assert (
        main(
            [
                "env",
                "verify",
                "-q",
                "--fail-on",
                "critical",
                "--no-auto-wheels",
                "--python",
                python_of(demo_venv),
                "--allow-sha256",
                "zz",
            ]
        )
        == 2
    )


def test_env_snapshot_then_fast_recheck(
    demo_venv: Path, wheelhouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = tmp_path / "env.json"
    assert (
        main(
            [
                "env",
                "snapshot",
                "-q",
                str(baseline),
                "--with-sources",
                *env_args(demo_venv, wheelhouse),
            ]
        )
        == 0
    )
    assert baseline.exists() and Path(f"{baseline}.sources.zip").exists()
    assert (
        main(["env", "verify", "-q", "--python", python_of(demo_venv), "--baseline", str(baseline)])
        == 0
    )
    edit_keep_size(site_packages(demo_venv) / "tgdemo" / "optim.py", b"p - lr", b"p + lr")
    capsys.readouterr()
    code = main(
        ["env", "verify", "--json", "--python", python_of(demo_venv), "--baseline", str(baseline)]
    )
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    assert {f["rule"] for f in doc["findings"]} == {"env.baseline-modified"}


def test_snapshot_refuses_a_tampered_environment(
    demo_venv: Path, wheelhouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_keep_size(site_packages(demo_venv) / "tgdemo" / "optim.py", b"p - lr", b"p + lr")
    baseline = tmp_path / "env.json"
    assert main(["env", "snapshot", str(baseline), *env_args(demo_venv, wheelhouse)]) == 1
    assert not baseline.exists()
    assert "baseline NOT written" in capsys.readouterr().err


def test_code_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo")
    assert main(["code", "verify", "-q", str(repo)]) == 0
    (repo / "train.py").write_text("x = 1\n")
    assert main(["code", "verify", "--json", str(repo)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["findings"][0]["rule"] == "code.modified"
    assert doc["stats"]["commit"]


def test_preflight_combines_scan_env_and_code(
    demo_venv: Path, wheelhouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    ckpt = tmp_path / "ckpt.pkl"
    ckpt.write_bytes(b"\x80\x04K\x01.")  # pickle of the int 1
    args = ["preflight", "--scan", str(ckpt), "--repo", str(repo), *env_args(demo_venv, wheelhouse)]
    assert main([*args, "-q"]) == 0
    capsys.readouterr()
    ckpt.write_bytes(EVIL_PICKLE)
    (repo / "train.py").write_text("x = 1\n")
    assert main([*args, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["engine"] == "preflight"
    parts = doc["stats"]["parts"]
    assert set(parts) == {"scan", "env", "code"}
    assert parts["scan"]["findings"] >= 1 and parts["code"]["findings"] == 1
    assert parts["env"]["findings"] == 0
    rules = {f["rule"] for f in doc["findings"]}
    assert "code.modified" in rules


def test_preflight_missing_checkpoint_is_an_error(tmp_path: Path) -> None:
    code = main(["preflight", "-q", "--no-env", "--no-code", "--scan", str(tmp_path / "nope.pt")])
    assert code == 2


def test_cli_surface_is_frozen() -> None:
    from trainguard.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    env = sub.choices["env"]  # type: ignore[attr-defined]
    verbs = next(a for a in env._actions if a.dest == "verb")
    assert sorted(verbs.choices) == ["snapshot", "verify"]
    verify = verbs.choices["verify"]
    flags = sorted(o for a in verify._actions for o in a.option_strings)
    assert flags == sorted(
        [
            "-h",
            "--help",
            "--baseline",
            "--python",
            "--wheels",
            "--no-auto-wheels",
            "--pip-cache",
            "--lock",
            "--deep-pyc",
            "--allow-sha256",
            "--allow-env",
            "--workers",
            "--json",
            "--sarif",
            "--output",
            "-o",
            "--fail-on",
            "--quiet",
            "-q",
            "-v",
            "--verbose",
        ]
    )
    preflight = sub.choices["preflight"]  # type: ignore[attr-defined]
    pf_flags = {o for a in preflight._actions for o in a.option_strings}
    assert {
        "--scan",
        "--baseline",
        "--repo",
        "--no-env",
        "--no-code",
        "--python",
        "--lock",
    } <= pf_flags
