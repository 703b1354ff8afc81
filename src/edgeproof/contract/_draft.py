"""Draft a contract from a model: its real inputs, a quick run's figures as proposed budgets, the
slices its data allows and the precisions its targets support, every proposal marked for review."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from edgeproof.contract._model import PRECISIONS
from edgeproof.errors import ContractError, EdgeproofError
from edgeproof.model import Model, dim_label, dtype_name, graph_inputs
from edgeproof.records import RunRecord, write_atomic

PROPOSAL = "PROPOSAL, review"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# headroom over the quick run's figure for each proposed budget (a quick run on a busy host is noisy)
HEADROOM = {"p95_ms": 1.0, "peak_rss_mib": 0.25, "load_time_ms": 1.0, "model_size_mib": 0.1}

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Draft:
    """What a draft is made of: the model, the data entry (as the contract writes it), the targets,
    and the quick run (None when it could not run: then no figure is proposed, and ``why`` says so)."""

    model: Model
    contract_path: Path
    data_entry: str | None
    targets: tuple[str, ...]
    record: RunRecord | None
    why_no_record: str = ""
    data_parts: tuple[str, ...] = ()
    data_inputs: tuple[str, ...] = ()
    # inputs the data does not hold, with the shape the quick run fed them (zeros; free dims as 1)
    fed_inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _round_up(value: float) -> float:
    """Two significant digits, rounded up, so a proposal reads like a budget a person would write."""
    if value <= 0:
        return value
    step = 10 ** (math.floor(math.log10(value)) - 1)
    return round(math.ceil(value / step) * step, 10)


def _free_name(name: str, i: int, label: int | str) -> str:
    """A free dim as a contract name: its own name when it is one, else ``batch`` or ``<input>_dim<i>``."""
    if isinstance(label, str) and label.replace("_", "").replace("-", "").isalnum():
        return label
    return "batch" if i == 0 else f"{name}_dim{i}"


def target_precisions(targets: Sequence[str]) -> tuple[list[str], list[str]]:
    """Precisions any of ``targets`` runs (its CPU or its accelerator), in the contract's order, and
    one note per board whose accelerator runs fewer of them."""
    from edgeproof.targets import get_target
    from edgeproof.targets.host import HOST_ID

    found: set[str] = set()
    notes = []
    for target_id in targets:
        if target_id == HOST_ID:
            found |= {"fp32", "fp16", "int8"}  # ONNX Runtime's CPU provider runs all three
            continue
        target = get_target(target_id)
        found |= set(target.cpu.ops_per_cycle_per_core)
        if target.accelerator is not None:
            accel = [p for p in PRECISIONS if p in target.accelerator.ops]
            found |= set(accel)
            notes.append(f"{target.id}: its accelerator runs {', '.join(accel)}; anything else falls back to its CPU")
    return [p for p in PRECISIONS if p in found], notes


def quick_run(model: Model, target: str, options_fed, progress: Progress | None = None) -> RunRecord:
    """A short run (2 fresh sessions, one cold start, no node profile) to propose budgets from."""
    from edgeproof.runners import runner_for

    options = replace(
        options_fed, min_sessions=2, max_sessions=2, samples_per_session=200, time_budget_s=10.0, cold_start_repeats=1, profile_nodes=False
    )
    with runner_for(target, check_fitness=False) as runner:
        return runner.run(runner.prepare(model, options), None, options, progress)


def draft_text(draft: Draft) -> str:
    """The drafted contract as TOML with comments: loadable as it stands, every proposal marked."""
    model, base = draft.model, draft.contract_path.parent
    targets = draft.targets or ("host",)
    out = [
        f"# edgeproof contract drafted on {date.today().isoformat()} by `edgeproof init --model` from",
        f"# {model.path.name} (sha256 {model.sha256[:16]}…). Every value marked {PROPOSAL!r} is a proposal:",
        "# check it against what the product needs before this contract gates anything.",
        "",
        "[contract]",
        f'name = "{model.path.stem}"',
        f"targets = [{', '.join(f'{t!r}' for t in targets)}]".replace("'", '"'),
        "",
        "[model]",
        f'path = "{_rel(model.path, base)}"',
    ]
    precisions, notes = target_precisions(targets)
    out.append(
        f"precisions = [{', '.join(f'{chr(34)}{p}{chr(34)}' for p in precisions)}]  # {PROPOSAL}: what the targets run ({', '.join(targets)})"
    )
    out += [f"# {note}" for note in notes]
    out += ["", "# The model's real inputs, as it declares them (a name is a free dim). What the model must accept."]
    free_inputs = []
    for vi in graph_inputs(model.proto):
        dims = [dim_label(d) for d in vi.type.tensor_type.shape.dim]
        if not _NAME.match(vi.name):
            out += [f"# input {vi.name!r}: {dims} {dtype_name(vi.type.tensor_type.elem_type)} (its name is not a contract key)", ""]
            continue
        shape = [d if isinstance(d, int) else _free_name(vi.name, i, d) for i, d in enumerate(dims)]
        if any(isinstance(d, str) for d in shape):
            free_inputs.append(vi.name)
        shown = ", ".join(str(d) if isinstance(d, int) else f'"{d}"' for d in shape)
        out += [f"[model.inputs.{vi.name}]", f"shape = [{shown}]", f'dtype = "{dtype_name(vi.type.tensor_type.elem_type)}"', ""]
    out += _feeds_section(draft)
    out += _budgets_section(draft, free_inputs)
    out += _data_section(draft)
    return "\n".join(out).rstrip() + "\n"


def _feeds_section(draft: Draft) -> list[str]:
    """A ``[model.feeds]`` proposal for each input the data does not hold — drafted even when the
    quick run failed (often *because* of such an input: a sample rate of 0, a wrong state)."""
    if draft.data_entry is None:
        return []
    lines = []
    if draft.record is None and draft.fed_inputs:
        fed = ", ".join(repr(name) for name, _ in draft.fed_inputs)
        lines.append(f"# the quick run fed zeros to {fed} and did not run: where zeros are not valid (a sample rate), set value = ...")
    for name, fed_shape in draft.fed_inputs:
        shape = draft.record.inputs.get(name, list(fed_shape)) if draft.record is not None else list(fed_shape)
        lines += [
            f"# {PROPOSAL}: the data does not hold {name!r}; each run feeds it this (value = ... for a constant such as a sample rate)",
            f"[model.feeds.{name}]",
            "zeros = true",
            f"shape = {shape}",
            "",
        ]
    return lines


def _budgets_section(draft: Draft, free_inputs: list[str]) -> list[str]:
    out = ["[budgets]", 'scenario = "single-stream"']
    rec = draft.record
    if rec is None:
        out += [
            f"# no figures to propose budgets from: {_one_line(draft.why_no_record)}",
            f"model_size_mib = {_round_up(draft.model.size_bytes / 2**20 * (1 + HEADROOM['model_size_mib']))}  "
            f"# {PROPOSAL}: the file is {draft.model.size_bytes / 2**20:.3g} MiB, +{HEADROOM['model_size_mib']:.0%}",
        ]
        return [*out, ""]
    where = f"{rec.kind} on {rec.target.id}"
    if free_inputs:
        shapes = ", ".join(
            f"{n} = {rec.inputs[n]}" for n in free_inputs if n in rec.inputs and (not draft.data_entry or n in draft.data_inputs)
        )
        out.append(f"shape = {{ {shapes} }}  # {PROPOSAL}: latency is judged at this shape (the quick run's)")
    figures = {
        "p95_ms": (rec.latency.p95_ms, "ms", rec.latency_provenance),
        "peak_rss_mib": (rec.peak_rss_mib.value, "MiB", rec.peak_rss_mib.provenance),
        "load_time_ms": (rec.load_time_ms.value, "ms", rec.load_time_ms.provenance),
        "model_size_mib": (rec.model_size_mib.value, "MiB", rec.model_size_mib.provenance),
    }
    for name, (value, unit, provenance) in figures.items():
        if value is None:
            out.append(f"# {name}: no figure from the quick run ({provenance})")
            continue
        headroom = HEADROOM[name]
        out.append(
            f"{name} = {_round_up(value * (1 + headroom))}  # {PROPOSAL}: {value:.3g} {unit} {where} ({provenance}), +{headroom:.0%} headroom"
        )
    out.append("# energy_mj_per_inference, sustained_w, temperature_c: set them from the board's measurements")
    return [*out, ""]


def _one_line(text: str, limit: int = 240) -> str:
    """A runtime's message as one comment line: its first line, cut at ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _data_section(draft: Draft) -> list[str]:
    if draft.data_entry is None:
        return ["# [data] and [slices]: give `edgeproof init --model M.onnx --data data.npz` to propose them"]
    key = "entry" if ":" in draft.data_entry and not draft.data_entry.endswith(".npz") else "npz"
    out = ["[data]", f'{key} = "{draft.data_entry}"', ""]
    if len(draft.model.proto.graph.output) > 1 or len(graph_inputs(draft.model.proto)) > 1:
        out += [
            f"# {PROPOSAL}: floors judge top-1 on the first output unless told otherwise; for a score or a regression",
            '# output add [evaluation.outputs.NAME] metric = "mse" (or mae, cosine, topk:5, file.py:fn) and floors in its unit',
        ]
    out += [
        f"# {PROPOSAL}: accuracy floors vs the float reference, in percentage points",
        "[slices.nominal]",
        'kind = "nominal"',
        "max_drop_pp = 1.0",
        "",
    ]
    for part in draft.data_parts:
        out += [f"[slices.{part}]", 'kind = "tail"', f'part = "{part}"', "max_drop_pp = 3.0", ""]
    return out


