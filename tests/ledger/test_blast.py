"""Blast radius on a hand-built scenario: exactly the expected runs, artifacts and GPU-hours."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.ledger import _factory as f
from tests.ledger.test_verify_tamper import raw
from trainguard.errors import LedgerIntegrityError, StorageError, UsageError
from trainguard.ledger import Ledger, PreflightResult, SigningKey
from trainguard.ledger._evidence import verify_evidence
from trainguard.ledger.blast import BlastRadius, Indicator, PriceTable, blast_radius
from trainguard.ledger.records import Artifact
from trainguard.ledger.verify import verify_ledger

H = 3600
T = f.T0
P1, P1X, A1, B1, C1, D0 = (f.digest(n) for n in ("P1", "P1x", "A1", "B1", "C1", "D0"))
E_OK, E_BAD = f.digest("env-ok"), f.digest("env-bad")
TAMPERED = f.digest("torch/__init__.py (edited)")
PRICES = PriceTable({"H100": 3.0, "A100": 2.0}, "USD", "test")


def scenario() -> list[Any]:
    """The incident in miniature (see the module docstring of each assertion)."""
    return [
        Artifact(D0, "dataset_manifest", T, 10, "d0.json"),
        f.run("pretrain", gpus=16, hosts=("gpu-001", "gpu-002"), start=T, hours=10, env=E_OK),
        f.used("pretrain", "D0", kind="dataset_manifest"),
        f.produced("pretrain", "P1"),
        # The insider's run turns P1 into a sabotaged P1x.
        f.run(
            "evil", user="mallory", gpus=1, hosts=("gpu-009",), start=T + 11 * H, hours=1, env=E_OK
        ),
        f.used("evil", "P1"),
        f.produced("evil", "P1x"),
        f.run("ft-a", gpus=8, hosts=("gpu-003",), start=T + 13 * H, hours=2, env=E_OK),
        f.used("ft-a", "P1x"),
        f.produced("ft-a", "A1"),
        f.run(
            "ft-b",
            user="bob",
            gpus=8,
            accel="A100",
            hosts=("gpu-004",),
            start=T + 13 * H,
            hours=3,
            env=E_BAD,
        ),
        f.used("ft-b", "P1"),
        f.produced("ft-b", "B1"),
        f.run(
            "eval-a", user="bob", gpus=1, hosts=("gpu-005",), start=T + 16 * H, hours=0.5, env=E_OK
        ),
        f.used("eval-a", "A1"),
        # Preflight on gpu-007 finds an edited torch install; later it is clean again.
        PreflightResult("gpu-007", T + 15 * H, False, 1, files=(("torch/__init__.py", TAMPERED),)),
        f.run(
            "eval-b", user="bob", gpus=1, hosts=("gpu-007",), start=T + 17 * H, hours=0.5, env=E_OK
        ),
        f.used("eval-b", "B1"),
        f.run("ft-c", gpus=4, hosts=("gpu-006",), start=T + 17 * H, hours=1, env=E_OK),
        f.used("ft-c", "P1x"),
        f.used("ft-c", "B1"),
        f.produced("ft-c", "C1"),
        PreflightResult("gpu-007", T + 20 * H, True, 0),
        f.run("late-on-007", gpus=1, hosts=("gpu-007",), start=T + 21 * H, hours=1, env=E_OK),
        f.run("ongoing", gpus=2, hosts=("gpu-008",), start=T + 18 * H, hours=None, env=E_OK),
        f.used("ongoing", "A1"),
        f.run("idle", gpus=1, hosts=("gpu-010",), start=T + 14 * H, hours=1, env=E_OK),
    ]


AS_OF = T + 20 * H  # "now": the ongoing run has run 2 hours


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def ledger(ledger_url: str, key: SigningKey) -> Ledger:
    ledger = Ledger.open(ledger_url, create=True)
    ledger.append(scenario())
    ledger.sign(key)
    return ledger


def radius(ledger: Ledger, **kwargs: Any) -> BlastRadius:
    from_log = kwargs.pop("from_log", False)
    return blast_radius(
        ledger, Indicator(**kwargs), prices=PRICES, as_of=AS_OF, max_clean=20, from_log=from_log
    )


def affected(result: BlastRadius) -> dict[str, float]:
    return {a.facts.run_id: round(a.facts.gpu_hours, 3) for a in result.affected_runs}


def test_poisoned_checkpoint(ledger: Ledger, key: SigningKey) -> None:
    result = radius(ledger, artifacts=(P1X,))
    # ft-a and ft-c loaded P1x; eval-a and ongoing loaded A1, which ft-a derived from it.
    assert affected(result) == {"ft-a": 16.0, "ft-c": 4.0, "eval-a": 0.5, "ongoing": 4.0}
    depth = {a.facts.run_id: a.depth for a in result.affected_runs}
    assert depth == {"ft-a": 0, "ft-c": 0, "eval-a": 1, "ongoing": 1}
    assert {a.digest: a.depth for a in result.affected_artifacts} == {P1X: 0, A1: 1, C1: 1}
    assert [s["produced_by"] for s in result.sources if "produced_by" in s] == ["evil"]
    t = result.totals
    assert t["affected_runs"] == 4 and t["affected_gpu_hours"] == 24.5
    assert t["affected_cost"] == 24.5 * 3.0
    assert t["runs"] == 10 and t["clean_runs"] == 6
    total_hours = 160 + 1 + 16 + 24 + 0.5 + 0.5 + 4 + 1 + 4 + 1
    assert t["gpu_hours"] == total_hours and t["clean_gpu_hours"] == total_hours - 24.5
    assert next(a for a in result.affected_runs if a.facts.run_id == "ongoing").facts.ongoing
    clean = {c.facts.run_id: c.reason for c in result.clean_runs}
    assert set(clean) == {"ft-b", "idle", "eval-b"}  # clean runs during the affected span
    assert "none the indicator" in clean["ft-b"] and "no recorded inputs" in clean["idle"]
    assert result.answered_from.startswith("derived tables")
    assert verify_evidence(json.loads(json.dumps(result.to_json())), [key.public_key]) > 10


def test_artifacts_are_listed_by_depth_then_in_the_order_they_were_produced(
    ledger_url: str,
) -> None:
    # ck-3 was saved before ck-1, and its digest sorts after ck-1's: the listing
    # follows the log (a run's checkpoints in the order it saved them).
    ledger = Ledger.open(ledger_url, create=True)
    ledger.append(
        [
            f.run("train", gpus=8, hosts=("gpu-001",), start=T, hours=2, env=E_OK),
            f.used("train", "D0", kind="dataset_manifest"),
            f.produced("train", "ck-3"),
            f.produced("train", "ck-1"),
            f.run("eval", gpus=1, hosts=("gpu-002",), start=T + 3 * H, hours=1, env=E_OK),
            f.used("eval", "ck-1"),
            f.produced("eval", "ck-4"),
        ]
    )
    assert f.digest("ck-1") < f.digest("ck-3")
    for from_log in (False, True):
        result = blast_radius(ledger, Indicator(artifacts=(D0,)), as_of=AS_OF, from_log=from_log)
        listed = [(a.depth, a.digest) for a in result.affected_artifacts]
        assert listed == [
            (0, D0),
            (1, f.digest("ck-3")),
            (1, f.digest("ck-1")),
            (2, f.digest("ck-4")),
        ]


def test_every_claim_carries_entries_that_prove_it(ledger: Ledger) -> None:
    result = radius(ledger, artifacts=(P1X,))
    eval_a = next(a for a in result.affected_runs if a.facts.run_id == "eval-a")
    (reason,) = eval_a.reasons
    assert reason.via == A1 and reason.parent == "ft-a"
    produced, used = (json.loads(result.evidence.entries[i]) for i in reason.entries)
    assert (produced["run_id"], produced["direction"], produced["digest"]) == (
        "ft-a",
        "produced",
        A1,
    )
    assert (used["run_id"], used["direction"], used["digest"]) == ("eval-a", "used", A1)
    assert set(reason.entries) <= set(result.evidence.entries)
    result.evidence.verify()  # the batch proof covers every cited entry


def test_insider_user_as_indicator(ledger: Ledger) -> None:
    result = radius(ledger, users=("mallory",))
    assert affected(result) == {
        "evil": 1.0,
        "ft-a": 16.0,
        "ft-c": 4.0,
        "eval-a": 0.5,
        "ongoing": 4.0,
    }


def test_environment_baseline_as_indicator(ledger: Ledger) -> None:
    result = radius(ledger, env_baselines=(E_BAD,))
    assert affected(result) == {"ft-b": 24.0, "eval-b": 0.5, "ft-c": 4.0}
    assert result.totals["affected_cost"] == 24.0 * 2.0 + 0.5 * 3.0 + 4.0 * 3.0


def test_tampered_file_from_a_host_preflight(ledger: Ledger) -> None:
    # eval-b ran on gpu-007 after the tampered torch was seen and before the clean preflight;
    # late-on-007 started after the host was clean again.
    result = radius(ledger, files=(TAMPERED,))
    assert affected(result) == {"eval-b": 0.5}


def test_host_and_window_indicators(ledger: Ledger) -> None:
    assert set(affected(radius(ledger, hosts=("gpu-003",)))) == {"ft-a", "eval-a", "ongoing"}
    window = radius(ledger, since=T + 16 * H, until=T + 16 * H + 60)
    # ft-b (ends as the window opens) and eval-a ran in it; ft-b's B1 reached eval-b and ft-c.
    assert set(affected(window)) == {"ft-b", "eval-a", "eval-b", "ft-c"}
    narrowed = radius(ledger, hosts=("gpu-005", "gpu-003"), since=T + 16 * H, until=T + 16 * H + 60)
    assert set(affected(narrowed)) == {"eval-a"}


def test_answer_from_the_log_equals_answer_from_the_index(ledger: Ledger) -> None:
    a = radius(ledger, artifacts=(P1X,))
    b = radius(ledger, artifacts=(P1X,), from_log=True)
    assert affected(a) == affected(b) and b.answered_from == "the log"
    assert a.totals == b.totals
    # Artifacts (and the file names their producers recorded) from either source.
    assert a.affected_artifacts == b.affected_artifacts
    assert {x.name for x in a.affected_artifacts} >= {"A1", "C1"}


def test_deleted_index_row_does_not_hide_a_run(ledger: Ledger, ledger_url: str) -> None:
    leaf = raw(ledger_url, "SELECT leaf FROM edges WHERE run_id = 'ft-a' AND direction = 'used'")[
        0
    ][0]
    raw(ledger_url, "DELETE FROM edges WHERE leaf = ?", (leaf,))
    result = radius(ledger, artifacts=(P1X,))
    assert affected(result) == {"ft-a": 16.0, "ft-c": 4.0, "eval-a": 0.5, "ongoing": 4.0}
    assert "disagreed" in result.answered_from and result.index_problems
    assert any("derived tables disagree" in c for c in result.caveats)


def test_whole_table_checks_fall_back_to_the_ledgers_own_connection(
    ledger: Ledger, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Row counts and run totals are read on a second connection while the answer is
    # computed; where that connection fails, the ledger's own one answers, and a
    # deleted index row is still found.
    from trainguard.ledger import blast

    def refuse(url: object, as_of: int, serial: bool) -> None:
        raise StorageError("no second connection here")

    monkeypatch.setattr(blast, "_read_whole_tables", refuse)
    clean = radius(ledger, artifacts=(P1X,))
    assert clean.totals == radius(ledger, artifacts=(P1X,), from_log=True).totals
    assert clean.answered_from.startswith("derived tables")
    leaf = raw(ledger_url, "SELECT leaf FROM edges WHERE run_id = 'ft-a' AND direction = 'used'")[
        0
    ][0]
    raw(ledger_url, "DELETE FROM edges WHERE leaf = ?", (leaf,))
    result = radius(ledger, artifacts=(P1X,))
    assert "disagreed" in result.answered_from and result.index_problems
    assert affected(result) == affected(clean)


def test_without_a_second_connection_the_ledgers_own_one_answers(
    ledger: Ledger, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The closure reads the next step's rows on a second connection; where it cannot
    # be opened, every read goes to the ledger's own connection, with the same answer.
    from trainguard.ledger import _query

    want = radius(ledger, users=("mallory",))

    def refuse(url: object) -> None:
        raise StorageError("no second connection here")

    monkeypatch.setattr(_query, "open_storage", refuse)
    got = radius(ledger, users=("mallory",))
    assert got.answered_from.startswith("derived tables")
    assert got.to_json()["affected_runs"] == want.to_json()["affected_runs"]
    assert got.affected_artifacts == want.affected_artifacts and got.totals == want.totals


@pytest.mark.parametrize("direction", ["produced", "xused"])
def test_a_readers_row_with_its_direction_altered_is_still_found(
    ledger: Ledger, ledger_url: str, direction: str
) -> None:
    # ft-c read P1x, which the insider's run produced: its row, no longer saying
    # "used", is still among the rows naming P1x; it fails the cross-check and the
    # log answers (ft-c is not hidden). (No clean runs listed: their rows, read for
    # the listing, would catch it too.)
    want = radius(ledger, users=("mallory",), from_log=True)
    assert "ft-c" in affected(want)
    raw(
        ledger_url,
        "UPDATE edges SET direction = ? WHERE run_id = 'ft-c' AND digest = ?",
        (direction, P1X),
    )
    result = blast_radius(
        ledger, Indicator(users=("mallory",)), prices=PRICES, as_of=AS_OF, max_clean=0
    )
    assert "disagreed" in result.answered_from and result.index_problems
    assert affected(result) == affected(want)


def test_altered_index_row_is_caught_by_the_row_cross_check(
    ledger: Ledger, ledger_url: str
) -> None:
    raw(
        ledger_url,
        "UPDATE edges SET digest = ? WHERE run_id = 'ft-c' AND digest = ?",
        (f.digest("harmless"), P1X),
    )
    result = radius(ledger, artifacts=(P1X,))
    assert "ft-c" in affected(result) and result.index_problems


def test_an_edge_row_of_an_affected_run_pointing_at_another_entry_is_caught(
    ledger: Ledger, ledger_url: str
) -> None:
    # An affected run's edges are located by the run_id index and read from their
    # entries: a row naming an entry that is not this run's edge is reported, and
    # the log answers.
    want = radius(ledger, artifacts=(P1X,), from_log=True)
    raw(
        ledger_url,
        "UPDATE edges SET leaf = (SELECT MIN(leaf) FROM runs)"
        " WHERE run_id = 'ft-a' AND direction = 'produced'",
    )
    result = radius(ledger, artifacts=(P1X,))
    assert "disagreed" in result.answered_from and result.index_problems
    assert affected(result) == affected(want)
    assert result.affected_artifacts == want.affected_artifacts


@pytest.mark.parametrize("speculate", [False, True])
@pytest.mark.parametrize(
    "update",
    [
        # An affected run's edge, its direction flipped in the index only.
        "UPDATE edges SET direction = 'used' WHERE run_id = 'ft-a' AND direction = 'produced'",
        # Its digest changed in the index only: its readers are still found.
        "UPDATE edges SET digest = 'sha256:00' WHERE run_id = 'ft-a' AND direction = 'produced'",
    ],
)
def test_what_an_affected_runs_edges_say_comes_from_their_entries(
    ledger: Ledger, ledger_url: str, update: str, speculate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The answer takes an affected run's edges from their entries and looks for
    # the readers of what those say it produced: the table's other columns cannot
    # hide a reader (verify reports the altered row). Where the readers of what the
    # table says were read ahead (a server, large steps), they are not used then.
    from trainguard.ledger import _query

    want = radius(ledger, artifacts=(P1X,), from_log=True)
    raw(ledger_url, update)
    if speculate:
        monkeypatch.setattr(_query, "_SPECULATE_FROM", 1)
        monkeypatch.setattr(type(ledger.storage), "separate_process", True)
    result = radius(ledger, artifacts=(P1X,))
    assert {"eval-a", "ongoing"} <= set(affected(result))  # ft-a's checkpoint's readers
    assert affected(result) == affected(want)
    assert result.affected_artifacts == want.affected_artifacts
    with pytest.raises(LedgerIntegrityError, match="derived table edges disagrees"):
        verify_ledger(ledger)


def test_readers_read_ahead_are_used_only_where_the_entries_say_the_same(
    ledger: Ledger, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a server behind it, a large closure step reads the readers of what the
    # table says its runs produced beside the edges; they stand in for the readers
    # of what the entries say only when both say the same digests.
    from trainguard.ledger import _query

    monkeypatch.setattr(_query, "_SPECULATE_FROM", 1)
    monkeypatch.setattr(type(ledger.storage), "separate_process", True)
    asked: list[list[str]] = []
    read = ledger.storage.readers

    def here(digests: Any, run_ids: Any) -> Any:
        asked.append(sorted(digests))
        return read(digests, run_ids)

    monkeypatch.setattr(ledger.storage, "readers", here)
    want = radius(ledger, artifacts=(P1X,), from_log=True)
    assert affected(radius(ledger, artifacts=(P1X,))) == affected(want)
    assert asked == []  # every step's readers were read ahead, and used
    raw(
        ledger_url,
        "UPDATE edges SET digest = 'sha256:00' WHERE run_id = 'ft-a' AND direction = 'produced'",
    )
    result = radius(ledger, artifacts=(P1X,))
    assert affected(result) == affected(want)
    # The first step (ft-a, ft-c): the table disagreed, the readers were read here.
    assert asked == [sorted([A1, C1])]


@pytest.mark.parametrize(
    "update",
    [
        "UPDATE runs SET accelerator_count = 800 WHERE run_id = 'ft-a'",
        "UPDATE runs SET ended_at = ended_at + 360000 WHERE run_id = 'eval-a'",
        "UPDATE runs SET user_name = 'nobody' WHERE run_id = 'ft-c'",
    ],
)
def test_altered_run_rows_of_affected_runs_are_caught(
    ledger: Ledger, ledger_url: str, update: str
) -> None:
    # An affected run's record is read with its entry and checked as read: GPU-hours
    # and users come from what the log says, and the index is reported.
    want = radius(ledger, artifacts=(P1X,), from_log=True)
    raw(ledger_url, update)
    result = radius(ledger, artifacts=(P1X,))
    assert "disagreed" in result.answered_from and result.index_problems
    assert result.to_json()["affected_runs"] == want.to_json()["affected_runs"]
    assert result.totals == want.totals


def test_a_seed_row_altered_to_match_the_indicator_is_caught(
    ledger: Ledger, ledger_url: str
) -> None:
    # The index says 'idle' ran on the bad environment; its entry says otherwise. The
    # row is a seed and the run's own record: both reads see the altered row, which
    # its entry does not vouch for; the log answers, without 'idle'.
    want = radius(ledger, env_baselines=(E_BAD,), from_log=True)
    raw(ledger_url, "UPDATE runs SET env_baseline = ? WHERE run_id = 'idle'", (E_BAD,))
    result = radius(ledger, env_baselines=(E_BAD,))
    assert "disagreed" in result.answered_from and result.index_problems
    assert "idle" not in affected(result) and affected(result) == affected(want)


def test_hosts_of_affected_runs_come_from_their_entries(ledger: Ledger, ledger_url: str) -> None:
    # A run_hosts row altered: the answer names the hosts the run's entry records
    # (the count check still sees the table as whole; verify reports the row).
    want = radius(ledger, artifacts=(P1X,))
    raw(ledger_url, "UPDATE run_hosts SET host = 'gpu-666' WHERE host = 'gpu-003'")
    result = radius(ledger, artifacts=(P1X,))
    hosts = {a.facts.run_id: a.facts.hosts for a in result.affected_runs}
    assert hosts["ft-a"] == ("gpu-003",)
    assert result.to_json()["affected_runs"] == want.to_json()["affected_runs"]


def test_a_run_hosts_row_naming_a_host_its_run_did_not_use_is_caught(
    ledger: Ledger, ledger_url: str
) -> None:
    # The runs found by host are read with their entries, which vouch for the
    # run_hosts rows they name; a row naming another host is still cross-checked.
    want = radius(ledger, hosts=("gpu-003",), from_log=True)
    raw(ledger_url, "UPDATE run_hosts SET host = 'gpu-003' WHERE host = 'gpu-010'")
    result = radius(ledger, hosts=("gpu-003",))
    assert "disagreed" in result.answered_from and result.index_problems
    assert "idle" not in affected(result) and affected(result) == affected(want)


def test_clean_runs_listed_are_the_first_unaffected_ones_of_the_period(ledger: Ledger) -> None:
    # eval-a and eval-b start the period: a first page of twice the limit holds no
    # clean run, and the next page finds ft-c.
    for limit in (1, 20):
        result = blast_radius(
            ledger, Indicator(runs=("eval-a", "eval-b")), as_of=AS_OF, max_clean=limit
        )
        assert [c.facts.run_id for c in result.clean_runs] == ["ft-c"]
    result = blast_radius(ledger, Indicator(artifacts=(P1X,)), as_of=AS_OF, max_clean=2)
    assert [c.facts.run_id for c in result.clean_runs] == ["ft-b", "idle"]


def test_an_altered_entry_of_an_affected_run_fails_closed(ledger: Ledger, ledger_url: str) -> None:
    leaf = raw(
        ledger_url, "SELECT leaf FROM edges WHERE run_id = 'ft-a' AND direction = 'produced'"
    )
    raw(ledger_url, "UPDATE entries SET data = ? WHERE leaf = ?", (b'{"kind":"edge"}', leaf[0][0]))
    with pytest.raises(LedgerIntegrityError, match="damaged"):
        radius(ledger, artifacts=(P1X,))


def test_index_row_with_a_leaf_of_another_type_is_caught(ledger: Ledger, ledger_url: str) -> None:
    # SQLite keeps any type in a column that is not the rowid: a fractional leaf stays
    # in range for the row-count check and must still fail the cross-check, not crash it.
    if not ledger_url.startswith("sqlite"):
        pytest.skip("PostgreSQL columns are typed")
    raw(ledger_url, "UPDATE run_hosts SET leaf = leaf + 0.5 WHERE host = 'gpu-003'")
    result = radius(ledger, hosts=("gpu-003",))
    assert set(affected(result)) == {"ft-a", "eval-a", "ongoing"}
    assert "disagreed" in result.answered_from
    assert any("not an entry index" in p for p in result.index_problems)


@pytest.mark.parametrize(
    ("update", "indicator"),
    [
        # A blob leaf: out of range for the counts, and not JSON for the probes.
        ("UPDATE run_hosts SET leaf = x'00' WHERE host = 'gpu-003'", {"hosts": ("gpu-003",)}),
        # A blob digest (of a row the cross-check rejects): sorting the artifacts would
        # compare bytes with text.
        (
            "UPDATE edges SET digest = x'00', leaf = (SELECT MIN(leaf) FROM runs)"
            " WHERE run_id = 'ft-a' AND direction = 'produced'",
            {"artifacts": (P1X,)},
        ),
        # An infinite leaf: JSON has no infinity.
        ("UPDATE run_hosts SET leaf = 9e999 WHERE host = 'gpu-003'", {"hosts": ("gpu-003",)}),
    ],
)
def test_index_values_of_any_type_fall_back_to_the_log(
    ledger: Ledger, ledger_url: str, update: str, indicator: dict[str, Any]
) -> None:
    if not ledger_url.startswith("sqlite"):
        pytest.skip("PostgreSQL columns are typed")
    want = affected(radius(ledger, from_log=True, **indicator))
    raw(ledger_url, update)
    result = radius(ledger, **indicator)
    assert affected(result) == want
    assert "disagreed" in result.answered_from and result.index_problems


def test_report_tampering_is_caught_by_the_auditor(ledger: Ledger, key: SigningKey) -> None:
    report = json.loads(json.dumps(radius(ledger, artifacts=(P1X,)).to_json()))
    verify_evidence(report, [key.public_key], require_signed=True)

    edited = copy.deepcopy(report)
    run_entry = next(e for e in edited["evidence"]["entries"].values() if '"ana"' in e["data"])
    run_entry["data"] = run_entry["data"].replace('"ana"', '"eve"')
    with pytest.raises(LedgerIntegrityError):
        verify_evidence(edited, [key.public_key])

    dropped = copy.deepcopy(report)
    cited = dropped["affected_runs"][0]["because"][0]["entries"][0]
    del dropped["evidence"]["entries"][str(cited)]
    with pytest.raises(LedgerIntegrityError, match="claims cite"):
        verify_evidence(dropped, [key.public_key])

    with pytest.raises(LedgerIntegrityError, match="not trusted"):
        verify_evidence(report, [SigningKey.generate().public_key])

    for k in range(len(report["evidence"]["batch_proof"])):
        flipped = copy.deepcopy(report)
        h = flipped["evidence"]["batch_proof"][k]
        flipped["evidence"]["batch_proof"][k] = f"{int(h[0], 16) ^ 1:x}" + h[1:]
        with pytest.raises(LedgerIntegrityError, match="batch inclusion proof"):
            verify_evidence(flipped, [key.public_key])


def test_unsigned_entries_are_called_out(ledger: Ledger, key: SigningKey) -> None:
    ledger.append([f.run("later", start=T + 30 * H), f.used("later", "P1x", at=T + 30 * H)])
    result = radius(ledger, artifacts=(P1X,))
    assert "later" in affected(result)
    assert any("after the last signed tree head" in c for c in result.caveats)
    report = json.loads(json.dumps(result.to_json()))
    verify_evidence(report, [key.public_key])
    with pytest.raises(LedgerIntegrityError, match="not covered"):
        verify_evidence(report, [key.public_key], require_signed=True)


def test_prices_and_indicator_validation(tmp_path: Path) -> None:
    p = tmp_path / "prices.json"
    p.write_text(json.dumps({"currency": "EUR", "prices": {"H100": 2.5}}))
    table = PriceTable.load(p)
    assert table.price("H100-SXM5-80GB") == 2.5 and table.price("MI300X") is None
    toml = tmp_path / "prices.toml"
    toml.write_text('currency = "USD"\n[prices]\nA100 = 1.5\n')
    assert PriceTable.load(toml).price("A100") == 1.5
    with pytest.raises(UsageError):
        Indicator()
    with pytest.raises(UsageError):
        Indicator(artifacts=("not-a-digest",))
    assert Indicator(artifacts=("AB" * 32,)).artifacts == ("sha256:" + "ab" * 32,)


def test_lineage_of_the_poisoned_checkpoint(ledger: Ledger) -> None:
    from trainguard.ledger.lineage import lineage

    graph = lineage(ledger, P1X)
    rels = {(s, t, r) for s, t, r, _ in graph.edges}
    assert ("evil", P1X, "produced") in rels and (P1, "evil", "used") in rels  # upstream
    assert ("pretrain", P1, "produced") in rels and (D0, "pretrain", "used") in rels
    assert (P1X, "ft-a", "used") in rels and ("ft-a", A1, "produced") in rels  # downstream
    assert (A1, "eval-a", "used") in rels and (A1, "ongoing", "used") in rels
    assert (P1X, "ft-c", "used") in rels and ("ft-c", C1, "produced") in rels
    assert "ft-b" not in graph.nodes  # a sibling branch, neither upstream nor downstream
    text = graph.to_text()
    assert "upstream:" in text and "<- produced" in text and "-> used" in text and "P1x [" in text
    assert graph.to_dot().startswith("digraph lineage {") and "->" in graph.to_dot()
    assert graph.to_mermaid().startswith("flowchart LR")
    down_only = lineage(ledger, P1X, up=False, max_depth=1)
    assert {t for s, t, r, _ in down_only.edges} == {"ft-a", "ft-c"}
    assert lineage(ledger, "eval-a", down=False).nodes.keys() >= {A1, "ft-a", P1X, "evil", P1}
    with pytest.raises(UsageError):
        lineage(ledger, "no-such-run")


def test_lineage_falls_back_to_the_log_over_a_value_of_another_type(
    ledger: Ledger, ledger_url: str
) -> None:
    from trainguard.ledger.lineage import lineage

    if not ledger_url.startswith("sqlite"):
        pytest.skip("PostgreSQL columns are typed")
    want = lineage(ledger, P1X)
    raw(
        ledger_url,
        "UPDATE edges SET digest = x'00' WHERE run_id = 'ft-a' AND direction = 'produced'",
    )
    graph = lineage(ledger, P1X)
    assert sorted(graph.edges) == sorted(want.edges) and graph.nodes.keys() == want.nodes.keys()
    assert "disagreed" in graph.answered_from


def test_affected_artifacts_carry_the_file_name_their_producer_recorded(ledger: Ledger) -> None:
    # A reader of the report sees which file, not only which digest.
    result = blast_radius(ledger, Indicator(artifacts=(P1X,)), prices=PRICES)
    names = {a.digest: a.name for a in result.affected_artifacts}
    assert names[A1] == "A1"  # produced by ft-a from the sabotaged P1x
    assert result.to_json()["affected_artifacts"][-1]["name"] is not None


def test_a_side_connection_that_cannot_open_is_tried_once(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each closure step submits work to the side connection: where it cannot be
    # opened, every future fails at once (the ledger's own connection answers),
    # instead of a new attempt, and its wait, per step.
    from trainguard.ledger import _query

    tries: list[object] = []

    def refuse(url: object) -> None:
        tries.append(url)
        raise StorageError("no second connection here")

    monkeypatch.setattr(_query, "open_storage", refuse)
    with _query.SideConnection(ledger_url) as side:  # type: ignore[arg-type]
        futures = [side.submit(lambda storage: storage.size()) for _ in range(3)]
        assert all(isinstance(f.exception(), StorageError) for f in futures)
    assert len(tries) == 1


def test_run_records_read_ahead_serve_the_ids_asked_for_and_the_rest_is_read_here(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The closure reads each step's runs' records on the side; run_records then uses
    # every batch read ahead for ids it asks for and reads only the rest itself.
    from trainguard.ledger import _query

    plain = _query.StorageIndex(ledger.storage)
    wanted = ["evil", "ft-a", "ft-b", "ft-c", "idle"]
    want, ongoing = plain.run_records(wanted), plain.run_records(["ongoing"])
    assert [row[1] for row, _ in want] == wanted  # by leaf
    asked_here: list[set[str]] = []
    read = ledger.storage.rows_with_entries

    def here(table: str, column: str, values: Any) -> Any:
        asked_here.append(set(values))
        return read(table, column, values)

    with _query.SideConnection(ledger.url) as side:
        index = _query.StorageIndex(ledger.storage, side)
        monkeypatch.setattr(ledger.storage, "rows_with_entries", here)
        index.prefetch_run_records(["ft-b", "evil"])
        index.prefetch_run_records(["evil", "ft-a"])  # evil is read ahead once
        index.prefetch_run_records(["idle", "ongoing"])  # ongoing is not asked for: unused
        assert index.run_records(wanted) == want
        assert asked_here == [{"ft-c", "idle"}]
        # Nothing read ahead is left for a later call.
        assert index.run_records(["ongoing"]) == ongoing
        assert asked_here[1:] == [{"ongoing"}]


@pytest.mark.parametrize("threshold, serial", [(1, True), (10_000, False)])
def test_whole_table_reads_run_in_one_server_process_beside_a_large_answer(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, threshold: int, serial: bool
) -> None:
    # Beside a large answer (this thread busy long after the closure) the counts
    # must not take its cores with parallel workers; a small answer waits for them.
    from trainguard.ledger import blast

    asked: list[bool] = []
    read = blast._read_whole_tables

    def spy(storage: Any, as_of: int, serial: bool) -> Any:
        asked.append(serial)
        return read(storage, as_of, serial)

    monkeypatch.setattr(blast, "_read_whole_tables", spy)
    monkeypatch.setattr(blast, "_SERIAL_FROM", threshold)
    result = radius(ledger, users=("mallory",))
    assert asked == [serial]
    assert result.answered_from.startswith("derived tables")
    assert result.totals == radius(ledger, users=("mallory",), from_log=True).totals


def test_a_closure_cut_by_max_depth_still_has_every_affected_runs_facts(ledger: Ledger) -> None:
    # Records are read ahead a closure step at a time; where max_depth stops the
    # closure, its last runs (found, not followed) are read after it: every affected
    # run has its facts, as from the log.
    def cut(from_log: bool) -> BlastRadius:
        return blast_radius(
            ledger,
            Indicator(users=("mallory",)),
            prices=PRICES,
            as_of=AS_OF,
            max_depth=1,
            from_log=from_log,
        )

    got, want = cut(False), cut(True)
    assert got.answered_from.startswith("derived tables")
    assert affected(got) == affected(want) == {"evil": 1.0, "ft-a": 16.0, "ft-c": 4.0}
    assert all(a.facts.entry is not None for a in got.affected_runs)
    assert got.to_json()["affected_runs"] == want.to_json()["affected_runs"]


def test_readers_shared_with_the_side_connection_give_the_same_answer(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a server behind it, a step's readers not read ahead are read half here
    # and half on the side connection: merged in leaf order, as one read gives them.
    from trainguard.ledger import _query

    want = radius(ledger, artifacts=(P1,))
    monkeypatch.setattr(_query, "_SPLIT_FROM", 2)
    monkeypatch.setattr(type(ledger.storage), "separate_process", True)
    asked: list[int] = []
    read = ledger.storage.readers

    def here(digests: Any, run_ids: Any) -> Any:
        asked.append(len(digests))
        return read(digests, run_ids)

    monkeypatch.setattr(ledger.storage, "readers", here)
    got = radius(ledger, artifacts=(P1,))
    assert asked and all(n == 1 for n in asked)  # the other halves were read on the side
    assert got.to_json()["affected_runs"] == want.to_json()["affected_runs"]
    assert got.affected_artifacts == want.affected_artifacts


@pytest.mark.parametrize(
    ("produced", "said", "used"),
    [
        (["a", "b"], ["a", "b"], True),
        (["a", "b"], ["b", "a"], False),  # the same digests in another order
        (["a", "b"], ["a\nb"], False),  # joined alike, one row fewer
        (["a\nb", "c"], ["a", "b\nc"], False),  # a separator inside a digest
        (["a", 5], ["a", "5"], False),  # a value of another type
        ([], [], True),
    ],
)
def test_readers_read_ahead_need_the_very_digests_the_entries_said(
    ledger: Ledger, produced: list[Any], said: list[str], used: bool
) -> None:
    import hashlib
    from concurrent.futures import Future

    from trainguard.ledger import _query

    rows = [(7, "x", "used", "a", "checkpoint")]
    done: Future[Any] = Future()
    done.set_result((rows, (len(said), hashlib.sha256("\n".join(said).encode()).hexdigest())))
    index = _query.StorageIndex(ledger.storage)
    index._speculated, index._produced = (["r1", "r2"], done), produced
    assert index._speculated_readers(["r2", "r1"]) == (rows if used else None)
    index._speculated = (["r1", "r2"], done)
    assert index._speculated_readers(["r1"]) is None  # read ahead for other runs
