"""Many writers at once, and writers killed mid-append: nothing acknowledged is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trainguard.ledger import Ledger
from trainguard.ledger.verify import verify_ledger

WRITER = Path(__file__).with_name("_writer.py")


def _acks(output: str) -> dict[str, int]:
    """Run name -> the leaf index its acknowledged append gave it."""
    out = {}
    # Only newline-terminated lines: a writer killed mid-print leaves a partial last line,
    # which acknowledged nothing (the ACK is complete only once its newline is out).
    for line in output.split("\n")[:-1]:
        if line.startswith("ACK "):
            _, first, size, *names = line.split()
            assert int(size) - int(first) == len(names)
            out.update({n: int(first) + k for k, n in enumerate(names)})
    return out


def _index(ledger: Ledger) -> dict[str, int]:
    found: dict[str, int] = {}
    for entry in ledger.entries(0, ledger.size()):
        run_id = entry.record.run_id  # type: ignore[attr-defined]
        assert run_id not in found, f"{run_id} appended twice"
        found[run_id] = entry.index
    return found


@pytest.mark.slow
def test_concurrent_appenders_keep_one_consistent_tree(ledger_url: str) -> None:
    Ledger.open(ledger_url, create=True).close()
    writers, count = 6, 40
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), ledger_url, f"w{p}", str(count), str(1 + p % 4)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(writers)
    ]
    acks: dict[str, int] = {}
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        acks.update(_acks(out))
    with Ledger.open(ledger_url) as ledger:
        assert ledger.size() == writers * count
        stored = _index(ledger)
        assert stored == acks  # every entry exactly once, at the index its writer was told
        verify_ledger(ledger, jobs=1)


@pytest.mark.slow
def test_writers_killed_mid_append_lose_nothing_acknowledged(ledger_url: str) -> None:
    Ledger.open(ledger_url, create=True).close()
    rng = random.Random(1234)
    acks: dict[str, int] = {}
    for round_ in range(8):
        procs = [
            subprocess.Popen(
                [sys.executable, str(WRITER), ledger_url, f"k{round_}.{p}", str(10**6), str(1 + p)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for p in range(3)
        ]
        outputs: list[list[str]] = [[] for _ in procs]
        readers = [
            threading.Thread(target=lambda p=p, o=o: o.extend(p.stdout), daemon=True)
            for p, o in zip(procs, outputs, strict=True)
        ]
        for t in readers:
            t.start()
        time.sleep(
            0.8 + rng.random() * 1.5
        )  # includes interpreter start-up; then appends are in flight
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
        for proc, t in zip(procs, readers, strict=True):
            proc.wait(timeout=60)
            t.join(timeout=60)
        for out in outputs:
            acks.update(_acks("".join(out)))
    assert len(acks) > 20, (
        "writers were killed before acknowledging anything; the test proved nothing"
    )
    with Ledger.open(ledger_url) as ledger:
        stored = _index(ledger)
        for name, index in acks.items():
            assert stored.get(name) == index, f"acknowledged {name} at {index} is lost"
        verify_ledger(ledger, jobs=1)
