"""One suite for every runner: the host and the simulated board share a life cycle and a record shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import DIGITS_MODEL
from edgeproof.errors import DataError, ModelError, TargetError
from edgeproof.gate import is_interleaved_pair, paired_ratio
from edgeproof.measure.interleaved import InterleaveOptions
from edgeproof.measure.runner import ProfileOptions
from edgeproof.model import Model
from edgeproof.records import RunRecord, RuntimeSettings, load_record, save_record
from edgeproof.runners import HostRunner, Runner, SimulatedRunner, runner_for
from edgeproof.slowdown import add_busy_branch

QUICK = ProfileOptions(min_sessions=2, max_sessions=2, samples_per_session=40, warmup=5, time_budget_s=10, cold_start_repeats=1)
AB = InterleaveOptions(pairs=2, blocks=4, block_size=10, warmup=5)
FIGURES = ("load_time_ms", "peak_rss_mib", "model_size_mib", "energy_mj_per_inference", "sustained_w", "temperature_c")

TARGETS = {
    "host": lambda: runner_for("host", check_fitness=False),
    "jetson": lambda: runner_for("jetson-orin-nano", power_mode="7W"),
    # the agent as a local subprocess standing in for a board (edgeproof.runners.agent)
    "device-local": lambda: runner_for("device:local"),
}


@pytest.fixture(params=sorted(TARGETS))
def runner(request) -> Runner:
    with TARGETS[request.param]() as opened:
        yield opened


def test_runner_for_picks_the_implementation():
    assert isinstance(runner_for("host"), HostRunner)
    assert isinstance(runner_for("raspberry-pi-5"), SimulatedRunner)
    with pytest.raises(DataError, match="simulated board"):
        runner_for("host", power_mode="7W")


def test_life_cycle_is_enforced():
    runner = runner_for("jetson-orin-nano")
    with pytest.raises(RuntimeError, match="open"):
        runner.prepare(DIGITS_MODEL)
    runner.open()
    runner.open()  # idempotent while open
    runner.close()
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.open()


def test_a_board_that_does_not_exist_fails_at_open():
    with pytest.raises(TargetError):
        runner_for("no-such-board").open()


def test_run_gives_a_complete_record_with_provenance(runner, tmp_path):
    prepared = runner.prepare(DIGITS_MODEL, QUICK)
    record = runner.run(prepared, RuntimeSettings(), QUICK)
    assert record.kind == runner.kind
    assert record.target.id == runner.target_id
    assert record.model.sha256 == Model.load(DIGITS_MODEL).sha256
    assert record.latency.n_sessions == 2 and record.latency.n_samples == 80
    kind = "measured" if runner.kind == "measured" else "simulated"
    assert record.latency_provenance.startswith(kind + ":")
    meters = runner.meters()
    for name in FIGURES:
        figure = getattr(record, name)
        assert figure.provenance.split(":", 1)[0] in ("measured", "simulated", "unavailable")
        assert (figure.value is None) == figure.provenance.startswith("unavailable:")
    # what meters() says is what the record carries: an unavailable meter is never a number
    assert record.energy_mj_per_inference.provenance.split(":", 1)[0] == meters["energy"].split(":", 1)[0]
    path = save_record(record, tmp_path / "run.json")
    assert load_record(path).model_dump() == record.model_dump()


def test_run_ab_pairs_the_arms_for_the_gate(runner):
    model = runner.prepare(DIGITS_MODEL, QUICK)
    base, cand = runner.run_ab(model, model, RuntimeSettings(), QUICK, AB)
    assert is_interleaved_pair(base, cand)
    assert (base.interleave.arm, cand.interleave.arm) == ("A", "B")
    assert len(base.sessions) == len(cand.sessions) == AB.pairs
    assert all(len(s.samples_ms) == AB.blocks * AB.block_size for s in base.sessions + cand.sessions)
    ratio = paired_ratio(base, cand, 0.5)
    assert ratio.low <= 1.0 <= ratio.high or runner.kind == "simulated"
    if runner.kind == "simulated":
        assert ratio.ratio == pytest.approx(1.0)  # same model, same seeded jitter: exactly equal


def test_a_slower_candidate_is_slower_on_every_runner(runner, tmp_path):
    slow = add_busy_branch(DIGITS_MODEL, tmp_path / "slow.onnx", chain=24)
    a, b = runner.prepare(DIGITS_MODEL, QUICK), runner.prepare(slow, QUICK)
    base, cand = runner.run_ab(a, b, RuntimeSettings(), QUICK, AB)
    assert paired_ratio(base, cand, 0.5).ratio > 1.0


def test_prepare_loads_the_model_once_and_refuses_a_bad_one(runner, tmp_path):
    model = Model.load(DIGITS_MODEL)
    prepared = runner.prepare(model, QUICK)
    assert prepared.model is model
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="bad.onnx"):
        runner.prepare(bad, QUICK)


def test_scenario_rate_reaches_the_record(runner):
    options = ProfileOptions(**{**QUICK.__dict__, "scenario": "periodic:200", "profile_nodes": False})
    record = runner.run(runner.prepare(DIGITS_MODEL, options), RuntimeSettings(), options)
    assert record.scenario.name == "periodic" and record.scenario.rate_hz == 200
    assert record.scenario.deadline_miss_rate is not None


def test_records_name_where_they_ran_as_json(runner, tmp_path):
    record = runner.run(runner.prepare(DIGITS_MODEL, QUICK), RuntimeSettings(), QUICK)
    raw = json.loads(record.model_dump_json())
    assert raw["schema_version"] == "edgeproof.run/2"
    assert "extras" not in raw
    assert (raw["simulation"] is None) == (runner.kind == "measured")
    assert bool(raw["cold_start"]) == (runner.kind == "measured")


V1 = Path(__file__).parent / "data" / "v1"
V2 = Path(__file__).parent / "data" / "v2"


@pytest.mark.parametrize("name", sorted(p.name for p in V1.glob("*.json")))
def test_version_1_and_version_2_records_give_the_same_figures(name):
    old, new = load_record(V1 / name), load_record(V2 / name)
    assert json.loads((V2 / name).read_text())["schema_version"] == "edgeproof.run/2"
    assert json.loads((V1 / name).read_text())["schema_version"] == "edgeproof.run/1"
    assert old.model_dump() == new.model_dump()
    assert not old.warnings or not any("is not read" in w for w in old.warnings)
    for figure in FIGURES:
        assert getattr(old, figure) == getattr(new, figure)
    assert old.latency == new.latency
    if old.simulation is not None:
        assert old.simulation.latency_model_ms > 0 and old.simulation.partitions.segment_count >= 1
    else:
        assert old.cold_start and old.inputs


def test_a_version_1_interleaved_pair_still_gates():
    base, cand = load_record(V1 / "interleaved-a.run.json"), load_record(V1 / "interleaved-b.run.json")
    assert is_interleaved_pair(base, cand)
    assert paired_ratio(base, cand, 0.5).units == base.interleave.pairs


def test_a_version_1_search_record_keeps_its_variant():
    record = load_record(V1 / "search-candidate.run.json")
    assert record.variant is not None and record.variant.sha256 and record.variant.recipe.precision
    assert record.fitness is not None and record.fitness.checked


def test_history_reads_back_version_1_rows(tmp_path):
    import duckdb

    from edgeproof import history

    old = json.loads((V1 / "measured.run.json").read_text())
    history.append(load_record(V2 / "simulated-board.run.json"), tmp_path)
    con = duckdb.connect(str(history.history_path(tmp_path)))
    con.execute("UPDATE runs SET record = ?", [json.dumps(old)])
    con.close()
    (record,) = history.load_runs(tmp_path)
    assert isinstance(record, RunRecord) and record.schema_version == "edgeproof.run/2"
    assert record.latency.p50_ms == pytest.approx(old["latency"]["p50_ms"])
