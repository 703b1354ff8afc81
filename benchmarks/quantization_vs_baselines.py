"""edgeproof's chosen variant vs onnxruntime `quantize_static` and NNCF post-training quantization, both with
default settings, on the digits model: p50 speed-up over fp32 from interleaved fresh sessions, and accuracy on
every slice of the digits contract, all in one run.

Speed: every round opens a fresh session per arm (in random order) and times them in alternating
blocks, the leading arm rotating block to block, so machine drift cannot favour one arm. Speed-up
is fp32 p50 / arm p50 per round; the result keeps every round. The target counts as met when the
chosen variant's median speed-up is at least the best baseline's minus 1% (the spread of
interleaved p50 ratios measured on this host, see NOTES) and every slice holds its contract floor.
Every arm runs at the runtime settings the search chose (threads, graph optimisation).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from _common import DIGITS_MODEL, ROOT, write_result
from edgeproof.accuracy import contract_slices, reference_model
from edgeproof.contract import load_contract
from edgeproof.evaluate import SliceEvaluator
from edgeproof.measure.scenarios import back_to_back
from edgeproof.measure.session import open_session, run_checked
from edgeproof.records import RuntimeSettings
from edgeproof.search import SearchOptions, optimize

CONTRACT = ROOT / "examples" / "digits" / "edgeproof.toml"
QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 7
BLOCKS, BLOCK_SIZE, WARMUP = 20, 20, 50
NOISE_ALLOWANCE = 0.01


def edgeproof_choice(contract) -> tuple[dict, Path, RuntimeSettings]:
    """Run the search as `edgeproof optimize` does (reduced space with --quick) and return its pick."""
    options = SearchOptions(
        threads=(1,) if QUICK else tuple(sorted({1, min(2, os.cpu_count() or 1)})),
        opt_levels=("all",) if QUICK else ("all", "basic"),
    )
    started = time.monotonic()
    result = optimize(DIGITS_MODEL, contract, options).result
    [outcome] = result.outcomes
    if outcome.selection.chosen is None:
        raise SystemExit(f"edgeproof found no feasible candidate: {outcome.explanation.why if outcome.explanation else 'none measured'}")
    chosen = result.candidate(outcome.selection.chosen)
    settings = RuntimeSettings(intra_op_threads=chosen.threads or 1, graph_optimization_level=chosen.opt_level or "all")
    summary = {
        "candidate": chosen.id,
        "variant": chosen.variant,
        "recipe": next(v.recipe for v in result.variants if v.sha256 == chosen.variant_sha256),
        "search_p50_ms": chosen.value("p50_ms"),
        "search_p95_ms": chosen.value("p95_ms"),
        "search_candidates": len(result.candidates),
        "search_variants": len(result.variants),
        "search_s": time.monotonic() - started,
        "selection": outcome.selection.model_dump(mode="json", exclude={"considered"}),
    }
    return summary, Path(chosen.variant_path), settings


def ort_default(model: Path, calibration: np.ndarray, out: Path) -> dict:
    """onnxruntime's quantize_static with every setting at its default; calibration rows fed one at a time."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Rows(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter(calibration)

        def get_next(self) -> dict | None:
            row = next(self._rows, None)
            return None if row is None else {"input": row[None]}

    quantize_static(str(model), str(out), Rows())
    return {
        "status": "ok",
        "call": "onnxruntime.quantization.quantize_static(model, out, reader) with defaults",
        "calibration_rows": len(calibration),
    }


def nncf_default(model: Path, calibration: np.ndarray, out: Path) -> dict:
    """NNCF's ONNX post-training quantization (nncf.quantize) with its defaults."""
    try:
        import nncf
    except ImportError as exc:
        return {"status": "unavailable", "why": f"nncf does not import: {exc}"}
    from importlib.metadata import version

    dataset = nncf.Dataset(list(calibration), lambda row: {"input": row[None]})
    onnx.save(nncf.quantize(onnx.load(str(model)), dataset), str(out))
    return {
        "status": "ok",
        "call": "nncf.quantize(onnx_model, nncf.Dataset(rows)) with defaults",
        "nncf": version("nncf"),
        "calibration_rows": len(calibration),
    }


def interleaved_p50(arms: dict[str, Path], feeds: list[dict], settings: RuntimeSettings, seed: int = 0) -> dict[str, dict]:
    """Per-round p50 (ms) of every arm, sessions fresh each round, blocks alternating with a rotating lead."""
    rng = np.random.default_rng(seed)
    names = list(arms)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    pooled: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(ROUNDS):
        sessions = {}
        for name in rng.permutation(names):
            sessions[name] = open_session(arms[name], settings)
            run_checked(sessions[name], feeds[0], str(arms[name]))
        for name in names:
            back_to_back(sessions[name].run, feeds, WARMUP)
        samples: dict[str, list[float]] = {n: [] for n in names}
        for block in range(BLOCKS):
            lead = block % len(names)
            for name in names[lead:] + names[:lead]:
                samples[name].extend(back_to_back(sessions[name].run, feeds, BLOCK_SIZE))
        for name in names:
            per_round[name].append(float(np.median(samples[name])))
            pooled[name].extend(samples[name])
        del sessions
    return {
        n: {
            "p50_ms_per_round": per_round[n],
            "pooled_p50_ms": float(np.median(pooled[n])),
            "pooled_p95_ms": float(np.quantile(pooled[n], 0.95)),
        }
        for n in names
    }


