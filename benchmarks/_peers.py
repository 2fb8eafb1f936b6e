"""The scanners compared by scan_peers.py: how each is invoked and how it says "unsafe".

Each tool is run as its users run it, one process per invocation (interpreter
start included). Verdicts come from the tool's own documented signal:

- trainguard: ``trainguard scan -q PATH``; exit 1 findings at or above medium, 0 clean, 2 error.
- picklescan: ``picklescan -p PATH``; the "Infected files: N" summary (exit 1 when N > 0;
  exit 2 on a scan error, which can hide an infection, hence the summary).
- modelscan: ``modelscan -p PATH``; exit 1 issues, 0 none, 2 errors, 3 no supported file
  (reported as "unsupported"); with errors, the per-severity issue counts decide.
- fickling: its CLI's ``--check-safety`` reads one raw pickle stream only (a torch zip
  is a parse error), so it is driven through its API the way its own ``--huggingface``
  mode does: ``find_file_properties`` picks ``scan_zip_archive`` for zips, ``scan_file``
  for valid pickles, and skips the rest; unsafe when any result is not ``is_safe``.
  Exit 1 unsafe, 0 safe, 2 error.
- modelaudit: ``modelaudit scan --no-cache PATH`` with telemetry off; exit 1 issues
  (warnings included), 0 none, 2 errors.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS_BIN = REPO / ".venv-peers" / "bin"

FLAGGED, CLEAN, ERROR, UNSUPPORTED, TIMEOUT = "flagged", "clean", "error", "unsupported", "timeout"

#: Walks files (or a directory) with fickling's scanning API.
FICKLING_DRIVER = r"""
import os, sys
from fickling.loader import scan_file, scan_zip_archive
from fickling.polyglot import find_file_properties
root = sys.argv[1]
paths = [root] if os.path.isfile(root) else sorted(
    os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
unsafe = False
try:
    for path in paths:
        props = find_file_properties(path)
        if props["is_torch_zip"] or props["is_standard_zip"]:
            results = list(scan_zip_archive(path, graceful=True).values())
        elif props["is_valid_pickle"]:
            results = [scan_file(path, graceful=True)]
        else:
            continue  # what fickling's --huggingface mode skips
        for result in results:
            if not result.is_safe:
                unsafe = True
                print(f"{path}: {result!r}")
except Exception as exc:
    print(f"error: {exc!r}")
    sys.exit(2)
sys.exit(1 if unsafe else 0)
"""


@dataclass
class Run:
    verdict: str
    seconds: float
    returncode: int | None
    tail: str = ""


def _rc_verdict(rc: int, _out: str) -> str:
    return {0: CLEAN, 1: FLAGGED}.get(rc, ERROR)


def _picklescan_verdict(rc: int, out: str) -> str:
    match = re.search(r"Infected files: (\d+)", out)
    if match and int(match.group(1)) > 0:
        return FLAGGED
    return CLEAN if rc == 0 else ERROR


def _modelscan_verdict(rc: int, out: str) -> str:
    if rc == 3:
        return UNSUPPORTED
    issues = sum(int(n) for n in re.findall(r"- (?:LOW|MEDIUM|HIGH|CRITICAL): (\d+)", out))
    if rc == 1 or issues:
        return FLAGGED
    return CLEAN if rc == 0 else ERROR


def _modelaudit_verdict(rc: int, out: str) -> str:
    if rc == 1 or (rc == 2 and "SECURITY ISSUES FOUND" in out):
        return FLAGGED
    return CLEAN if rc == 0 else ERROR


@dataclass
class Tool:
    """One scanner: its command for a path, its verdict rule, where it lives."""

    name: str
    argv: Callable[[Path], list[str]]
    verdict: Callable[[int, str], str]
    executable: Path
    package: str | None = None  # distribution name in .venv-peers, for the version
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    #: A command that must exit 0 for the tool to count as installed.
    probe: list[str] = field(default_factory=list)

    def missing(self) -> str | None:
        """Why this tool cannot run, or None when it can."""
        if not self.executable.exists():
            return f"{self.executable} missing (run `make bench-venv`)"
        try:
            proc = subprocess.run(
                self.probe or [str(self.executable), "--help"],
                capture_output=True,
                text=True,
                timeout=120,
                env=self.environ(),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot start: {exc}"
        if proc.returncode != 0:
            return f"probe exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-200:]}"
        return None

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def version(self) -> str:
        if self.package is None:
            from trainguard import __version__

            return __version__
        proc = subprocess.run(
            [
                str(PEERS_BIN / "python"),
                "-c",
                f"import importlib.metadata as m; print(m.version({self.package!r}))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.stdout.strip() or "?"

    def run(self, path: Path, *, timeout: float, cwd: Path) -> Run:
        import time

        started = time.perf_counter()
        try:
            proc = subprocess.run(
                self.argv(path),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd,
                env=self.environ(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Run(TIMEOUT, time.perf_counter() - started, None)
        seconds = time.perf_counter() - started
        out = proc.stdout + proc.stderr
        return Run(self.verdict(proc.returncode, out), seconds, proc.returncode, out[-300:])


def _trainguard_cmd() -> list[str]:
    script = Path(sys.executable).with_name("trainguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainguard"]


def tools() -> list[Tool]:
    """Every tool, trainguard first; availability is checked by the caller."""
    quiet = {"PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
    cmd = _trainguard_cmd()
    return [
        Tool(
            "trainguard",
            lambda p: [*cmd, "scan", "-q", str(p)],
            _rc_verdict,
            Path(cmd[0]),
            note="trainguard scan -q (fail on medium)",
            probe=[*cmd, "--version"],
        ),
        Tool(
            "picklescan",
            lambda p: [str(PEERS_BIN / "picklescan"), "-p", str(p)],
            _picklescan_verdict,
            PEERS_BIN / "picklescan",
            "picklescan",
        ),
        Tool(
            "modelscan",
            lambda p: [str(PEERS_BIN / "modelscan"), "-p", str(p)],
            _modelscan_verdict,
            PEERS_BIN / "modelscan",
            "modelscan",
        ),
        Tool(
            "fickling",
            lambda p: [str(PEERS_BIN / "python"), "-c", FICKLING_DRIVER, str(p)],
            _rc_verdict,
            PEERS_BIN / "fickling",
            "fickling",
            note="API driver (scan_file / scan_zip_archive), as fickling --huggingface does",
        ),
        Tool(
            "modelaudit",
            lambda p: [str(PEERS_BIN / "modelaudit"), "scan", "--no-cache", str(p)],
            _modelaudit_verdict,
            PEERS_BIN / "modelaudit",
            "modelaudit",
            env=quiet,
        ),
    ]
