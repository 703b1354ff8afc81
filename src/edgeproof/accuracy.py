"""Per-slice metrics as a contract asks for them: its data through its pipeline, its slices, its metric
per output, against its float reference."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgeproof.data import Dataset, Slice, check_fits_model, load_dataset, make_slices
from edgeproof.data.pipeline import Pipeline
from edgeproof.evaluate import OutputMetric, SliceEvaluator, output_metric
from edgeproof.model import Model, as_model
from edgeproof.records import Evaluation


def contract_pipeline(contract) -> Pipeline | None:
    """The contract's ``[pipeline]``, loaded (its files checked and hashed), or None without one."""
    if contract.pipeline is None:
        return None
    return Pipeline.load(contract.pipeline, contract.base_dir)


def with_pipeline(dataset: Dataset, pipeline: Pipeline | None, feeds: dict | None = None) -> Dataset:
    """``dataset`` whose rows are raw sensor data that ``pipeline`` preprocesses for the model, and
    whose runs also feed ``feeds`` (the contract's ``[model.feeds]``, by input name)."""
    if pipeline is not None:
        dataset = replace(dataset, pipeline=pipeline)
    return replace(dataset, feeds=dict(feeds)) if feeds else dataset


def contract_metrics(contract) -> list[OutputMetric] | None:
    """``[evaluation.outputs]`` as metrics, user functions loaded; None (top-1 on the first output) without it."""
    outs = contract.evaluation.outputs
    if not outs:
        return None
    return [output_metric(e.metric, name, e.better_high, e.labels, contract.base_dir) for name, e in outs.items()]


def contract_dataset(contract, extra_parts: list[str] | None = None) -> Dataset | None:
    """The contract's ``[data]`` (plus ``extra_parts``) through its ``[pipeline]``; None without ``[data]``."""
    if contract.data_entry is None:
        return None
    parts = extra_parts if extra_parts is not None else [s.part for s in contract.slice_specs()]
    dataset = load_dataset(contract.data_entry, contract.base_dir, extra_parts=parts)
    return with_pipeline(dataset, contract_pipeline(contract), contract.feed_arrays())


def contract_slices(contract, model: Model | str | Path, pipeline: Pipeline | None = None) -> tuple[Dataset, list[Slice]] | None:
    """The contract's dataset (through its pipeline) and slices, checked against the model's input;
    None without [data]/slices."""
    if contract.data_entry is None or not contract.slices:
        return None
    specs = contract.slice_specs()
    dataset = load_dataset(contract.data_entry, contract.base_dir, extra_parts=[s.part for s in specs])
    dataset = with_pipeline(dataset, pipeline if pipeline is not None else contract_pipeline(contract), contract.feed_arrays())
    check_fits_model(dataset, model)
    return dataset, make_slices(dataset, specs)


def reference_model(contract, model: Model | str | Path) -> Model:
    """The float reference drops are measured against: the contract's [model] path, else the model itself
    (``model`` is reused, not read again, when the contract names the same file)."""
    model = as_model(model)
    if not contract.model.path:
        return model
    reference = contract.resolve(contract.model.path)
    return model if reference == model.path.resolve() else Model.load(reference)


def contract_evaluator(contract, model: Model | str | Path, dataset: Dataset, slices: list[Slice]) -> SliceEvaluator:
    """The judge of any variant on the contract's slices: its reference run once, its metric per
    output, its pipeline's postprocessing."""
    return SliceEvaluator.for_reference(
        reference_model(contract, model),
        slices,
        dataset.id,
        metric_name="top1",
        metrics=contract_metrics(contract),
        pipeline=dataset.pipeline,
        policy=contract.evaluation.policy.min_confidence if contract.evaluation.policy else None,
    )


def evaluate_for_contract(contract, model: Model | str | Path) -> Evaluation | None:
    """Evaluate ``model`` on every slice the contract declares, vs the contract's reference model."""
    model = as_model(model)
    made = contract_slices(contract, model)
    if made is None:
        return None
    dataset, slices = made
    return contract_evaluator(contract, model, dataset, slices)(model.path)
