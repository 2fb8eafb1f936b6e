"""Drill results, their JSON, the summary table and the exit codes of ``trainguard drill``."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from trainguard.cli.drill import exit_code, summary_table
from trainguard.cli.main import _build
from trainguard.drill import DRILLS, DrillResult
from trainguard.errors import TrainguardError

CAUGHT = DrillResult(
    name="rng-reseed",
    title="RNG reseeded mid-run",
    detected=True,
    checks=("rng",),
    steps_to_detection=0,
    evidence={"message": "torch.manual_seed(1234,) called during training", "rank": 1},
    run_id="drill-rng-reseed-0",
    seconds=12.5,
    expected_checks=("rng",),
    bound=1,
)
MISSED = replace(
    CAUGHT, name="sleep-rank", detected=False, checks=(), steps_to_detection=None, evidence={}
)
CLEAN = DrillResult(
    name="control", title="clean", detected=False, checks=(), steps_to_detection=None,
    evidence={}, run_id="drill-control-0", seconds=10.0, control=True,
)  # fmt: skip


def test_ok_means_caught_within_the_bound_with_no_payload_run() -> None:
    assert CAUGHT.ok
    assert not MISSED.ok
    assert not replace(CAUGHT, steps_to_detection=2).ok  # outside its bound of 1
    assert not replace(CAUGHT, marker_fired=True).ok  # detected, but the payload ran
    assert replace(CAUGHT, marker_fired=False).ok
    assert not replace(CAUGHT, error="the job crashed").ok
    assert CLEAN.ok
    assert not replace(CLEAN, detected=True, checks=("census",)).ok  # a false alarm


def test_json_round_trip() -> None:
    for r in (CAUGHT, MISSED, CLEAN):
        data = json.loads(json.dumps(r.to_dict()))
        assert data["ok"] == r.ok
        assert DrillResult.from_dict(data) == r
    with pytest.raises(ValueError, match="malformed drill result"):
        DrillResult.from_dict({"name": "x"})


def test_exit_codes() -> None:
    assert exit_code([CLEAN, CAUGHT]) == 0
    assert exit_code([CLEAN, CAUGHT, MISSED]) == 1
    assert exit_code([replace(CLEAN, detected=True)]) == 1
    assert exit_code([CAUGHT, replace(MISSED, error="timed out")]) == 2


def test_summary_table_has_a_row_per_drill_with_its_verdict() -> None:
    lines = summary_table([CLEAN, CAUGHT, MISSED]).splitlines()
    assert lines[0].split() == ["drill", "detected", "check", "steps", "evidence"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert rows["control"].split()[1:3] == ["no", "alarm"]
    assert rows["rng-reseed"].split()[1:4] == ["yes", "rng", "0"]
    assert "torch.manual_seed(1234,)" in rows["rng-reseed"]
    assert rows["sleep-rank"].split()[1] == "NO"


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``trainguard drill ...`` through the real parser and the CLI's error handling."""
    parser, _ = _build(("drill",))
    try:
        args = parser.parse_args(["drill", *argv])
        code = int(args.func(args))
    except TrainguardError as exc:
        code = exc.exit_code
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(["--list"], capsys)
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert tuple(names) == DRILLS
    code, out, _ = _cli(["--list", "--json", "kill-rank", "rng-reseed"], capsys)
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["kill-rank", "rng-reseed"]
    assert rows[0]["expected_checks"] == ["kills"]


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = _cli(["no-such-drill"], capsys)
    assert code == 2
    code, _, err = _cli(["--bogus-flag"], capsys)
    assert code == 2 and "unrecognized arguments" in err


def test_cli_parser_surface() -> None:
    _, sub = _build(("drill",))
    drill = sub.choices["drill"]
    flags = {s for a in drill._actions for s in a.option_strings}
    assert {"--list", "--workdir", "--ledger", "--json", "--keep"} <= flags
    assert isinstance(drill, argparse.ArgumentParser)


@pytest.mark.slow
@pytest.mark.distributed
def test_cli_runs_a_drill_and_reports_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _cli(["rng-reseed", "--json", "--workdir", str(tmp_path)], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] is True
    (row,) = doc["results"]
    assert (row["name"], row["detected"], row["checks"]) == ("rng-reseed", True, ["rng"])
    assert DrillResult.from_dict(row).ok
    assert "[1/1] rng-reseed ..." in err and "caught by rng" in err
    lines = err.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["drill", "detected"])
    assert lines[header + 2].split()[:4] == ["rng-reseed", "yes", "rng", "0"]
    assert (tmp_path / "rng-reseed" / "job.log").is_file()  # --workdir keeps the files
