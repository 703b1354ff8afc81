"""Search: Pareto front, the contract's pick, infeasibility explained, and `edgeproof optimize` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import edgeproof.model
from conftest import run_cli
from edgeproof import history
from edgeproof.contract import load_contract, undecided_because
from edgeproof.model import sha256_file
from edgeproof.records import ClauseResult, Figure, RunRecord, Verdict, load_record
from edgeproof.search import (
    Candidate,
    SearchOptions,
    SearchResult,
    Skipped,
    choose,
    clause_kind,
    decide_target,
    escalation_for,
    explain_infeasible,
    off_front_note,
    optimize,
    pareto_front,
    usable_axes,
)

SIDE = 8
QUAD = SIDE // 2
NO_METER = "unavailable:no power meter on this host"

# ---------------------------------------------------------------- constructed candidates (pure logic)

BUDGETS = {"budgets.p95_ms": (5.0, "ms"), "slices.noise.max_drop_pp": (4.0, "pp")}


def cand(
    cid: str,
    p95: float,
    drop: float = 0.0,
    rss: float = 80.0,
    size: float = 0.5,
    p50: float | None = None,
    energy: float | None = None,
    precision: str = "int8-static",
    eligible: bool = True,
    waive_p95: bool = False,
) -> Candidate:
    """A candidate judged on two clauses (p95 budget 5 ms, noise slice floor 4 pp)."""
    values = {"budgets.p95_ms": p95, "slices.noise.max_drop_pp": drop}
    clauses = []
    for clause, (budget, unit) in BUDGETS.items():
        value = values[clause]
        status = "pass" if value <= budget else ("waived" if waive_p95 and clause == "budgets.p95_ms" else "fail")
        clauses.append(
            ClauseResult(
                clause=clause, status=status, value=value, budget=budget, unit=unit, margin=budget - value, provenance="measured:test"
            )
        )
    passed = all(c.status in ("pass", "waived") for c in clauses)
    failing = [c for c in clauses if c.status == "fail"]
    binding = min(failing, key=lambda c: c.margin / c.budget).clause if failing else None
    figures = {
        "p50_ms": Figure.measured(p50 if p50 is not None else p95 * 0.8, "ms", "test"),
        "p95_ms": Figure.measured(p95, "ms", "test"),
        "accuracy_drop_pp": Figure.measured(drop, "pp", "test"),
        "peak_rss_mib": Figure.measured(rss, "MiB", "test"),
        "model_size_mib": Figure.measured(size, "MiB", "test"),
        "energy_mj_per_inference": Figure.unavailable("mJ", "no power meter on this host")
        if energy is None
        else Figure.simulated(energy, "mJ", "board@1"),
    }
    return Candidate(
        id=cid,
        variant=precision,
        variant_sha256=cid * 8,
        variant_path=f"/nowhere/{cid}.onnx",
        precision=precision,
        cache_hit=False,
        target="host",
        threads=1,
        opt_level="all",
        run_id=cid,
        figures=figures,
        feasible=passed,
        eligible=eligible,
        ineligible_reason="" if eligible else f"{precision} is not in [model] precisions",
        verdict=Verdict(target="host", passed=passed, clauses=clauses, binding_clause=binding),
    )


CONTRACT_HEAD = """
[contract]
name = "search-test"
[budgets]
p95_ms = "5 ms"
[preferences]
minimize = {minimize}
[slices.noise]
kind = "stress"
transforms = [{{ name = "gaussian_noise", severity = 0.2 }}]
max_drop_pp = 4.0
"""
ESCALATION = """
[[escalation]]
owner = "ml-team"
options = ["better-quantization", "mixed-precision", "smaller-backbone"]
note = "shrink the network last"

