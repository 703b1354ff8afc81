"""Proof that the gate's statistics work: A/A false positives, detection of injected in-graph
regressions, and a naive rule judged on the same pairs, all in one run on this host.

Each trial is what `edgeproof gate --measure BASE CAND` does for latency: fresh session pairs,
interleaved blocks, 10 pairs and then 5 more at a time (up to 30) while the p50 or p95 clause is
undecided, then the gate's own ratio intervals and tolerances (p50 3%, p95 10%). The same trial's
first 10 pairs alone give the fixed design's verdict ("..._fixed_pairs"), and the naive rules.
Regressions are real extra work inside the model graph (edgeproof.slowdown), sized by a
calibration run here, and their true size is measured in a long interleaved run of its own.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import DIGITS_MODEL, write_result
from edgeproof.gate import paired_ratio_of, regression_decided
from edgeproof.measure.interleaved import InterleaveOptions, interleaved_sessions_until
from edgeproof.model import load_model, resolve_inputs, synthetic_feeds
from edgeproof.records import RuntimeSettings
from edgeproof.slowdown import add_busy_branch

SETTINGS = RuntimeSettings(intra_op_threads=1)
DEFAULT = InterleaveOptions()  # what the gate uses by default
P50_TOL, P95_TOL = 0.03, 0.10
NAIVE_FACTOR = 1.05
QUICK = "--quick" in sys.argv
TRIALS = {"aa": 200, "p50_5pct": 100, "p95_15pct": 100, "p50_10pct": 40}
if QUICK:
    TRIALS = {k: max(10, v // 10) for k, v in TRIALS.items()}


def _feeds(path: Path) -> list:
    return [synthetic_feeds(resolve_inputs(load_model(path)))]


def _sessions(base: Path, cand: Path, ab: InterleaveOptions, adaptive: bool = False):
    """Each arm's samples per session; ``adaptive`` adds pairs while the gate's clauses are undecided, as the gate does."""
    decided = regression_decided(P50_TOL * 100, P95_TOL * 100, ab.blocks, ab.block_size) if adaptive else None
    a, b = interleaved_sessions_until((base, cand), (_feeds(base), _feeds(cand)), SETTINGS, ab, decided)
    return [s.samples_ms for s in a], [s.samples_ms for s in b]


def true_ratio(base: Path, cand: Path) -> tuple[float, float]:
    """A long interleaved run (15 pairs × 60 blocks) for the injected regression's real size."""
    ab = InterleaveOptions(pairs=15, blocks=60, block_size=20, seed=99)
    a, b = _sessions(base, cand, ab)
    pa, pb = np.concatenate(a), np.concatenate(b)
    return float(np.median(pb) / np.median(pa)), float(np.quantile(pb, 0.95) / np.quantile(pa, 0.95))


def calibrate(base: Path, workdir: Path, targets: dict[str, tuple[int, float]]) -> dict[str, tuple[Path, int, tuple[float, float]]]:
    """Fit slowdown ≈ c0 + c1·chain from two probe sizes, separately for p50 (index 0) and p95
    (index 1), then build one model per target: name -> (statistic index, slowdown). The p95 fit is
    noisy, so each model's true size is measured and its chain corrected along the slope (up to two
    steps) until it lands within a point of the target. Returns name -> (model, chain, true ratios)."""
    probes = {chain: true_ratio(base, add_busy_branch(base, workdir / f"probe{chain}.onnx", chain)) for chain in (4, 16)}
    built = {}
    for name, (stat, slowdown) in targets.items():
        c1 = (probes[16][stat] - probes[4][stat]) / 12
        c0 = probes[4][stat] - 1.0 - 4 * c1
        chain = max(1, round((slowdown - c0) / c1))
        for attempt in range(3):
            path = add_busy_branch(base, workdir / f"{name}.onnx", chain)
            truth = true_ratio(base, path)
            step = round((slowdown - (truth[stat] - 1.0)) / c1)
            if abs(truth[stat] - 1.0 - slowdown) <= 0.01 or step == 0 or attempt == 2:
                break
            chain = max(1, chain + step)
        built[name] = (path, chain, truth)
    return built


def judge(a, b, ab: InterleaveOptions) -> dict:
    p50 = paired_ratio_of(a, b, ab.blocks, ab.block_size, 0.5)
    p95 = paired_ratio_of(a, b, ab.blocks, ab.block_size, 0.95)
    pooled_a, pooled_b = np.concatenate(a), np.concatenate(b)
    return {
        "p50_ratio": p50.ratio,
        "p50_fail": p50.low > 1 + P50_TOL,
        "p95_ratio": p95.ratio,
        "p95_fail": p95.low > 1 + P95_TOL,
        # the naive rule on the same pairs: all samples pooled, and on the first session alone
        "naive_pooled_fail": bool(np.quantile(pooled_b, 0.95) > NAIVE_FACTOR * np.quantile(pooled_a, 0.95)),
        "naive_single_fail": bool(np.quantile(b[0], 0.95) > NAIVE_FACTOR * np.quantile(a[0], 0.95)),
    }