def main() -> None:
    # Candidates land in a throwaway history and variant cache, not the developer's .edgeproof/.
    os.environ["EDGEPROOF_HOME"] = tempfile.mkdtemp(prefix="edgeproof-bench-")
    contract = load_contract(CONTRACT)
    dataset, slices = contract_slices(contract, DIGITS_MODEL)
    judge = SliceEvaluator.for_reference(reference_model(contract, DIGITS_MODEL), slices, dataset.id, metric_name="top1")
    calibration = dataset.calibration.x
    work = Path(os.environ["EDGEPROOF_HOME"])

    print("running the edgeproof search ...", flush=True)
    chosen, chosen_path, settings = edgeproof_choice(contract)
    arms: dict[str, Path] = {"fp32": DIGITS_MODEL, "edgeproof": chosen_path}
    baselines = {}
    for name, make in (("ort_quantize_static_default", ort_default), ("nncf_quantize_default", nncf_default)):
        print(f"building {name} ...", flush=True)
        out = work / f"{name}.onnx"
        try:
            baselines[name] = make(DIGITS_MODEL, calibration, out)
        except Exception as exc:  # a baseline that fails is recorded as such, not hidden
            baselines[name] = {"status": "failed", "why": f"{type(exc).__name__}: {exc}"}
        if baselines[name]["status"] == "ok":
            arms[name] = out

    print(f"timing {len(arms)} arms interleaved, {ROUNDS} rounds of fresh sessions ...", flush=True)
    feeds = [{"input": slices[0].x[i : i + 1]} for i in range(8)]
    timing = interleaved_p50(arms, feeds, settings)
    fp32_rounds = np.array(timing["fp32"]["p50_ms_per_round"])
    results = {}
    for name, path in arms.items():
        speedups = fp32_rounds / np.array(timing[name]["p50_ms_per_round"])
        evaluation = judge(path)
        failing = judge.failures(evaluation)
        results[name] = {
            **timing[name],
            "speedup_vs_fp32_per_round": speedups.tolist(),
            "speedup_vs_fp32_median": float(np.median(speedups)),
            "speedup_vs_fp32_range": [float(speedups.min()), float(speedups.max())],
            "slices": {
                s: {
                    "accuracy": m.accuracy,
                    "reference_accuracy": m.reference_accuracy,
                    "drop_pp": m.drop_pp,
                    "max_drop_pp": contract.slices[s].max_drop_pp,
                    "within_floor": s not in failing,
                }
                for s, m in evaluation.slices.items()
            },
            "every_slice_within_contract": not failing,
            "size_bytes": path.stat().st_size,
        }
    baseline_names = [n for n in arms if n not in ("fp32", "edgeproof")]
    best = max(baseline_names, key=lambda n: results[n]["speedup_vs_fp32_median"], default=None)
    ours = results["edgeproof"]["speedup_vs_fp32_median"]
    verdict = {
        "best_baseline": best,
        "edgeproof_speedup": ours,
        "best_baseline_speedup": results[best]["speedup_vs_fp32_median"] if best else None,
        "at_least_as_fast": best is None or ours >= results[best]["speedup_vs_fp32_median"] * (1 - NOISE_ALLOWANCE),
        "edgeproof_within_contract": results["edgeproof"]["every_slice_within_contract"],
        "rule": f"median per-round p50 speed-up >= best baseline's × {1 - NOISE_ALLOWANCE:g}, and every slice within its floor",
    }
    verdict["target_met"] = bool(verdict["at_least_as_fast"] and verdict["edgeproof_within_contract"])
    write_result(
        "quantization_vs_baselines",
        {
            "model": str(DIGITS_MODEL.relative_to(ROOT)),
            "contract": str(CONTRACT.relative_to(ROOT)),
            "quick": QUICK,
            "settings": settings.model_dump(),
            "timing_design": {
                "rounds": ROUNDS,
                "blocks": BLOCKS,
                "block_size": BLOCK_SIZE,
                "warmup": WARMUP,
                "timer": "perf_counter_ns",
                "feeds": "8 test rows, batch 1, cycled",
            },
            "edgeproof_choice": chosen,
            "baselines": baselines,
            "arms": results,
            "verdict": verdict,
        },
    )
    for name, r in results.items():
        print(
            f"{name:30s} p50 {r['pooled_p50_ms']:.4f} ms  speed-up ×{r['speedup_vs_fp32_median']:.2f} "
            f"[{r['speedup_vs_fp32_range'][0]:.2f}–{r['speedup_vs_fp32_range'][1]:.2f}]  within contract: {r['every_slice_within_contract']}"
        )
    print(f"target met: {verdict['target_met']} ({verdict['rule']})")


if __name__ == "__main__":
    main()
