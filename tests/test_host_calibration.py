"""Host calibration says when and under what load it ran; a prediction says when that no longer holds; the profile lives outside the project."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import DIGITS_MODEL
from edgeproof.errors import TargetError
from edgeproof.simulate import calibrate, save_profile, simulate_run
from edgeproof.simulate.hostprofile import CalibrationConditions, HostProfile, calibration_drift, default_profile_path, load_profile
from edgeproof.targets.host import HostLoad, fingerprint, host_load

CALIBRATED_AT = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)


def load(at: datetime, one_min: float, cores: int = 2, mhz: float | None = 2600.0, governor: str | None = None) -> HostLoad:
    return HostLoad(
        at=at.isoformat(timespec="seconds"),
        load_avg_1m=one_min,
        load_avg_5m=one_min,
        load_avg_15m=one_min,
        cores=cores,
        cpu_mhz=mhz,
        governor=governor,
    )


def profile(conditions: CalibrationConditions | None) -> HostProfile:
    """A profile as calibration writes it, with no kernel costs (drift looks only at when and how)."""
    return HostProfile(
        created_at=CALIBRATED_AT.isoformat(timespec="seconds"),
        fingerprint=fingerprint(),
        calibration_s=12.0,
        threads=[1],
        precisions=["fp32"],
        base_us={"fp32/1": 5.0},
        costs={},
        jitter_cv=0.05,
        memory_bandwidth_gbs=10.0,
        conditions=conditions,
    )


def calm(one_min: float = 0.5, governor: str | None = None) -> CalibrationConditions:
    return CalibrationConditions(
        load_at_start=load(CALIBRATED_AT, one_min, governor=governor),
        load_at_end=load(CALIBRATED_AT + timedelta(seconds=12), one_min, governor=governor),
        rounds=3,
        samples_per_session=100,
        statistic="median over 3 round(s)",
    )


def test_a_profile_used_under_the_load_it_was_calibrated_under_raises_nothing():
    assert calibration_drift(profile(calm(0.5)), load(CALIBRATED_AT + timedelta(minutes=5), 1.0)) == []
    # on a saturated machine a load average 10.5 → 11.6 moves a core's share by 10%: still the same moment
    assert calibration_drift(profile(calm(10.5)), load(CALIBRATED_AT + timedelta(minutes=5), 11.6)) == []


def test_a_busier_or_quieter_machine_is_named_with_both_loads_and_the_fix():
    (busier,) = calibration_drift(profile(calm(0.5)), load(CALIBRATED_AT + timedelta(minutes=5), 3.0))
    assert "busier" in busier and "3.00 now vs 0.50 then on 2 cores" in busier and "2.00x as contended" in busier and "optimistic" in busier
    assert "edgeproof targets --calibrate-host" in busier
    (quieter,) = calibration_drift(profile(calm(4.0)), load(CALIBRATED_AT + timedelta(minutes=5), 0.2))
    assert "quieter" in quieter and "pessimistic" in quieter


def test_an_old_profile_another_clock_or_governor_and_an_unrecorded_load_are_each_flagged():
    later = CALIBRATED_AT + timedelta(hours=30)
    (old,) = calibration_drift(profile(calm()), load(later, 0.5))
    assert "calibrated 30 h ago" in old
    (clock,) = calibration_drift(profile(calm()), load(CALIBRATED_AT, 0.5, mhz=1800.0))
    assert "1800 MHz now vs 2600 MHz" in clock
    (governor,) = calibration_drift(profile(calm(governor="performance")), load(CALIBRATED_AT, 0.5, governor="powersave"))
    assert "powersave now vs performance" in governor
    (unknown,) = calibration_drift(profile(None), load(CALIBRATED_AT, 0.5))
    assert "does not record the load" in unknown


def test_a_profile_written_before_conditions_were_kept_still_loads(tmp_path):
    path = save_profile(profile(None), tmp_path / "old.json")
    raw = json.loads(path.read_text())
    raw.pop("conditions")
    path.write_text(json.dumps(raw))
    assert load_profile(path).conditions is None


def test_the_profile_lives_in_edgeproof_home_or_the_users_cache_never_the_project(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEPROOF_HOME", str(tmp_path / "home"))
    assert default_profile_path() == tmp_path / "home" / "host-profile.json"
    monkeypatch.delenv("EDGEPROOF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_profile_path() == tmp_path / "cache" / "edgeproof" / "host-profile.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_profile_path() == Path.home() / ".cache" / "edgeproof" / "host-profile.json"


def test_calibration_records_its_conditions_and_a_host_prediction_warns_when_they_no_longer_hold(tmp_path):
    before = host_load()
    made = calibrate(precisions=("fp32",), threads=(1,), quick=True)
    cond = made.conditions
    assert cond is not None and cond.rounds == 1 and cond.samples_per_session > 0
    assert cond.load_at_start.cores == before.cores and cond.load_at_start.at >= before.at
    assert made.calibration_s > 0 and "median" in cond.statistic
    path = save_profile(made, tmp_path / "host-profile.json")
    fresh = simulate_run(DIGITS_MODEL, "host", host_profile_path=path, sessions=2, samples_per_session=20)
    assert not any("h ago" in w or "does not record" in w for w in fresh.warnings)
    assert fresh.simulation.latency_interval_rel == 1.0 and "never checked against measurement" in fresh.simulation.latency_interval_basis
    # the same profile, as if calibrated a day and a half ago while ten more threads per core ran
    swamped = host_load().load_avg_1m + 10 * cond.load_at_start.cores
    stale = made.model_copy(
        update={
            "created_at": (datetime.fromisoformat(made.created_at) - timedelta(hours=36)).isoformat(),
            "conditions": cond.model_copy(
                update={
                    "load_at_start": cond.load_at_start.model_copy(update={"load_avg_1m": swamped}),
                    "load_at_end": cond.load_at_end.model_copy(update={"load_avg_1m": swamped}),
                }
            ),
        }
    )
    stale_path = save_profile(stale, tmp_path / "stale.json")
    warnings = simulate_run(DIGITS_MODEL, "host", host_profile_path=stale_path, sessions=2, samples_per_session=20).warnings
    assert any("calibrated 36 h ago" in w for w in warnings) and any("quieter than at calibration" in w for w in warnings)


@pytest.mark.parametrize("field", ["load_at_start", "rounds"])
def test_a_malformed_conditions_table_names_the_field(tmp_path, field):
    path = save_profile(profile(calm()), tmp_path / "p.json")
    raw = json.loads(path.read_text())
    raw["conditions"][field] = "busy"
    path.write_text(json.dumps(raw))
    with pytest.raises(TargetError, match=f"p.json: conditions.{field}"):
        load_profile(path)