def run_trials(base: Path, cand: Path, n: int, seed0: int) -> tuple[list[dict], float]:
    rows = []
    t0 = time.perf_counter()
    for i in range(n):
        ab = replace(DEFAULT, seed=seed0 + i)
        a, b = _sessions(base, cand, ab, adaptive=True)
        full, first = judge(a, b, ab), judge(a[: ab.pairs], b[: ab.pairs], ab)
        rows.append(
            {
                **{k: full[k] for k in ("p50_ratio", "p50_fail", "p95_ratio", "p95_fail")},
                "fixed_p50_fail": first["p50_fail"],
                "fixed_p95_fail": first["p95_fail"],
                # the naive rules see what a fixed design sees: the first pairs
                "naive_pooled_fail": first["naive_pooled_fail"],
                "naive_single_fail": first["naive_single_fail"],
                "pairs": len(a),
            }
        )
    return rows, (time.perf_counter() - t0) / n


def rate(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def main() -> None:
    base = DIGITS_MODEL
    with tempfile.TemporaryDirectory(prefix="edgeproof-gate-power-") as tmp:
        models = calibrate(base, Path(tmp), {"p50_5pct": (0, 0.05), "p50_10pct": (0, 0.10), "p95_15pct": (1, 0.15)})
        truth = {name: ratios for name, (_, _, ratios) in models.items()}
        result: dict = {"trials": TRIALS, "defaults": DEFAULT.__dict__, "tolerances": {"p50": P50_TOL, "p95": P95_TOL}, "cases": {}}
        aa, secs = run_trials(base, base, TRIALS["aa"], 1000)
        result["seconds_per_gate_latency_part"] = secs
        result["cases"]["aa"] = {
            "n": len(aa),
            "false_positive_p50": rate(aa, "p50_fail"),
            "false_positive_p95": rate(aa, "p95_fail"),
            "false_positive_any": float(np.mean([r["p50_fail"] or r["p95_fail"] for r in aa])),
            "false_positive_any_fixed_pairs": float(np.mean([r["fixed_p50_fail"] or r["fixed_p95_fail"] for r in aa])),
            "mean_pairs": rate(aa, "pairs"),
            "extended_share": float(np.mean([r["pairs"] > DEFAULT.pairs for r in aa])),
            "naive_pooled_false_positive": rate(aa, "naive_pooled_fail"),
            "naive_single_session_false_positive": rate(aa, "naive_single_fail"),
            "p50_ratio_2p5_97p5": [float(np.quantile([r["p50_ratio"] for r in aa], q)) for q in (0.025, 0.975)],
        }
        for name, (path, chain, _) in models.items():
            rows, secs_case = run_trials(base, path, TRIALS[name], 5000 + len(result["cases"]) * 1000)
            key = "p95_fail" if name.startswith("p95") else "p50_fail"
            result["cases"][name] = {
                "n": len(rows),
                "extra_matmuls": chain,
                "true_p50_ratio": truth[name][0],
                "true_p95_ratio": truth[name][1],
                "detection": rate(rows, key),
                "detection_fixed_pairs": rate(rows, "fixed_" + key),
                "mean_pairs": rate(rows, "pairs"),
                "seconds_per_gate_latency_part": secs_case,
                "detection_p50_clause": rate(rows, "p50_fail"),
                "detection_p95_clause": rate(rows, "p95_fail"),
                "naive_pooled_detection": rate(rows, "naive_pooled_fail"),
                "naive_single_session_detection": rate(rows, "naive_single_fail"),
            }
    c = result["cases"]
    result["targets"] = {
        "false_positive_any_le_0.01": c["aa"]["false_positive_any"] <= 0.01,
        "detect_p50_5pct_ge_0.95": c["p50_5pct"]["detection"] >= 0.95,
        "detect_p95_15pct_ge_0.90": c["p95_15pct"]["detection"] >= 0.90,
    }
    result["provenance"] = "measured:perf_counter_ns (interleaved sessions on this host)"
    for name, case in c.items():
        print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in case.items()})
    print("seconds per gate (latency part):", round(secs, 2), "targets:", result["targets"])
    write_result("gate_power" + ("_quick" if QUICK else ""), result)


if __name__ == "__main__":
    main()
