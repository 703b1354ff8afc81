"""The figures a BOM carries for one run, each with its unit, provenance and interval, keyed as a gate names them."""

from __future__ import annotations

from dataclasses import dataclass

from edgeproof.records import Figure, Placement, RunRecord

LATENCY_QUANTILES = ("p50", "p95", "p99")
RECORD_FIGURES = ("load_time_ms", "peak_rss_mib", "model_size_mib", "energy_mj_per_inference", "sustained_w", "temperature_c")
SLICE_METRICS = {"accuracy": "fraction", "drop_pp": "pp", "agreement": "fraction"}


@dataclass(frozen=True)
class Stated:
    """A figure as a BOM states it; ``level`` is the interval's confidence level where it is known."""

    figure: Figure
    level: float | None = None

    def as_json(self) -> dict:
        return {**self.figure.model_dump(mode="json"), "interval_level": self.level}

    @classmethod
    def from_json(cls, data: dict) -> Stated:
        data = dict(data)
        level = data.pop("interval_level", None)
        return cls(figure=Figure.model_validate(data), level=level)


def run_figures(record: RunRecord) -> dict[str, Stated]:
    """Every figure of ``record``: latency quantiles, resources, CPU fallback and per-slice accuracy.

    Keys follow the contract's clause names without their section (``p95_ms``,
    ``slices.<name>.drop_pp``), so a verdict's clause finds its figure.
    """
    figures: dict[str, Stated] = {}
    for q in LATENCY_QUANTILES:
        ci = record.latency.ci.get(q)
        value = getattr(record.latency, f"{q}_ms")
        interval = (ci.low, ci.high) if ci is not None else None
        figure = Figure(value=value, unit="ms", provenance=record.latency_provenance, interval=interval)
        figures[f"{q}_ms"] = Stated(figure, ci.level if ci is not None else None)
    for name in RECORD_FIGURES:
        figures[name] = Stated(getattr(record, name))
    figures["cpu_fallback_frac"] = Stated(fallback_figure(record.placement))
    if record.evaluation is not None:
        for name, metrics in record.evaluation.slices.items():
            # the same provenance the contract gives a slice clause, so BOM and verdict agree
            provenance = f"measured:evaluate({metrics.slice_id})"
            for metric, unit in SLICE_METRICS.items():
                figure = Figure(value=getattr(metrics, metric), unit=unit, provenance=provenance)
                figures[f"slices.{name}.{metric}"] = Stated(figure)
    return figures


def fallback_figure(placement: Placement | None) -> Figure:
    """Share of the work on the CPU fallback: by node time where per-node times exist, else by node count."""
    if placement is None:
        return Figure.unavailable("fraction", "no per-node placement in the run record")
    if placement.fallback_time_frac is not None:
        return Figure(value=placement.fallback_time_frac, unit="fraction", provenance=placement.provenance)
    return Figure(value=placement.fallback_node_frac, unit="fraction", provenance=f"{placement.provenance} (by node count)")


def figure_for_clause(clause: str) -> str:
    """The figure key a contract clause judges: ``budgets.p95_ms`` -> ``p95_ms``, ``slices.x.max_drop_pp`` -> ``slices.x.drop_pp``."""
    section, _, rest = clause.partition(".")
    if section == "budgets":
        return rest
    if section == "slices" and rest.endswith(".max_drop_pp"):
        return f"slices.{rest.removesuffix('.max_drop_pp')}.drop_pp"
    return clause