[[escalation]]
owner = "product-owner"
options = ["relax-budget", "waiver"]
"""


def contract_with(tmp_path: Path, minimize: list[str], escalation: str = ESCALATION):
    path = tmp_path / "contract.toml"
    path.write_text(CONTRACT_HEAD.format(minimize=json.dumps(minimize)) + escalation)
    return load_contract(path)


def test_pareto_front_keeps_only_undominated_candidates():
    a = cand("a", p95=1.0, drop=2.0)
    b = cand("b", p95=2.0, drop=0.5)
    c = cand("c", p95=2.5, drop=2.5)  # worse than a on both
    d = cand("d", p95=1.0, drop=2.0)  # equal to a: neither dominates
    assert pareto_front([a, b, c, d], ["p95_ms", "accuracy_drop_pp"]) == ["a", "b", "d"]


def test_pareto_leaves_out_an_axis_no_candidate_has_and_says_why():
    group = [cand("a", 1.0), cand("b", 2.0, rss=50.0)]
    axes, notes = usable_axes(group)
    assert axes == ["p95_ms", "accuracy_drop_pp", "peak_rss_mib"]
    assert "energy_mj_per_inference unavailable for 2 of 2" in notes[0] and "no power meter" in notes[0]
    assert pareto_front(group, axes) == ["a", "b"]
    with_energy = [cand("a", 1.0, energy=3.0), cand("b", 2.0, energy=1.0, rss=90.0)]
    assert "energy_mj_per_inference" in usable_axes(with_energy)[0]


def test_hard_budgets_come_before_any_preference():
    fast_but_breaks_floor = cand("fast", p95=0.5, drop=6.0)
    ok = cand("ok", p95=1.5, drop=1.0)
    selection = choose([fast_but_breaks_floor, ok], ["p95_ms"])
    assert selection.chosen == "ok"
    assert selection.considered == ["ok"]


def test_a_waived_clause_counts_as_met():
    waived = cand("w", p95=7.0, waive_p95=True)
    assert choose([waived], ["p95_ms"]).chosen == "w"


def test_preferences_are_lexicographic_with_a_tie_tolerance():
    a = cand("a", p95=1.00, size=0.50)
    b = cand("b", p95=1.015, size=0.10)  # within 2% of a: tie on p95, smaller model wins
    c = cand("c", p95=1.05, size=0.01)  # 5% slower: out at the first preference
    selection = choose([a, b, c], ["p95_ms", "model_size_mib"])
    assert selection.chosen == "b"
    first = selection.steps[0]
    assert (first.metric, first.kept, first.dropped) == ("p95_ms", ["a", "b"], ["c"])
    assert first.tolerance == pytest.approx(0.02)
    # with a zero tolerance the fastest wins outright
    assert choose([a, b, c], ["p95_ms", "model_size_mib"], rel_tol=0.0).chosen == "a"


def test_a_pick_off_the_pareto_front_says_which_candidate_dominates_it_and_why():
    a = cand("a", p95=1.00, size=0.5, rss=80.0)
    b = cand("b", p95=1.01, size=0.1, rss=81.0)  # ties a on p95, wins on size; a dominates it on the front's axes
    breaks = cand("x", p95=0.5, drop=9.0)
    axes = ["p95_ms", "accuracy_drop_pp", "peak_rss_mib"]
    selection = choose([a, b], ["p95_ms", "model_size_mib"])
    assert selection.chosen == "b"
    note = off_front_note(b, [a, b], axes, selection)
    assert note is not None and note.startswith("b is not on the Pareto front: a dominates it")
    assert "preference model_size_mib" in note and "2% tie tolerance" in note
    assert off_front_note(a, [a, b], axes, choose([a], ["p95_ms"])) is None
    lone = choose([cand("y", p95=2.0, drop=1.0), cand("x", p95=0.5, drop=9.0)], ["p95_ms"])
    assert "fails the contract (slices.noise.max_drop_pp)" in off_front_note(cand("y", p95=2.0, drop=1.0), [breaks], ["p95_ms"], lone)


def test_an_unavailable_preference_is_skipped_not_compared():
    a, b = cand("a", p95=2.0), cand("b", p95=1.0)
    selection = choose([a, b], ["energy_mj_per_inference", "p95_ms"])
    assert selection.chosen == "b"
    energy = selection.steps[0]
    assert energy.metric == "energy_mj_per_inference" and not energy.used and "unavailable" in energy.note


def test_precisions_the_contract_does_not_list_are_never_chosen():
    fp32 = cand("fp32", p95=0.5, precision="fp32", eligible=False)
    int8 = cand("int8", p95=1.0)
    selection = choose([fp32, int8], ["p95_ms"])
    assert selection.chosen == "int8"
    assert any("fp32" in n and "not eligible" in n for n in selection.notes)


def test_chosen_slower_than_fp32_says_why():
    fp32 = cand("f", p95=1.0, p50=0.8, size=0.5, precision="fp32")
    small = cand("q", p95=2.0, p50=1.6, size=0.1)
    selection = choose([fp32, small], ["model_size_mib"])
    assert selection.chosen == "q"
    cmp = selection.vs_fp32
    assert cmp is not None and cmp.slower and cmp.fp32_candidate == "f"
    assert cmp.p50_ratio == pytest.approx(2.0)
    assert "model_size_mib" in cmp.why

    fp32_breaks_floor = cand("f", p95=1.0, drop=9.0, precision="fp32")
    cmp = choose([fp32_breaks_floor, small], ["p95_ms"]).vs_fp32
    assert cmp is not None and cmp.slower and "fails the contract" in cmp.why and "slices.noise.max_drop_pp" in cmp.why

    faster = cand("q", p95=0.5, p50=0.4)
    cmp = choose([fp32, faster], ["p95_ms"]).vs_fp32
    assert cmp is not None and not cmp.slower and cmp.why == ""


def test_infeasible_names_the_clause_no_candidate_meets(tmp_path):
    contract = contract_with(tmp_path, ["p95_ms"])
    group = [cand("a", p95=9.0, drop=1.0), cand("b", p95=6.0, drop=5.0), cand("c", p95=7.0, drop=0.5)]
    exp = explain_infeasible("host", group, contract, tried=["better-quantization"])
    assert exp.binding_clause == "budgets.p95_ms"
    best = {b.clause: b for b in exp.clauses}
    assert (best["budgets.p95_ms"].best_value, best["budgets.p95_ms"].best_candidate, best["budgets.p95_ms"].met_by) == (6.0, "b", 0)
    assert (best["slices.noise.max_drop_pp"].best_value, best["slices.noise.max_drop_pp"].best_candidate) == (0.5, "c")
    assert best["slices.noise.max_drop_pp"].met_by == 2
    assert exp.closest_candidate == "b"
    assert "6 ms" in exp.why and "5 ms" in exp.why
    # latency: better-quantization was tried by the search, so the ML team's next option is a smaller backbone
    assert exp.escalation is not None
    assert exp.escalation.owner == "ml-team"
    assert exp.escalation.options == ["smaller-backbone"]
    assert exp.escalation.tried_by_search == ["better-quantization"]


def test_infeasible_when_each_clause_is_met_by_someone_but_none_meets_all(tmp_path):
    contract = contract_with(tmp_path, ["p95_ms"])
    slow_accurate = cand("slow", p95=6.0, drop=1.0)
    fast_inaccurate = cand("fast", p95=3.0, drop=6.0)
    exp = explain_infeasible("host", [slow_accurate, fast_inaccurate], contract, tried=["better-quantization", "mixed-precision"])
    # the preferences (p95) would have picked "fast"; the slice floor removes it
    assert exp.binding_clause == "slices.noise.max_drop_pp"
    assert exp.closest_candidate == "fast"
    assert "none meets all" in exp.why
    # accuracy: the ML team's options were all tried, so the product owner's step applies
    assert exp.escalation is not None and exp.escalation.owner == "product-owner"
    assert exp.escalation.options == ["relax-budget", "waiver"]


def test_escalation_without_a_matching_step_says_so(tmp_path):
    contract = contract_with(tmp_path, ["p95_ms"], escalation="")
    exp = explain_infeasible("host", [cand("a", p95=9.0)], contract)
    assert exp.escalation is None
    assert "no [[escalation]] step" in exp.escalation_note
    assert clause_kind("budgets.load_time_ms") == "latency" and clause_kind("slices.x.max_drop_pp") == "accuracy"
    advice, _ = escalation_for("energy", contract_with(tmp_path, ["p95_ms"]).escalation)
    assert advice is not None and advice.owner == "ml-team" and advice.options == ["better-quantization", "smaller-backbone"]


def test_a_target_is_undecided_not_infeasible_when_nothing_was_measured_or_a_candidate_lacks_data():
    failing = cand("a", p95=9.0)
    assert decide_target("host", [failing], None, [], 240.0, 30.0) == ("fail", [])
    assert decide_target("host", [cand("b", p95=1.0)], "b", [], 240.0, 30.0) == ("pass", [])

    # "b" fails nothing on evidence but has no energy figure: the target cannot be called infeasible
    no_data = ClauseResult(
        clause="budgets.energy_mj_per_inference", status="unverified", value=None, budget=5.0, unit="mJ", provenance=NO_METER
    )
    clauses = [*cand("b", p95=1.0).verdict.clauses, no_data]
    verdict = Verdict(
        target="host", outcome="undecided", passed=False, clauses=clauses, undecided_because=undecided_because(clauses, False)
    )
    open_ = cand("b", p95=1.0).model_copy(update={"feasible": False, "verdict": verdict})
    outcome, why = decide_target("host", [failing, open_], None, [], 240.0, 30.0)
    assert outcome == "undecided" and len(why) == 1
    assert why[0].startswith("nothing fails on evidence for b, but budgets.energy_mj_per_inference: no data (no power meter on this host)")
    # a candidate the contract's precisions rule out decides nothing
    assert decide_target("host", [failing, open_.model_copy(update={"eligible": False})], None, [], 240.0, 30.0)[0] == "fail"

    # nothing measured on the target: the candidates left and the time budget that would measure more
    skipped = [Skipped(id=f"c0{i}", name=f"v{i} [host t1 all]", target="host", reason="time budget 1 s spent") for i in range(1, 6)]
    skipped.append(Skipped(id="c09", name="v9 [raspberry-pi-5 @default]", target="raspberry-pi-5", reason="time budget 1 s spent"))
    outcome, [why] = decide_target("host", [], None, [s for s in skipped if s.target == "host"], 1.0, 12.4)
    assert outcome == "undecided" and "time budget (1 s) was spent before any candidate on host" in why
    assert "5 not measured in full: c01 v1 [host t1 all], c02 v2 [host t1 all], c03 v3 [host t1 all] and 2 more" in why
    assert "--time-budget above 13" in why
    # with an estimate of what the rest would cost, the result names the budget that would finish
    _, [why] = decide_target("host", [], None, [s for s in skipped if s.target == "host"], 1.0, 12.4, needed_s=57.2)
    assert "--time-budget 58 or more to finish" in why


# ---------------------------------------------------------------- a tiny task, end to end


def quadrant_model(path: Path) -> Path:
    """Conv 1x1 (a copy channel and a dead channel) -> Relu -> Flatten -> Gemm over quadrant masks.

    The dead channel's Gemm rows hold 1000: harmless in float (they multiply zeros) but they set
    the INT8 weight scale so every useful weight rounds to zero, so every full-INT8 variant
    breaks the slice floors and the search has to reach for mixed precision.
    """
    w = np.zeros((2, 1, 1, 1), np.float32)
    w[0] = 1.0
    b = np.array([0.0, -1.0], np.float32)
    head = np.zeros((2 * SIDE * SIDE, 4), np.float32)
    for k, (r, c) in enumerate([(0, 0), (0, QUAD), (QUAD, 0), (QUAD, QUAD)]):
        mask = np.zeros((SIDE, SIDE), np.float32)
        mask[r : r + QUAD, c : c + QUAD] = 1.0 / (QUAD * QUAD)
        head[: SIDE * SIDE, k] = mask.reshape(-1)
    head[SIDE * SIDE :, :] = 1000.0
    nodes = [
        oh.make_node("Conv", ["input", "w", "b"], ["c"], name="conv"),
        oh.make_node("Relu", ["c"], ["r"], name="relu"),
        oh.make_node("Flatten", ["r"], ["f"], name="flatten"),
        oh.make_node("Gemm", ["f", "head", "hb"], ["logits"], name="head"),
    ]
    graph = oh.make_graph(
        nodes,
        "quadrants",
        [oh.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, SIDE, SIDE])],
        [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [nh.from_array(w, "w"), nh.from_array(b, "b"), nh.from_array(head, "head"), nh.from_array(np.zeros(4, np.float32), "hb")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def quadrant_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, SIDE, SIDE), dtype=np.float32) * 0.2
    y = rng.integers(0, 4, n)
    for i, q in enumerate(y):
        r, c = divmod(int(q), 2)
        x[i, 0, r * QUAD : (r + 1) * QUAD, c * QUAD : (c + 1) * QUAD] += 0.8
    return x, y.astype(np.int64)


TASK_CONTRACT = """
[contract]
name = "quadrants"
owner = "ml-team"
[model]
path = "tiny.onnx"
precisions = {precisions}
[budgets]
p95_ms = "{p95}"
peak_rss_mib = "4 GiB"
energy_mj_per_inference = "5 mJ"
[preferences]
minimize = ["energy_mj_per_inference", "p95_ms", "model_size_mib"]
[data]
npz = "{npz}"
[slices.nominal]
kind = "nominal"
max_drop_pp = 2.0
{extra_slice}
[slices.noise]
kind = "stress"
transforms = [{{ name = "gaussian_noise", severity = 0.2 }}]
max_drop_pp = 6.0
[slices.occluded]
kind = "tail"
transforms = [{{ name = "occlusion", severity = 0.2 }}]
max_drop_pp = 10.0
[[escalation]]
owner = "ml-team"
options = ["better-quantization", "mixed-precision", "smaller-backbone"]
[[escalation]]
owner = "product-owner"
options = ["relax-budget", "waiver"]
[[waivers]]
clause = "budgets.energy_mj_per_inference"
target = "host"
owner = "embedded-team"
reason = "no meter on the test host"
expires = 2099-01-01
"""


def write_task(
    folder: Path, p95: str = "50 ms", precisions: str = '["fp32", "fp16", "int8"]', npz: str = "tiny.npz", extra_slice: str = ""
) -> Path:
    """The tiny model, its data and a contract in ``folder``; returns the contract path."""
    folder.mkdir(parents=True, exist_ok=True)
    quadrant_model(folder / "tiny.onnx")
    xc, yc = quadrant_data(48, seed=1)
    xt, yt = quadrant_data(96, seed=2)
    np.savez(folder / "tiny.npz", x_calibration=xc, y_calibration=yc, x_test=xt, y_test=yt)
    path = folder / "contract.toml"
    path.write_text(TASK_CONTRACT.format(p95=p95, precisions=precisions, npz=npz, extra_slice=extra_slice))
    return path


QUICK = ("--threads", "1", "--opt-levels", "all", "--sessions", "1", "--samples", "20")


@pytest.mark.slow
def test_optimize_end_to_end_then_every_variant_from_cache(tmp_path):
    contract = write_task(tmp_path / "task")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = (
        "optimize",
        str(tmp_path / "task" / "tiny.onnx"),
        "--contract",
        str(contract),
        *QUICK,
        "--cache-dir",
        str(cache),
        "--out",
        str(out),
        "--json",
        str(tmp_path / "s.json"),
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr + first.stdout
    # stdout is not a terminal here: one line per phase, with elapsed time and counts
    for phase in ("setup", "build", "screen", "derive", "race", "confirm"):
        assert f"] {phase}: " in first.stdout, phase
    for text in ("candidates raced", "measured in full", "candidates on host", "chosen on host", "vs fp32"):
        assert text in first.stdout
    assert "energy_mj_per_inference unavailable" in first.stdout

    result = load_record(out / "search.json", SearchResult)
    assert load_record(tmp_path / "s.json", SearchResult).search_id == result.search_id
    assert [p.name for p in result.phases] == ["setup", "build", "screen", "derive", "race", "confirm"]
    [outcome] = result.outcomes
    race = outcome.race
    assert race is not None and race.raced == len(result.candidates) and race.measured_full >= 1
    assert race.pruned == sum(bool(c.pruned) for c in result.candidates)
    # every full-INT8 variant evaluated breaks a slice floor here; mixed precision repairs the most
    # promising base, unless every INT8 base is already slower than fp32 (then nothing is derived)
    full_int8 = [
        v for v in result.variants if v.origin == "plan" and v.precision.startswith("int8") and v.evaluation_worst_drop_pp is not None
    ]
    assert all(v.floors_failing for v in full_int8)
    if any(v.origin == "mixed" for v in result.variants):
        assert "mixed-precision" in result.space["escalation_options_tried"]
        assert any(not v.floors_failing for v in result.variants if v.origin == "mixed")
    else:
        assert any("nothing derived from" in n for n in result.notes), result.notes
    chosen = result.candidate(outcome.selection.chosen)
    assert chosen.feasible and chosen.eligible and chosen.stage == "full"
    assert (out / outcome.chosen_artifact).read_bytes() == Path(chosen.variant_path).read_bytes()
    cmp = outcome.selection.vs_fp32
    assert cmp is not None and (cmp.method.startswith("interleaved") or cmp.method == "the pick is fp32")
    # each candidate's record is on disk and carries its recipe; the evaluation comes with the full treatment
    for c in result.candidates:
        record = load_record(out / c.record_path, RunRecord)
        assert record.run_id == c.run_id and record.variant.sha256 == c.variant_sha256
        if c.stage == "full":
            assert record.evaluation is not None and set(record.evaluation.slices) == {"nominal", "noise", "occluded"}
        else:
            assert record.evaluation is None and record.load_time_ms.provenance.startswith("unavailable:")
        assert c.figures["energy_mj_per_inference"].provenance.startswith("unavailable:")
    runs = {r["run_id"] for r in history.list_runs(limit=100)}
    assert {c.run_id for c in result.candidates if c.stage == "full"} <= runs
    assert len({v.sha256 for v in result.variants}) == len(result.variants)

    # the same search again (one candidate raced, to keep the test short): nothing is rebuilt
    second = run_cli(*args, "--max-candidates", "1")
    assert second.returncode == 0, second.stderr
    again = load_record(out / "search.json", SearchResult)
    assert len(again.candidates) == 1 and all("max-candidates" in s.reason for s in again.skipped)
    n = len(again.variants)
    assert f"{n}/{n} variants from cache" in second.stdout
    assert {v.sha256 for v in again.variants} <= {v.sha256 for v in result.variants}


@pytest.mark.slow
def test_infeasible_contract_exits_1_naming_binding_clause_and_closest(tmp_path):
    contract = write_task(tmp_path / "task", p95="0.0001 ms", precisions='["fp32"]')
    proc = run_cli(
        "optimize",
        str(tmp_path / "task" / "tiny.onnx"),
        "--contract",
        str(contract),
        *QUICK,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "no candidate on host meets the contract" in proc.stdout and "could not decide" not in proc.stdout
    assert "binding clause: budgets.p95_ms" in proc.stdout
    assert "closest candidate: c01" in proc.stdout
    assert "escalate to ml-team: better-quantization, smaller-backbone" in proc.stdout
    result = load_record(tmp_path / "out" / "search.json", SearchResult)
    exp = result.outcomes[0].explanation
    assert exp is not None and exp.binding_clause == "budgets.p95_ms" and exp.closest_candidate == "c01"
    assert not list((tmp_path / "out").glob("chosen-*.onnx"))


def test_a_time_budget_spent_before_anything_was_measured_is_undecided_exit_3_not_1(tmp_path):
    contract = write_task(tmp_path / "task")
    out = tmp_path / "out"
    proc = run_cli(
        "optimize",
        str(tmp_path / "task" / "tiny.onnx"),
        "--contract",
        str(contract),
        *QUICK,
        "--time-budget",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    )
    assert proc.returncode == 3, proc.stderr + proc.stdout
    assert "could not decide whether a candidate on host meets the contract" in proc.stdout
    assert "no candidate on host meets the contract" not in proc.stdout
    result = load_record(out / "search.json", SearchResult)
    [outcome] = result.outcomes
    # a candidate may have been screened before the budget ran out, but none was measured in full
    assert all(c.stage != "full" for c in result.candidates)
    assert outcome.outcome == "undecided" and result.outcome == "undecided"
    [why] = outcome.undecided_because
    assert "not measured in full" in why and why in proc.stdout
    # the budget a rerun needs comes from what each stage cost here (or a stated default before any ran)
    assert "rerun with --time-budget" in why and "or more to finish" in why


@pytest.mark.slow
def test_a_simulated_board_is_one_more_candidate_target(tmp_path):
    contract = load_contract(write_task(tmp_path / "task", precisions='["fp32"]'))
    options = SearchOptions(
        targets=("host", "jetson-orin-nano-8gb"),
        power_modes=("7W",),
        threads=(1,),
        opt_levels=("all",),
        sessions=1,
        samples=20,
        cold_start_repeats=1,
        cache_dir=tmp_path / "cache",
    )
    result = optimize(tmp_path / "task" / "tiny.onnx", contract, options).result
    host, board = result.outcomes
    [sim] = [result.candidate(c) for c in board.candidates]
    assert sim.kind == "simulated" and sim.power_mode == "7W" and sim.target == "jetson-orin-nano-8gb"
    assert sim.figures["energy_mj_per_inference"].provenance.startswith("simulated:jetson-orin-nano-8gb")
    assert sim.figures["accuracy_drop_pp"].value == 0.0
    # energy is simulated on the board, so its front uses it; the host has no meter, so its front does not
    assert "energy_mj_per_inference" in board.pareto_axes and "energy_mj_per_inference" not in host.pareto_axes
    assert board.selection.chosen == sim.id and host.selection.chosen is not None


@pytest.mark.slow
def test_optimize_reads_and_parses_the_source_model_once(tmp_path, monkeypatch):
    """Data check, reference, every variant (fp32, INT8, per-node speed, mixed) and the result's
    model reference all use the one loaded Model; variants are read from their own files."""
    source = tmp_path / "task" / "tiny.onnx"
    contract = load_contract(write_task(tmp_path / "task", precisions='["fp32", "int8"]'))
    parsed: list[Path] = []
    real_parse = edgeproof.model._parse

    def counting_parse(data: bytes, path: Path) -> onnx.ModelProto:
        parsed.append(Path(path).resolve())
        return real_parse(data, path)

    monkeypatch.setattr(edgeproof.model, "_parse", counting_parse)
    options = SearchOptions(
        threads=(1,), opt_levels=("all",), sessions=1, samples=20, cold_start_repeats=1, max_candidates=1, cache_dir=tmp_path / "cache"
    )
    result = optimize(source, contract, options).result
    assert len(result.candidates) == 1 and any(v.precision.startswith("int8") for v in result.variants)
    assert parsed.count(source.resolve()) == 1
    assert result.model.sha256 == sha256_file(source) and result.model.io is not None


# ---------------------------------------------------------------- bad input: one line, exit 2


def _bad_npz(folder: Path, **arrays) -> None:
    np.savez(folder / "bad.npz", **arrays)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("shape", "rows have shape [1, 5, 5] but model input 'input'"),
        ("labels", "part 'test' has no labels"),
        ("empty", "part 'calibration' is empty"),
        ("missing_part", "no array 'x_night'"),
    ],
)
@pytest.mark.slow
def test_bad_data_is_one_line_and_exit_2(tmp_path, case, expected):
    extra = '[slices.night]\nkind = "tail"\npart = "night"\nmax_drop_pp = 10.0\n' if case == "missing_part" else ""
    contract = write_task(tmp_path, npz="bad.npz", extra_slice=extra)
    xc, yc = quadrant_data(16, seed=1)
    xt, yt = quadrant_data(16, seed=2)
    if case == "shape":
        _bad_npz(tmp_path, x_calibration=xc[:, :, :5, :5], y_calibration=yc, x_test=xt[:, :, :5, :5], y_test=yt)
    elif case == "labels":
        _bad_npz(tmp_path, x_calibration=xc, y_calibration=yc, x_test=xt)
    elif case == "empty":
        _bad_npz(tmp_path, x_calibration=xc[:0], y_calibration=yc[:0], x_test=xt, y_test=yt)
    else:
        _bad_npz(tmp_path, x_calibration=xc, y_calibration=yc, x_test=xt, y_test=yt)
    proc = run_cli("optimize", str(tmp_path / "tiny.onnx"), "--contract", str(contract), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "search.json").exists()


@pytest.mark.slow
def test_data_flag_overrides_the_contract_and_is_checked_too(tmp_path):
    contract = write_task(tmp_path / "task")
    xc, yc = quadrant_data(16, seed=1)
    np.savez(tmp_path / "other.npz", x_calibration=xc, y_calibration=yc, x_test=xc[:, :, :4, :4], y_test=yc)
    proc = run_cli(
        "optimize", str(tmp_path / "task" / "tiny.onnx"), "--contract", str(contract), "--data", str(tmp_path / "other.npz"), timeout=120
    )
    assert proc.returncode == 2
    assert "other.npz" in proc.stderr and "rows have shape" in proc.stderr


def test_the_search_latency_guard_measures_a_variant_against_the_contract_budget(tmp_path):
    from conftest import DIGITS_CONTRACT, DIGITS_MODEL
    from edgeproof.search._measure import SearchRunners
    from edgeproof.search._run import latency_guard
    from edgeproof.search._space import RunPoint
    from edgeproof.variants import Recipe, build_variant

    contract = load_contract(DIGITS_CONTRACT)
    fp32 = build_variant(DIGITS_MODEL, Recipe(precision="fp32"), cache_dir=tmp_path)
    row = np.zeros((1, 1, 32, 32), np.float32)
    host = RunPoint(target="host", threads=1, opt_level="all")
    with SearchRunners(scenario=contract.scenario) as runners:
        # a second per inference: the 0.4 ms digits model meets it however busy the machine is
        roomy_contract = contract.model_copy(update={"budgets": contract.budgets.model_copy(update={"p95_ms": 1000.0, "p99_ms": 1000.0})})
        roomy = latency_guard(roomy_contract, runners, host, row, samples=50, warmup=5)
        assert roomy is not None and roomy(fp32)
        tight = contract.model_copy(update={"budgets": contract.budgets.model_copy(update={"p95_ms": 1e-4})})
        assert latency_guard(tight, runners, host, row, samples=50, warmup=5)(fp32) is False
        unbudgeted = contract.model_copy(update={"budgets": contract.budgets.model_copy(update={"p95_ms": None, "p99_ms": None})})
        assert latency_guard(unbudgeted, runners, host, row) is None


def test_the_latency_guard_on_a_board_judges_with_its_simulator(tmp_path):
    from conftest import DIGITS_CONTRACT, DIGITS_MODEL
    from edgeproof.search._measure import SearchRunners
    from edgeproof.search._run import latency_guard
    from edgeproof.search._space import RunPoint
    from edgeproof.variants import Recipe, build_variant

    contract = load_contract(DIGITS_CONTRACT)
    fp32 = build_variant(DIGITS_MODEL, Recipe(precision="fp32"), cache_dir=tmp_path)
    row = np.zeros((1, 1, 32, 32), np.float32)
    # the Cortex-M55 runs the digits CNN in milliseconds, not in the host's fraction of one
    board = RunPoint(target="cortex-m55-ethos-u55", power_mode=None)
    with SearchRunners(scenario=contract.scenario) as runners:
        budget = contract.budgets.model_copy(update={"p95_ms": 1.0})
        guard = latency_guard(contract.model_copy(update={"budgets": budget}), runners, board, row, samples=20, warmup=2)
        assert guard is not None and guard(fp32) is False
        assert all(r.kind == "simulated" for r in runners._open.values())


# ---------------------------------------------------------------- racing rules (pure)


def staged(cid: str, p95: float, stage: str = "screened", half: float = 0.01, samples: int = 200, **kw) -> Candidate:
    """``cand`` at a race stage with a latency interval of ±``half`` (relative) around its p95 and p50."""
    c = cand(cid, p95=p95, **kw)
    figures = dict(c.figures)
    for key in ("p50_ms", "p95_ms"):
        v = figures[key].value
        figures[key] = Figure.measured(v, "ms", "test", (v * (1 - half), v * (1 + half)))
    if stage != "full":  # what only the full treatment measures
        figures["accuracy_drop_pp"] = Figure.unavailable("pp", "no evaluation: not measured in full yet")
        figures["peak_rss_mib"] = Figure.unavailable("MiB", "not measured: this run skipped cold starts (a screening run)")
    return c.model_copy(update={"figures": figures, "stage": stage, "samples": samples})


def test_the_race_prunes_only_on_certain_evidence():
    from edgeproof.search import prune

    prefs = ["energy_mj_per_inference", "p95_ms", "model_size_mib"]
    fast = staged("fast", p95=1.0)
    close = staged("close", p95=1.25)  # within the fast one's interval once drift (15% each side) is added
    slow = staged("slow", p95=2.0)  # optimistic 1.68 > pessimistic 1.16 (+2% tie tolerance)
    over = staged("over", p95=7.0)  # its optimistic bound is over the 5 ms budget
    pruned = prune([fast, close, slow, over], prefs)
    assert set(pruned) == {"slow", "over"}
    assert pruned["slow"][0] == "slower" and "for fast" in pruned["slow"][1]
    assert pruned["over"][0] == "budget" and pruned["over"][1].startswith("breaks budgets.p95_ms")
    # from 40 samples a p95 lower bound is not evidence: nothing is pruned on it, only on the
    # median's lower bound (p95 is never below p50): a long tail over a fast median stays in
    few = prune([fast, staged("tail", p95=2.0, p50=1.0, samples=40), staged("slow", p95=2.0, samples=40)], prefs)
    assert set(few) == {"slow"} and "from its p50" in few["slow"][1]
    # a rival that is not eligible, or known to fail, prunes nobody
    assert "slow" not in prune([fast.model_copy(update={"eligible": False}), slow], prefs)
    failed = staged("fast", p95=1.0, stage="full", drop=9.0)  # breaks the 4 pp noise floor, measured in full
    assert set(prune([failed, slow], prefs)) == {"fast"}


def test_the_race_stops_when_the_pick_is_decided():
    from edgeproof.search import still_needed

    prefs = ["p95_ms"]
    a, b = staged("a", p95=1.0, stage="timed"), staged("b", p95=1.5, stage="timed")
    # accuracy (a tie-break) comes with the full treatment: b is out on p95 already, a needs it
    assert still_needed([a, b], prefs) == ["a"]
    # two candidates tied on p95 both need the full treatment before the tie-breaks can rank them
    assert sorted(still_needed([a, staged("c", p95=1.01, stage="timed")], prefs)) == ["a", "c"]
    assert still_needed([staged("a", p95=1.0, stage="full"), b], prefs) == []


def test_a_confirmation_follows_the_preference_order_on_interleaved_evidence():
    from edgeproof.search import confirm_winner

    pick, fp32 = cand("pick", p95=1.0, size=0.1), cand("fp32", p95=1.0, size=0.4, precision="fp32")
    prefs = ["p95_ms", "model_size_mib"]
    # the pick is slower on evidence: fp32 wins on the first preference
    winner, why = confirm_winner(pick, fp32, {"p50_ms": (1.05, 1.02, 1.09), "p95_ms": (1.06, 1.02, 1.10)}, prefs)
    assert winner == "fp32" and why.startswith("preference p95_ms: fp32 faster")
    # a tie on p95 (the interval holds 1) goes to the next preference: the smaller model
    winner, why = confirm_winner(pick, fp32, {"p95_ms": (0.99, 0.95, 1.03)}, prefs)
    assert winner == "pick" and "model_size_mib" in why
    winner, _ = confirm_winner(pick, fp32, {"p95_ms": (0.90, 0.85, 0.95)}, prefs)
    assert winner == "pick"


def _sessions(ratio: float, pair_sd: float, pairs: int, blocks: int, block: int, seed: int = 0) -> tuple[list, list]:
    """Interleaved sessions of a baseline near 1 ms and a candidate at ``ratio`` of it, each pair
    shifted by its own log-normal factor (session-to-session noise, sd ``pair_sd``)."""
    rng = np.random.default_rng(seed)
    base, cand = [], []
    for _ in range(pairs):
        shift = float(np.exp(rng.normal(0.0, pair_sd)))
        base.append(list(rng.normal(1.0, 0.01, blocks * block)))
        cand.append(list(rng.normal(ratio * shift, 0.01 * ratio, blocks * block)))
    return base, cand


def test_a_confirmation_is_sized_to_the_models_speed():
    from edgeproof.search._confirm import MAX_PAIRS, MAX_RUNNER_UP_PAIRS, MIN_SAMPLES, interleave_plan

    small = interleave_plan(0.2)  # a digits-sized model: the gate's 20 blocks of 20
    assert (small.blocks, small.block_size, small.warmup, small.max_pairs) == (20, 20, 30, MAX_PAIRS)
    big = interleave_plan(40.0, MAX_RUNNER_UP_PAIRS)  # a 224² model: short pairs, at least MIN_SAMPLES an arm
    assert big.block_size == 3 and big.blocks * big.block_size >= MIN_SAMPLES and big.warmup <= 6
    assert big.max_pairs == MAX_RUNNER_UP_PAIRS


def test_the_speedup_vs_fp32_is_measured_until_its_interval_is_narrow():
    from edgeproof.gate import paired_ratio_of
    from edgeproof.search._confirm import MAX_RUNNER_UP_PAIRS, PRECISION, half_width, interleave_plan, stop_rule

    ab = interleave_plan(1.0)
    quiet = _sessions(0.5, 0.005, 6, ab.blocks, ab.block_size)
    noisy = _sessions(0.5, 0.10, 6, ab.blocks, ab.block_size)
    precise, decision_only = stop_rule(ab, 0.5, 0.02, PRECISION), stop_rule(ab, 0.5, 0.02, None)
    assert half_width(paired_ratio_of(*quiet, ab.blocks, ab.block_size, 0.5)) < PRECISION
    assert precise(*quiet)
    # 0.5 is settled at once, but ±10% per pair leaves the interval too wide to report: more pairs
    assert decision_only(*noisy) and not precise(*noisy)
    assert stop_rule(ab, 0.5, 0.02, PRECISION, out_of_time=lambda: True)(*noisy)  # the budget ends it
    # a tail quantile that does not settle is waited for up to MAX_RUNNER_UP_PAIRS pairs, then p50's precision decides
    tied = _sessions(1.0, 0.03, MAX_RUNNER_UP_PAIRS - 1, ab.blocks, ab.block_size, seed=3)
    assert not stop_rule(ab, 0.95, 0.0, PRECISION)(*tied)
    more = _sessions(1.0, 0.005, MAX_RUNNER_UP_PAIRS, ab.blocks, ab.block_size, seed=4)
    assert stop_rule(ab, 0.95, 0.0, 1.0)(*more)


def test_confirmation_keeps_the_budget_and_stops_when_more_pairs_would_not_help():
    import time

    from edgeproof.search._confirm import MAX_RUNNER_UP_PAIRS, PRECISION, interleave_plan, stop_rule

    ab = interleave_plan(1.0)
    noisy = _sessions(0.5, 0.10, 6, ab.blocks, ab.block_size)
    # 6 pairs took ~0.6 s: 2 more take ~0.2 s, which 10 s left can hold and 0.01 s cannot
    rule = stop_rule(ab, 0.5, 0.02, PRECISION, seconds_left=lambda: 10.0)
    rule.started = time.monotonic() - 0.6
    assert not rule(*noisy)
    rule = stop_rule(ab, 0.5, 0.02, PRECISION, seconds_left=lambda: 0.01)
    rule.started = time.monotonic() - 0.6
    assert rule(*noisy) and "would not fit in the time budget" in rule.why
    # ±40% per pair: after MAX_RUNNER_UP_PAIRS pairs the interval projected to 40 pairs is still far
    # wider than ±2%, so pairs stop; ±10% per pair at the same count projects close enough to go on
    wild = _sessions(0.5, 0.40, MAX_RUNNER_UP_PAIRS, ab.blocks, ab.block_size, seed=5)
    rule = stop_rule(ab, 0.5, 0.02, PRECISION)
    assert rule(*wild) and "would not narrow it" in rule.why
    closer = _sessions(0.5, 0.06, MAX_RUNNER_UP_PAIRS, ab.blocks, ab.block_size, seed=6)
    assert not stop_rule(ab, 0.5, 0.02, PRECISION)(*closer)


def test_measure_ratio_pairs_fresh_sessions_through_the_runner_and_caps_a_decision_only_comparison(tmp_path):
    from edgeproof.measure.runner import ProfileOptions
    from edgeproof.records import RuntimeSettings
    from edgeproof.runners import runner_for
    from edgeproof.search import measure_ratio
    from edgeproof.search._confirm import MAX_RUNNER_UP_PAIRS, PAIRS

    model = quadrant_model(tmp_path / "q.onnx")
    options = ProfileOptions(cold_start_repeats=0, profile_nodes=False)
    with runner_for("host", check_fitness=False) as runner:
        preps = (runner.prepare(model, options), runner.prepare(model, options))
        one = RuntimeSettings()
        base, cand, ab, _ = measure_ratio(runner, preps, (one, one), options, p50_ms=0.02, precision=None)
    assert ab.max_pairs == MAX_RUNNER_UP_PAIRS and PAIRS <= len(base.sessions) == len(cand.sessions) <= MAX_RUNNER_UP_PAIRS
    assert base.interleave.partner_run_id == cand.run_id and cand.interleave.partner_run_id == base.run_id
    assert all(len(s.samples_ms) == ab.blocks * ab.block_size for s in base.sessions)
