"""The report's decision-first parts on small records: which candidates the first screen shows, and the drop heatmap's red cells."""

from __future__ import annotations

from edgeproof.records import ClauseResult, Evaluation, Figure, ModelRef, SliceMetrics, Verdict
from edgeproof.report._accuracy import Row, breaks, drop_heatmap, failed_slices
from edgeproof.report._collect import Found
from edgeproof.report._decision import CHOSEN, FP32, FRONT, MAX_SHOWN, decision
from edgeproof.report._latency import run_groups
from edgeproof.search import Candidate, SearchResult, Selection, TargetOutcome

PASSING = Verdict(target="host", outcome="pass", passed=True, clauses=[])


def _candidate(cid: str, p95_ms: float, precision: str = "int8-static") -> Candidate:
    return Candidate(
        id=cid,
        variant=f"{precision}-{cid}",
        variant_sha256=f"{cid:0>64}",
        variant_path=f"{cid}.onnx",
        precision=precision,
        cache_hit=False,
        target="host",
        run_id=f"run-{cid}",
        figures={"p95_ms": Figure(value=p95_ms, unit="ms", provenance="measured:perf_counter_ns", interval=(p95_ms * 0.9, p95_ms * 1.1))},
        feasible=True,
        verdict=PASSING,
    )


def _search(front: int) -> tuple[Found, TargetOutcome]:
    """A search on one target: fp32 (c00, off the front), a pick, and ``front`` candidates on the Pareto front."""
    fp32 = _candidate("c00", 9.0, precision="fp32")
    on_front = [_candidate(f"c{i:02d}", 1.0 + i) for i in range(1, front + 1)]
    chosen = on_front[2].id
    outcome = TargetOutcome(
        target="host",
        outcome="pass",
        candidates=[fp32.id, *(c.id for c in on_front)],
        pareto_axes=["p95_ms"],
        pareto=[c.id for c in reversed(on_front)],
        selection=Selection(chosen=chosen, considered=[c.id for c in on_front], steps=[], rel_tolerance=0.02),
    )
    model = ModelRef(path="model.onnx", name="model", sha256="f" * 64, size_bytes=1)
    result = SearchResult(
        model=model,
        contract_path="edgeproof.toml",
        contract_sha256="e" * 64,
        data=None,
        space={},
        variants=[],
        candidates=[fp32, *on_front],
        outcomes=[outcome],
        elapsed_s=1.0,
    )
    return Found("optimize/search.json", result), outcome


def test_decision_leads_with_the_pick_then_fp32_then_the_front_by_p95_and_caps_the_rest():
    found, outcome = _search(front=9)
    d = decision(found, outcome)
    assert [s.candidate.id for s in d.shown][:2] == ["c03", "c00"]
    assert d.shown[0].roles == (CHOSEN, FRONT) and d.shown[1].roles == (FP32,)
    rest = [s.candidate.id for s in d.shown[2:]]
    assert rest == ["c01", "c02", "c04", "c05"] and all(s.roles == (FRONT,) for s in d.shown[2:])
    assert len(d.shown) == MAX_SHOWN
    assert [c.id for c in d.more_front] == ["c06", "c07", "c08", "c09"]


def test_small_front_shows_everyone_once():
    found, outcome = _search(front=3)
    d = decision(found, outcome)
    assert [s.candidate.id for s in d.shown] == ["c03", "c00", "c01", "c02"] and d.more_front == []


def _slice(drop_pp: float) -> SliceMetrics:
    return SliceMetrics(
        slice_id="s" * 64,
        n=360,
        accuracy=0.95 - drop_pp / 100,
        reference_accuracy=0.95,
        drop_pp=drop_pp,
        agreement=0.97,
        mean_confidence=None,
        confidence_shift=None,
    )


def _evaluation(**drops: float) -> Evaluation:
    return Evaluation(dataset_id="d" * 64, reference_sha256="r" * 64, slices={name: _slice(v) for name, v in drops.items()})


def test_heatmap_is_red_exactly_where_a_floor_breaks_and_prints_each_drop_in_pp():
    floors = {"nominal": 1.0, "noise": 8.0}
    rows = [
        Row("c01 chosen · int8", "runs/c01.json", _evaluation(nominal=0.3, noise=8.5, blur=2.0)),
        Row("c02 Pareto front · int8", "runs/c02.json", _evaluation(nominal=1.0, noise=-0.5)),
    ]
    fig = drop_heatmap(rows, ["nominal", "noise", "blur"], floors)
    cells = fig.data[0]
    assert [list(r) for r in cells.text] == [["+0.30 pp", "+8.50 pp", "+2.00 pp"], ["+1.00 pp", "−0.50 pp", "not evaluated"]]
    red = [[z == 1.0 for z in r] for r in cells.z]
    # only the noise drop of c01 breaks its floor; a drop equal to the floor keeps it; blur states no floor
    assert red == [[False, True, False], [False, False, False]]
    assert cells.z[1][2] is None and cells.z[1][1] == 0.0
    assert "floor 1 pp" in cells.x[0] and "no floor" in cells.x[2]


def test_a_failing_verdict_makes_its_slice_red_even_where_no_floor_is_known():
    verdict = Verdict(
        target="host",
        outcome="fail",
        passed=False,
        clauses=[
            ClauseResult(
                clause="slices.blur.outputs.ink.max_increase_pct",
                status="fail",
                value=40.0,
                budget=20.0,
                unit="%",
                provenance="measured:evaluate(blur)",
            )
        ],
    )
    row = Row("c01", "runs/c01.json", _evaluation(nominal=0.1, blur=0.2), failed_slices(verdict))
    assert breaks(row, "blur", None) and not breaks(row, "nominal", 1.0)


def test_runs_outside_the_search_are_plotted_by_folder_never_past_the_legend_bound():
    runs = [Found(f"gate/run{i}.json", None) for i in range(8)] + [Found(f"sim/board{i}.json", None) for i in range(2)]
    groups = run_groups(runs)
    assert [len(g) for g in groups] == [MAX_SHOWN, 8 - MAX_SHOWN, 2]
    assert {f.rel.split("/")[0] for f in groups[-1]} == {"sim"}
