"""Simulated candidates on one board are compared on the simulator's within-board spread, not on the
board profile's ±20% validation interval, which they share; runs of different profiles do not share it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeproof.contract import evaluate, load_contract
from edgeproof.figures import figures_of
from edgeproof.gate import latency_ratio, ratio_clause
from edgeproof.search import Candidate, choose, prune
from edgeproof.simulate import simulate_run
from edgeproof.simulate.run import latency_interval_ms
from edgeproof.simulate.spread import shared_profile
from edgeproof.targets.catalog import CATALOG_DIR

BOARD = "pi5-validated-20"
SIM = {"sessions": 5, "samples_per_session": 200, "seed": 0}


def conv_chain(path: Path, convs: int) -> Path:
    """``convs`` 3x3 convolutions 32→32 at 16x16 with ReLU: dense work the Pi 5 profile costs by FLOPs."""
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i in range(convs):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (32, 32, 3, 3)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [cur, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        cur = "y" if i == convs - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [cur]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 16])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory) -> Path:
    """The Pi 5 profile as a board whose validation against published figures gave ±20%."""
    out = tmp_path_factory.mktemp("catalog")
    text = (CATALOG_DIR / "raspberry-pi-5.toml").read_text()
    text = re.sub(r'^id = ".*"$', f'id = "{BOARD}"', text, count=1, flags=re.M)
    text = re.sub(r"^interval_rel = .*$", "interval_rel = 0.2", text, count=1, flags=re.M)
    (out / f"{BOARD}.toml").write_text(text)
    (out / "firmware").mkdir()
    firmware = (CATALOG_DIR.parent / "firmware" / "raspberry-pi-5.toml").read_text()
    (out / "firmware" / f"{BOARD}.toml").write_text(firmware.replace('"raspberry-pi-5"', f'"{BOARD}"'))
    return out


@pytest.fixture(scope="module")
def pair(board_dir, tmp_path_factory):
    """Two candidates on the board, the second 5% slower: 21 convolutions against 20."""
    tmp = tmp_path_factory.mktemp("models")
    fast = simulate_run(conv_chain(tmp / "fast.onnx", 20), BOARD, catalog_dirs=[board_dir], **SIM)
    slow = simulate_run(conv_chain(tmp / "slow.onnx", 21), BOARD, catalog_dirs=[board_dir], **SIM)
    return fast, slow


def test_each_candidate_carries_the_profiles_interval_and_the_two_overlap(pair):
    fast, slow = pair
    assert shared_profile(fast, slow)
    assert slow.latency.p50_ms / fast.latency.p50_ms == pytest.approx(1.05, abs=0.01)
    (f_low, f_high), (s_low, _) = latency_interval_ms(fast, "p50_ms"), latency_interval_ms(slow, "p50_ms")
    assert f_high / fast.latency.p50_ms == pytest.approx(1.2) and fast.latency.p50_ms / f_low == pytest.approx(1.2)
    assert s_low < fast.latency.p50_ms < f_high  # on the absolute intervals the two could not be told apart


def test_the_gate_decides_a_5_percent_regression_on_the_within_board_spread(pair):
    fast, slow = pair
    est = latency_ratio(fast, slow, 0.5)
    assert est is not None and 1.0 < est.low < est.ratio < est.high < 1.10
    assert ratio_clause("p50", est, 2.0, slow.latency_provenance).status == "fail"  # beyond 2%: a regression
    assert ratio_clause("p50", est, 10.0, slow.latency_provenance).status == "pass"  # within 10%


def test_the_search_ranks_on_the_simulators_spread_and_picks_the_faster(pair, tmp_path):
    contract_path = tmp_path / "contract.toml"
    contract_path.write_text('[contract]\nname = "w"\n[budgets]\np95_ms = "1 s"\n[preferences]\nminimize = ["p50_ms"]\n')
    contract = load_contract(contract_path)
    fast, slow = (_candidate(name, record, contract) for name, record in zip(("fast", "slow"), pair))
    for c in (fast, slow):  # each figure's interval is the simulator's spread (a few %), not the profile's ±20%
        low, high = c.figures["p50_ms"].interval
        assert high / low < 1.05
    selection = choose([slow, fast], ["p50_ms"])
    assert selection.chosen == "fast"
    step = next(s for s in selection.steps if s.metric == "p50_ms")
    assert step.kept == ["fast"] and step.dropped == ["slow"]
    assert prune([fast, slow], ["p50_ms"]) == {}  # within the simulator's spread + the 2% tie tolerance: both stay
    far = _candidate("far", pair[1].model_copy(update={"latency": _scaled(pair[1].latency, 1.05)}), contract)
    assert set(prune([fast, far], ["p50_ms"])) == {"far"}  # 10% apart: pruned, on spreads that never reach ±20%


def test_runs_of_different_profiles_are_compared_with_both_profiles_errors(pair, board_dir):
    fast, slow = pair
    other = slow.model_copy(
        update={"simulation": slow.simulation.model_copy(update={"profile": slow.simulation.profile.replace("/fw-", "-older/fw-")})}
    )
    assert not shared_profile(fast, other)
    est = latency_ratio(fast, other, 0.5)
    assert est is not None and est.low < 1.0 < est.high and "different profiles" in est.method
    assert ratio_clause("p50", est, 3.0, other.latency_provenance).status == "pass"  # no evidence of a regression


def _candidate(cid: str, record, contract) -> Candidate:
    verdict = evaluate(contract, record)
    return Candidate(
        id=cid,
        variant=cid,
        variant_sha256=cid * 8,
        variant_path=f"/nowhere/{cid}.onnx",
        precision="fp32",
        cache_hit=False,
        target=record.target.id,
        power_mode=record.target.power_mode,
        kind=record.kind,
        run_id=record.run_id,
        figures=figures_of(record),
        feasible=verdict.passed,
        verdict=verdict,
        stage="full",
        samples=record.latency.n_samples,
    )


def _scaled(stats, factor: float):
    """Latency statistics with every figure and interval ``factor`` times as long."""
    ci = {k: v.model_copy(update={"low": v.low * factor, "high": v.high * factor}) for k, v in stats.ci.items()}
    keys = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")
    return stats.model_copy(update={**{k: getattr(stats, k) * factor for k in keys}, "ci": ci})
