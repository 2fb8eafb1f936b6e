"""``trainguard dashboard``: refuses a missing ledger, serves a real one until interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.dashboard._util import HostileLedger
from trainguard.cli.main import main


def test_missing_ledger_is_exit_2_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nowhere" / "ledger.db"
    code = main(["dashboard", "--ledger", f"sqlite:///{path}", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no ledger has been initialised here" in err and "hint:" in err
    assert not path.exists() and not path.parent.exists()


def test_bad_token_and_busy_port_are_exit_2(
    hostile: HostileLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", "--ledger", hostile.url, "--token", "short"]) == 2
    assert "access token" in capsys.readouterr().err
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", "--ledger", hostile.url, "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainguard", "dashboard", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("open http://"):
            return proc, "".join(lines)
    proc.kill()
    raise AssertionError("the dashboard did not start: " + "".join(lines))


@pytest.mark.slow
def test_serves_on_loopback_until_interrupted(hostile: HostileLedger) -> None:
    env = {**os.environ, "TRAINGUARD_DASHBOARD_TOKEN": ""}
    proc, out = _start(["--ledger", hostile.url, "--port", "0"], env)
    try:
        url = out.strip().splitlines()[-1].removeprefix("open ")
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        with urllib.request.urlopen(url, timeout=30) as page:
            assert b"train-a" in page.read()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert proc.stderr is not None and "stopped" in proc.stderr.read()


@pytest.mark.slow
def test_token_from_the_environment_is_required_and_printed(hostile: HostileLedger) -> None:
    # The token comes from the environment (never from argv, which `ps` shows). The exposed
    # (non-loopback) decision itself is tested in test_security without binding 0.0.0.0.
    env = {**os.environ, "TRAINGUARD_DASHBOARD_TOKEN": "env-token-0123456789abcdef"}
    proc, out = _start(["--ledger", hostile.url, "--port", "0"], env)
    try:
        url = out.strip().splitlines()[-1].removeprefix("open ")
        assert url.endswith("/?token=env-token-0123456789abcdef")
        port = url.split(":")[2].split("/")[0]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/runs")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, timeout=30)
        assert denied.value.code == 401
        request.add_header("Authorization", "Bearer env-token-0123456789abcdef")
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert b"train-a" in reply.read()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
