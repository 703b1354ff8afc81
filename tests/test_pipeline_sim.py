"""A contract's pipeline on a simulated board: built-in and ONNX steps costed there, a Python step not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from conftest import ROOT
from edgeproof.accuracy import contract_dataset, contract_pipeline
from edgeproof.contract import evaluate, load_contract
from edgeproof.data.pipeline import Pipeline, PipelineSpec, StepSpec, step_work
from edgeproof.measure.runner import ProfileOptions, feeds_for_contract
from edgeproof.measure.stages import stage_options
from edgeproof.records import RunRecord
from edgeproof.runners.simulated import SimulatedRunner
from edgeproof.simulate.pipeline import builtin_cost
from edgeproof.simulate.point import operating_point
from edgeproof.targets import get_target
from edgeproof.targets.firmware import resolve_firmware

GLYPHS = ROOT / "examples" / "glyphs"
BOARD = "raspberry-pi-5"
QUICK = {"min_sessions": 2, "max_sessions": 2, "samples_per_session": 40, "warmup": 0}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture
def glyphs(tmp_path) -> Path:
    folder = tmp_path / "glyphs"
    shutil.copytree(GLYPHS, folder, ignore=shutil.ignore_patterns("__pycache__", "make.py"))
    return folder


def on_board(model: Path, options: ProfileOptions) -> RunRecord:
    with SimulatedRunner(BOARD) as runner:
        return runner.run(runner.prepare(model, options), options=options)


def contract_run(folder: Path) -> tuple[RunRecord, object]:
    """The glyphs model on the board, fed and staged as `edgeproof check --target BOARD` does."""
    contract = load_contract(folder / "edgeproof.toml")
    dataset = contract_dataset(contract)
    options = stage_options(feeds_for_contract(ProfileOptions(**QUICK), contract, dataset), contract, dataset)
    return on_board(folder / "model.onnx", options), contract


def p95_clause(contract, record: RunRecord):
    return next(c for c in evaluate(contract, record).clauses if c.clause == "budgets.p95_ms")


def test_built_in_steps_on_a_board_give_stage_figures_and_the_pipeline_budget_is_judged(glyphs):
    record, contract = contract_run(glyphs)
    stages = record.stages
    assert stages is not None and stages.unavailable is None and stages.total is not None
    by = {s.name: s for s in stages.stages}
    assert by["pre"].p50_ms > 0 and by["post"].p50_ms > 0
    assert by["pre"].provenance.startswith(f"simulated:{BOARD}@") and "CPU roofline" in by["pre"].provenance
    assert by["model"].provenance == record.latency_provenance and stages.total.provenance.startswith(f"simulated:{BOARD}@")
    assert by["model"].p95_ms == pytest.approx(record.latency.p95_ms)  # a CPU-only board copies nothing
    assert sum(s.mean_ms for s in stages.stages) == pytest.approx(stages.total.mean_ms)
    # where each step's figure comes from is in the record
    lines = [a for a in record.simulation.assumptions if a.startswith("pipeline ")]
    assert len(lines) == 5 and any("softmax" in a and "Softmax kernel" in a for a in lines)
    assert any(a.startswith("pipeline pre step cast(dtype=float32): 0.0 µs (nothing to do") for a in lines)

    judged = p95_clause(contract, record)
    assert judged.status == "pass" and judged.value == pytest.approx(stages.total.p95_ms) and "pipeline scope" in judged.note
    # a budget between the session's p95 and the pipeline's fails: pre and post count
    between = (record.latency.p95_ms + stages.total.p95_ms) / 2
    contract_path = glyphs / "edgeproof.toml"
    contract_path.write_text(contract_path.read_text().replace('p95_ms = "20 ms"', f"p95_ms = {between}"))
    assert p95_clause(load_contract(contract_path), record).status == "fail"


def _pre_ms(pipeline: Pipeline, side: int) -> float:
    raw = np.random.default_rng(0).uniform(0, 255, (3, side, side, 3)).astype(np.float32)
    options = ProfileOptions(shapes={"image": (1, 3, side, side)}, pipeline=pipeline, pipeline_rows=raw, **QUICK)
    stages = on_board(GLYPHS / "model.onnx", options).stages
    assert stages is not None and stages.unavailable is None
    pre = stages.stage("pre")
    assert pre is not None
    return pre.mean_ms


def test_the_pre_stage_grows_with_the_image_by_its_work():
    """On the board, each built-in step costs one dispatch plus time for work proportional to the
    pixels: twice the side, four times that part, exactly."""
    pipeline = contract_pipeline(load_contract(GLYPHS / "edgeproof.toml"))
    assert pipeline is not None
    small, large = _pre_ms(pipeline, 64), _pre_ms(pipeline, 128)
    assert large > small > 0

    target = get_target(BOARD)
    op = operating_point(target, resolve_firmware(target, None))
    dispatch_us = target.cpu.op_overhead_us * target.cpu.max_clock_ghz / op.cpu_clock_ghz
    outputs = {"logits": np.zeros((1, 10), np.float32)}

    def step_us(side: int) -> list[float]:
        raw = np.zeros((1, side, side, 3), np.float32)
        pre, _ = pipeline.trace(raw, outputs)
        return [builtin_cost("pre", step_work(t), target, op).time_us for t in pre]

    at_64, at_128 = step_us(64), step_us(128)
    assert at_64[-1] == at_128[-1] == 0.0, "the cast to float32 has nothing to do"
    for a, b in zip(at_64[:-1], at_128[:-1], strict=True):  # scale, normalize, layout
        assert a > dispatch_us and b - dispatch_us == pytest.approx(4 * (a - dispatch_us), rel=1e-9)


def test_an_onnx_step_is_costed_as_a_graph_on_the_board(tmp_path):
    """preprocess = "pre.onnx" (NHWC → NCHW, scaled): a graph on the board, not a stand-in."""
    scale = nh.from_array(np.array(1 / 255, np.float32), "k")
    graph = h.make_graph(
        [h.make_node("Transpose", ["raw"], ["t"], perm=[0, 3, 1, 2]), h.make_node("Mul", ["t", "k"], ["x"])],
        "pre",
        [h.make_tensor_value_info("raw", T.FLOAT, ["n", "h", "w", 3])],
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, "h", "w"])],
        [scale],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "pre.onnx"))
    pipeline = Pipeline.load(PipelineSpec(raw_layout="NHWC", raw_range=[0.0, 255.0], preprocess="pre.onnx"), tmp_path)
    raw = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    options = ProfileOptions(shapes={"image": (1, 3, 32, 32)}, pipeline=pipeline, pipeline_rows=raw, **QUICK)
    record = on_board(GLYPHS / "model.onnx", options)
    assert record.stages is not None and record.stages.stage("pre").p50_ms > 0
    [line] = [a for a in record.simulation.assumptions if a.startswith("pipeline pre step onnx(pre.onnx)")]
    assert "costed as a graph: 2 kernels" in line and f"simulated:{BOARD}@" in line


def test_a_python_step_on_a_board_leaves_the_pipeline_budget_unverified_saying_why(glyphs):
    (glyphs / "pre.py").write_text(
        "import numpy as np\n\n\ndef pre(frames):\n"
        f"    x = (frames / 255.0 - np.array({MEAN}, np.float32)) / np.array({STD}, np.float32)\n"
        "    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)\n"
    )
    contract = glyphs / "edgeproof.toml"
    text = contract.read_text()
    start, end = text.index("preprocess = ["), text.index("postprocess =")
    contract.write_text(text[:start] + 'preprocess = "pre.py:pre"\n' + text[end:])
    record, loaded = contract_run(glyphs)
    assert record.stages is not None and record.stages.total is None
    assert "pre.py:pre cannot run on raspberry-pi-5" in (record.stages.unavailable or "")
    judged = p95_clause(loaded, record)
    assert judged.status == "unverified" and "pre.py:pre cannot run on raspberry-pi-5" in judged.provenance


def test_the_work_of_each_built_in_step_follows_what_it_reads_and_writes():
    """Bytes and operations of the built-in steps, counted from one traced batch."""
    spec = PipelineSpec(
        raw_layout="NHWC",
        preprocess=[
            StepSpec(op="resize", size=[8, 6]),
            StepSpec(op="crop", size=[4, 4]),
            StepSpec(op="normalize", mean=MEAN, std=STD),
            StepSpec(op="layout", to="NCHW"),
            StepSpec(op="layout", to="NCHW"),
        ],
        postprocess=[StepSpec(op="topk", k=3)],
    )
    raw = np.zeros((1, 16, 12, 3), np.float32)
    pre, post = Pipeline.load(spec, ".").trace(raw, {"logits": np.zeros((1, 10), np.float32)})
    resize, crop, norm, layout, again = (step_work(t) for t in pre)
    assert (resize.bytes_read, resize.bytes_written, resize.flops) == (16 * 12 * 3 * 4, 8 * 6 * 3 * 4, 2 * 4 * 8 * 6 * 3)
    assert (crop.bytes_read, crop.bytes_written, crop.flops) == (4 * 4 * 3 * 4, 4 * 4 * 3 * 4, 0)
    assert norm.flops == 2 * 4 * 4 * 3 and layout.like == "Transpose" and layout.flops == 0
    assert (again.bytes_read, again.flops) == (0, 0), "a layout already in place does nothing"
    [topk] = (step_work(t) for t in post)
    assert topk.flops == 2 * 10 and topk.bytes_written == 3 * 8
