"""The benchmark's synthetic cluster history: deterministic, realistic shape, incident planted."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO
from trainguard.ledger import Indicator, Ledger, blast_radius, verify_ledger

sys.path.insert(0, str(REPO / "benchmarks"))
from _ledger_history import History, generate


def test_generation_is_deterministic_and_plants_the_incident() -> None:
    h1, h2 = History(), History()
    a = [r.to_json() for r in generate(0.003, seed=7, history=h1)]
    b = [r.to_json() for r in generate(0.003, seed=7, history=h2)]
    assert a == b and h1.sabotaged_checkpoint == h2.sabotaged_checkpoint != ""
    kinds = Counter(r["kind"] for r in a)
    assert kinds["run"] == h1.runs >= 200 and kinds["preflight"] > 0
    produced = sum(1 for r in a if r["kind"] == "edge" and r["direction"] == "produced")
    assert produced == h1.artifacts and h1.artifacts > 5 * h1.runs  # checkpoints dominate
    assert any(r["kind"] == "run" and r["user"] == "mallory" for r in a)
    assert any(r["kind"] == "preflight" and r.get("files") for r in a)


@pytest.mark.slow
def test_the_planted_incident_is_found_on_a_small_history(sqlite_url: str) -> None:
    history = History()
    with Ledger.open(sqlite_url, create=True) as ledger:
        records = list(generate(0.003, seed=7, history=history))
        for i in range(0, len(records), 5000):
            ledger.append(records[i : i + 5000])
        verify_ledger(ledger, jobs=1)
        sabotaged = blast_radius(ledger, Indicator(artifacts=(history.sabotaged_checkpoint,)))
        insider = blast_radius(ledger, Indicator(users=("mallory",)))
        affected = {a.facts.run_id for a in sabotaged.affected_runs}
        # Everything downstream of the sabotaged checkpoint is downstream of the insider.
        assert affected <= {a.facts.run_id for a in insider.affected_runs}
        assert {s["produced_by"] for s in sabotaged.sources if "produced_by" in s} <= {
            a.facts.run_id for a in insider.affected_runs
        }
        tampered = blast_radius(ledger, Indicator(files=(history.tampered_file,)))
        assert all(
            history.busy_host in a.facts.hosts or a.depth > 0 for a in tampered.affected_runs
        )


def test_history_module_is_importable_from_the_benchmark_dir() -> None:
    assert (Path(REPO) / "benchmarks" / "ledger.py").is_file()


def test_the_ledger_benchmark_runs_end_to_end_and_reports_against_its_targets(
    tmp_path: Path,
) -> None:
    # A tiny scale, SQLite only: the script's every stage runs and its JSON holds
    # each figure, its ratio to the target, and both machine yardsticks (twice each).
    import json
    import subprocess

    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "ledger.py"), "--scale", "0.002"]
    cmd += ["--backends", "sqlite", "--hash-mb", "0", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = json.loads(out.read_text(encoding="utf-8"))
    blast = got["sqlite"]["blast"]
    assert set(blast) == {
        "sabotaged checkpoint",
        "insider user",
        "tampered torch file",
        "environment baseline",
        "popular base checkpoint",
    }
    assert all(b["affected_runs"] > 0 and b["cited_entries"] > 0 for b in blast.values())
    ratios = got["against_targets"]["sqlite"]
    assert {"append", "verify_1m"} <= set(ratios) and len(ratios) == 7
    for name in ("python_reference_ms", "sha256_reference_ms"):
        yardstick = got["machine"][name]
        assert len(yardstick) == 2 and all(ms > 0 for ms in yardstick), name
    assert "machine yardsticks" in run.stdout
