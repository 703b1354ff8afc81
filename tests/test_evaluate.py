"""Per-slice evaluation against the float reference (edgeproof.evaluate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from edgeproof.data import SliceSpec, TransformSpec, make_dataset, make_part, make_slices
from edgeproof.evaluate import (
    SliceEvaluator,
    compare,
    evaluate,
    floor_failures,
    infer,
    reference_outputs,
    worst_drop_pp,
)
from edgeproof.records import Evaluation

SIDE = 6
N_CLASSES = 3


def linear_model(path: Path, weights: np.ndarray, batch: int | str = "batch", softmax: bool = False) -> Path:
    """Flatten -> MatMul (-> Softmax): a classifier small enough to check by hand."""
    x = oh.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, SIDE, SIDE])
    y = oh.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, N_CLASSES])
    nodes = [
        oh.make_node("Flatten", ["input"], ["flat"]),
        oh.make_node("MatMul", ["flat", "w"], ["logits" if softmax else "scores"]),
    ]
    if softmax:
        nodes.append(oh.make_node("Softmax", ["logits"], ["scores"], axis=1))
    graph = oh.make_graph(nodes, "linear", [x], [y], [nh.from_array(weights.astype(np.float32), "w")])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def class_weights(seed: int, scale: float = 4.0) -> np.ndarray:
    w = np.random.default_rng(seed).normal(0.0, scale / SIDE, (SIDE * SIDE, N_CLASSES))
    # Zero-mean columns: the image's mean brightness then favours no class, the pattern decides.
    return (w - w.mean(axis=0)).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    w_ref = class_weights(0)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, (150, 1, SIDE, SIDE)).astype(np.float32)
    # Labels are the reference's own argmax on most rows, so its accuracy is high but not 1.
    y = (x.reshape(len(x), -1) @ w_ref).argmax(axis=1)
    y[::7] = (y[::7] + 1) % N_CLASSES
    ds = make_dataset(
        "synthetic",
        {
            "calibration": make_part("calibration", rng.uniform(0, 1, (10, 1, SIDE, SIDE)).astype(np.float32), np.zeros(10, np.int64), "t"),
            "test": make_part("test", x, y.astype(np.int64), "t"),
        },
    )
    specs = [
        SliceSpec(name="clean", kind="nominal", max_drop_pp=1.0),
        SliceSpec(name="dim", kind="stress", transforms=[TransformSpec(name="contrast", severity=0.9)], max_drop_pp=50.0),
        SliceSpec(name="holes", kind="tail", transforms=[TransformSpec(name="occlusion", severity=0.8)]),
    ]
    slices = make_slices(ds, specs)
    ref_path = linear_model(tmp / "ref.onnx", w_ref)
    cand_w = 0.6 * w_ref + 0.4 * class_weights(2)
    return {
        "tmp": tmp,
        "ds": ds,
        "slices": slices,
        "w_ref": w_ref,
        "cand_w": cand_w,
        "ref_path": ref_path,
        "cand_path": linear_model(tmp / "cand.onnx", cand_w),
        "reference": reference_outputs(ref_path, slices),
    }


def by_hand(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).astype(np.float64) @ w.astype(np.float64)


def test_metrics_match_a_hand_computation(setup):
    ev = evaluate(setup["cand_path"], setup["reference"], setup["slices"], setup["ds"].id)
    assert isinstance(ev, Evaluation) and ev.metric == "top1" and ev.dataset_id == setup["ds"].id
    conf = {}
    for s in setup["slices"]:
        cand, ref = by_hand(s.x, setup["cand_w"]), by_hand(s.x, setup["w_ref"])
        acc, ref_acc = np.mean(cand.argmax(1) == s.y), np.mean(ref.argmax(1) == s.y)
        m = ev.slices[s.name]
        assert m.slice_id == s.id and m.n == len(s.y)
        assert m.accuracy == pytest.approx(acc) and m.reference_accuracy == pytest.approx(ref_acc)
        assert m.drop_pp == pytest.approx((ref_acc - acc) * 100.0)
        assert m.agreement == pytest.approx(np.mean(cand.argmax(1) == ref.argmax(1)))
        conf[s.name] = softmax(cand).max(1).mean()
        assert m.mean_confidence == pytest.approx(conf[s.name], abs=1e-5)
        assert m.confidence_shift == pytest.approx(conf[s.name] - softmax(ref).max(1).mean(), abs=1e-5)
        assert ev.predictions[s.name] == cand.argmax(1).tolist()
        assert ev.labels[s.name] == s.y.tolist()
    assert min(m.agreement for m in ev.slices.values()) < 1.0, "the candidate must disagree somewhere to test anything"
    assert ev.slices["clean"].confidence_drop is None
    assert ev.slices["holes"].confidence_drop == pytest.approx(conf["clean"] - conf["holes"], abs=1e-5)
    assert worst_drop_pp(ev) == max(m.drop_pp for m in ev.slices.values())


def test_slice_evaluator_runs_the_reference_once_and_judges_any_variant(setup):
    judge = SliceEvaluator.for_reference(setup["ref_path"], setup["slices"], setup["ds"].id)
    direct = evaluate(setup["cand_path"], setup["reference"], setup["slices"], setup["ds"].id)
    assert judge(setup["cand_path"]) == direct
    assert judge.failures(direct) == floor_failures(direct, setup["slices"])


def test_the_reference_against_itself_has_no_drop(setup):
    ev = evaluate(setup["ref_path"], setup["reference"], setup["slices"], setup["ds"].id)
    for m in ev.slices.values():
        assert m.drop_pp == 0.0 and m.agreement == 1.0 and m.confidence_shift == 0.0
    assert floor_failures(ev, setup["slices"]) == {}


def test_floor_failures_name_the_slices_over_their_floor(setup):
    ev = compare(
        {s.name: np.roll(setup["reference"].outputs[s.name], 1, axis=1) for s in setup["slices"]},
        setup["reference"],
        setup["slices"],
        setup["ds"].id,
    )
    failing = floor_failures(ev, setup["slices"])
    assert set(failing) == {"clean", "dim"}, "holes has no floor, so it is reported but not judged"
    assert failing["clean"] == (ev.slices["clean"].drop_pp, 1.0)


def test_a_user_metric_replaces_top1(setup):
    def top2(outputs: np.ndarray, labels: np.ndarray) -> float:
        best_two = np.argsort(outputs, axis=1)[:, -2:]
        return float(np.mean((best_two == labels[:, None]).any(axis=1)))

    ev = evaluate(setup["cand_path"], setup["reference"], setup["slices"], setup["ds"].id, metric=top2, metric_name="top2")
    assert ev.metric == "top2"
    s = setup["slices"][0]
    assert ev.slices["clean"].accuracy == pytest.approx(top2(by_hand(s.x, setup["cand_w"]), s.y))
    assert (
        ev.slices["clean"].accuracy >= evaluate(setup["cand_path"], setup["reference"], setup["slices"][:1], "d").slices["clean"].accuracy
    )


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_models_are_fed_in_their_batch_size(setup, batch):
    path = linear_model(setup["tmp"] / f"fixed{batch}.onnx", setup["w_ref"], batch=batch)
    x = setup["slices"][0].x[:13]  # 13 is not a multiple of 4: the last run is padded and trimmed
    out = infer(path, x)
    assert out.shape == (13, N_CLASSES)
    np.testing.assert_allclose(out, by_hand(x, setup["w_ref"]), rtol=1e-4, atol=1e-4)


def test_probability_outputs_are_not_softmaxed_twice(setup):
    path = linear_model(setup["tmp"] / "probs.onnx", setup["w_ref"], softmax=True)
    s = setup["slices"][0]
    ev = evaluate(path, reference_outputs(path, setup["slices"]), setup["slices"], "d")
    probs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": s.x})[0]
    assert ev.slices["clean"].mean_confidence == pytest.approx(float(probs.max(1).mean()), abs=1e-5)


def test_a_confidence_policy_falls_back_to_the_reference_below_its_threshold(setup):
    """Rows whose top-1 probability is under the threshold take the reference's class: the rate and
    the accuracy with the policy match a hand computation, slice by slice."""
    evaluator = SliceEvaluator.for_reference(setup["ref_path"], setup["slices"], setup["ds"].id, metric_name="top1", policy=0.7)
    ev = evaluator(setup["cand_path"])
    for s in setup["slices"]:
        cand, ref = by_hand(s.x, setup["cand_w"]), by_hand(s.x, setup["w_ref"])
        low = softmax(cand).max(axis=1) < 0.7
        chosen = np.where(low, ref.argmax(axis=1), cand.argmax(axis=1))
        policy = ev.slices[s.name].policy
        assert policy is not None and policy.min_confidence == 0.7
        assert policy.fallback_rate == pytest.approx(low.mean())
        assert policy.accuracy == pytest.approx((chosen == s.y).mean())
    assert 0 < ev.slices["clean"].policy.fallback_rate < 1
    assert (
        SliceEvaluator.for_reference(setup["ref_path"], setup["slices"], setup["ds"].id)(setup["cand_path"]).slices["clean"].policy is None
    )


def test_the_contract_states_a_policy_and_refuses_a_threshold_outside_0_1(tmp_path):
    from edgeproof.contract import load_contract
    from edgeproof.errors import ContractError

    body = '[contract]\nname = "p"\n[budgets]\np95_ms = 5\n[evaluation.policy]\nmin_confidence = '
    (tmp_path / "ok.toml").write_text(body + "0.6\n")
    assert load_contract(tmp_path / "ok.toml").evaluation.policy.min_confidence == 0.6
    (tmp_path / "bad.toml").write_text(body + "1.5\n")
    with pytest.raises(ContractError, match="min_confidence"):
        load_contract(tmp_path / "bad.toml")