def _extra_parts(entry: Path) -> tuple[str, ...]:
    """Parts of an .npz beyond calibration and test (``x_<part>`` or ``x_<part>__<input>`` keys):
    each is proposed as a tail slice."""
    from edgeproof.data.dataset import REQUIRED_PARTS
    from edgeproof.model import read_npz

    if entry.suffix != ".npz":
        return ()
    parts = {key[2:].split("__", 1)[0] for key in read_npz(entry) if key.startswith("x_")}
    return tuple(sorted(p for p in parts if p not in REQUIRED_PARTS and p != "train" and _NAME.match(p)))


def _zeros_for(model: Model, names: list[str]) -> dict[str, Any]:
    """Zeros for inputs the data does not hold, every free dim taken as 1 (a state's free dim is
    its batch): the quick run's stand-in for the ``[model.feeds]`` the draft proposes for review."""
    import numpy as np

    inputs = {vi.name: vi for vi in graph_inputs(model.proto)}
    return {
        name: np.zeros([d if isinstance(d, int) else 1 for d in map(dim_label, inputs[name].type.tensor_type.shape.dim)]) for name in names
    }


def draft_contract(
    model_path: str | Path,
    contract_path: str | Path,
    data: str | None = None,
    targets: Sequence[str] = (),
    shapes: dict[str, tuple[int, ...]] | None = None,
    progress: Progress | None = None,
) -> Draft:
    """Everything a draft needs: the model loaded, the data (``data``, relative to the working
    folder) loaded and checked, and a quick run on the first target fed its rows (or synthetic
    inputs at ``shapes``). A model whose free dims nothing fixes gets no figures, saying why."""
    from edgeproof.data.dataset import EVALUATION, check_fits_model, input_rows, load_dataset
    from edgeproof.measure.runner import ProfileOptions

    model = Model.load(model_path)
    contract_path = Path(contract_path)
    fed = ProfileOptions(shapes=shapes or {})
    entry: str | None = None
    parts: tuple[str, ...] = ()
    data_inputs: tuple[str, ...] = ()
    fed_inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    if data is not None:
        file, sep, func = data.rpartition(":")
        data_file = Path(file if sep and file.endswith(".py") else data)
        parts = _extra_parts(data_file)
        dataset = load_dataset(data, Path.cwd(), extra_parts=parts)
        rows = input_rows(dataset.parts[EVALUATION].rows(), model)
        data_inputs = tuple(rows)
        missing = [vi.name for vi in graph_inputs(model.proto) if vi.name not in rows]
        check_fits_model(dataset, model, fed=missing)
        entry = _rel(data_file, contract_path.parent) + (f":{func}" if sep and file.endswith(".py") else "")
        zeros = _zeros_for(model, missing)
        fed = replace(fed, rows=dict(rows), feeds=zeros)
        fed_inputs = tuple((name, tuple(int(d) for d in zeros[name].shape)) for name in missing)
    record, why = None, ""
    try:
        record = quick_run(model, (tuple(targets) or ("host",))[0], fed, progress)
    except EdgeproofError as exc:
        why = str(exc)
    return Draft(model, contract_path, entry, tuple(targets), record, why, parts, data_inputs, fed_inputs)


def write_draft(path: str | Path, draft: Draft) -> Path:
    """Write the drafted contract; an existing file is never overwritten (ContractError)."""
    path = Path(path)
    if path.exists():
        raise ContractError(f"{path}: already exists; edgeproof will not overwrite it (remove it or choose another path)")
    return write_atomic(path, draft_text(draft))
