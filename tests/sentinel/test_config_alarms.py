"""Config validation, the alarm record, the spool and the console rate limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainguard.errors import ConfigError
from trainguard.findings import RULES, Severity
from trainguard.sentinel import Action, Alarm, CheckConfig, SentinelConfig
from trainguard.sentinel.alarms import AlarmRouter, AlarmSpool, ConsoleLimiter


def test_config_from_mapping_merges_check_overrides() -> None:
    cfg = SentinelConfig.from_mapping(
        {"log_every": 7, "checks": {"updates": {"action": "veto", "k": 64}}}
    )
    assert cfg.log_every == 7
    updates = cfg.checks["updates"]
    assert updates.action is Action.VETO and updates.options["k"] == 64
    merged = cfg.for_check("updates", CheckConfig(options={"k": 256, "tolerance": 0.05}))
    assert merged.options == {"k": 64, "tolerance": 0.05}
    assert merged.action is Action.VETO


@pytest.mark.parametrize(
    "data",
    [
        {"log_every": 0},
        {"fsync": "sometimes"},
        {"forward_verify": "maybe"},
        {"no_such_option": 1},
        {"checks": {"updates": {"action": "explode"}}},
        {"checks": {"updates": {"every": 0}}},
        {"checks": {"updates": {"options": {"k": object()}}}},
    ],
)
def test_config_rejects_bad_data(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SentinelConfig.from_mapping(data)


def test_unknown_check_option_is_an_error() -> None:
    cfg = SentinelConfig.from_mapping({"checks": {"updates": {"kk": 3}}})
    with pytest.raises(ConfigError, match="kk"):
        cfg.for_check("updates", CheckConfig(options={"k": 256}))


def test_config_is_frozen() -> None:
    cfg = SentinelConfig()
    with pytest.raises(AttributeError):
        cfg.log_every = 3  # type: ignore[misc]


def test_alarm_roundtrip_and_finding() -> None:
    alarm = Alarm(
        "weights", "sentinel.weights-edited", 1, "h", 5, "edited", {"tensors": ["w"], "x": object()}
    )
    again = Alarm.from_dict(json.loads(json.dumps(alarm.to_dict())))
    assert again == alarm
    assert isinstance(
        alarm.evidence["x"], str
    )  # non-JSON evidence is repr'd, never kept as an object
    finding = alarm.to_finding()
    assert finding.rule == "sentinel.weights-edited" and "rank 1" in finding.subject
    assert finding.evidence["check"] == "weights"
    with pytest.raises(ValueError):
        Alarm.from_dict({"check": "x"})


def test_spool_appends_lines_and_survives_a_torn_tail(tmp_path: Path) -> None:
    spool = AlarmSpool(tmp_path, rank=3)
    for step in range(3):
        spool.append(Alarm("rng", "sentinel.rng-reseeded", 3, "h", step, "seed"))
    spool.close()
    with open(spool.path, "a") as fh:
        fh.write('{"check": "torn')  # a crash mid-line
    alarms = AlarmSpool.read(spool.path)
    assert [a.step for a in alarms] == [0, 1, 2]
    assert spool.path.name.startswith("alarms-rank3-")
    assert (spool.path.stat().st_mode & 0o777) == 0o600


def test_console_rate_limit_counts_suppressed() -> None:
    now = [0.0]
    limiter = ConsoleLimiter(2, 10.0, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(4)] == [True, True, False, False]
    assert limiter.suppressed == 2
    now[0] = 10.0
    assert limiter.allow()


def test_router_order_spool_before_callback(tmp_path: Path) -> None:
    seen: list[int] = []
    spool = AlarmSpool(tmp_path, rank=0)

    def on_alarm(alarm: Alarm) -> None:
        # When the callback runs, the alarm is already on disk.
        seen.append(len(AlarmSpool.read(spool.path)))

    router = AlarmRouter(spool, console=None, on_alarm=on_alarm)
    router.emit(Alarm("census", "sentinel.hook-installed", 0, "h", 0, "hook"))
    assert seen == [1]


def test_sentinel_rules_are_registered() -> None:
    import trainguard.sentinel.checks.anomaly
    import trainguard.sentinel.checks.updates  # noqa: F401

    assert RULES["sentinel.update-mismatch"].severity is Severity.CRITICAL
    assert "sentinel.non-finite" in RULES


def test_alarm_evidence_is_made_fit_for_the_ledger() -> None:
    # Canonical JSON has no floats: evidence with scores, NaN and huge ints must still
    # become an Alert (an alarm the ledger refuses is an alarm lost to the dashboard).
    from trainguard.ledger import Alert
    from trainguard.ledger._canonical import encode
    from trainguard.sentinel.alarms import alert_of

    record = {
        "check": "updates",
        "rule": "sentinel.update-mismatch",
        "rank": 1,
        "host": "h",
        "step": 3,
        "message": "m",
        "evidence": {"scores": {"tok.weight": 2.0, "x": float("nan")}, "big": 2**70, "é": (1, 2.5)},
        "severity": "critical",
        "action": "warn",
        "reporter": 1,
        "time": 1714000000.5,
    }
    alert = alert_of("run-1", record)
    assert isinstance(alert, Alert)
    encode(alert.to_json())  # raises on anything canonical JSON cannot hold
    assert alert.evidence["scores"] == {"tok.weight": "2.0", "x": "nan"}
    assert alert.evidence["big"] == str(2**70) and alert.evidence["\\xe9"] == [1, "2.5"]
    assert alert.evidence["rank"] == 1 and alert.step == 3
    assert alert.evidence["reporter"] == 1
