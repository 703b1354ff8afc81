"""Per-slice accuracy as a contract asks for it: its data, its slices, against its float reference."""

from __future__ import annotations

from pathlib import Path

from edgeproof.data import Dataset, Slice, check_fits_model, load_dataset, make_slices
from edgeproof.evaluate import evaluate, reference_outputs
from edgeproof.model import Model, as_model
from edgeproof.records import Evaluation


def contract_slices(contract, model: Model | str | Path) -> tuple[Dataset, list[Slice]] | None:
    """The contract's dataset and slices, checked against the model's input; None without [data]/slices."""
    if contract.data_entry is None or not contract.slices:
        return None
    specs = contract.slice_specs()
    dataset = load_dataset(contract.data_entry, contract.base_dir, extra_parts=[s.part for s in specs])
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


def evaluate_for_contract(contract, model: Model | str | Path) -> Evaluation | None:
    """Evaluate ``model`` on every slice the contract declares, vs the contract's reference model."""
    model = as_model(model)
    made = contract_slices(contract, model)
    if made is None:
        return None
    dataset, slices = made
    reference = reference_outputs(reference_model(contract, model), slices)
    return evaluate(model.path, reference, slices, dataset.id, metric_name="top1")
