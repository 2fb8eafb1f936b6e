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
