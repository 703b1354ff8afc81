"""Short human names for runs, variants and targets, shared by every section of the report."""

from __future__ import annotations

from edgeproof.records import RunRecord, VariantRef

AS_GIVEN = "as given"


def variant_label(variant: VariantRef | None) -> str:
    """The variant's short name (``int8-static/QDQ/per-channel/minmax/U8S8``), or "as given" for the model itself."""
    return variant.name if variant is not None else AS_GIVEN


def target_label(record: RunRecord) -> str:
    mode = f" @{record.target.power_mode}" if record.target.power_mode else ""
    return f"{record.target.id}{mode}"


def model_variant(record: RunRecord) -> str:
    """Model name and variant, with a simulator what-if precision where one was asked for."""
    label = f"{record.model.name} · {variant_label(record.variant)}"
    override = precision_override(record)
    return f"{label} · as {override} (what-if)" if override else label


def precision_override(record: RunRecord) -> str | None:
    """The precision a simulation was asked to run the float kernels at (what-if), if any."""
    return record.simulation.precision_override if record.simulation is not None else None


def run_label(record: RunRecord) -> str:
    """``model · variant · target``: what a legend or a table row calls one run."""
    return f"{model_variant(record)} · {target_label(record)}"


def simulated(record: RunRecord) -> bool:
    return record.kind == "simulated"


def unique_labels(labels: list[str], files: list[str]) -> list[str]:
    """Labels, each followed by its file where two runs would otherwise share a name."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return [f"{label} ({rel})" if counts[label] > 1 else label for label, rel in zip(labels, files)]
