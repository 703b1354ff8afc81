"""The figures a BOM carries for one run, each with its unit, provenance and interval, keyed as a gate names them."""

from __future__ import annotations

from dataclasses import dataclass

from edgeproof.figures import LATENCY_FIGURES, figures_of, slice_figures
from edgeproof.records import Figure, RunRecord


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
    """Every figure of ``record`` (``edgeproof.figures``): latency quantiles, resources, CPU fallback and per-slice accuracy.

    Keys follow the contract's clause names without their section (``p95_ms``,
    ``slices.<name>.drop_pp``), so a verdict's clause finds its figure. The worst-slice drop is
    left out: the BOM states every slice's own.
    """
    figures = {key: Stated(figure, _level(record, key)) for key, figure in figures_of(record).items() if key != "accuracy_drop_pp"}
    return figures | {key: Stated(figure) for key, figure in slice_figures(record).items()}


def _level(record: RunRecord, key: str) -> float | None:
    ci = record.latency.ci.get(key.removesuffix("_ms")) if key in LATENCY_FIGURES else None
    return ci.level if ci is not None else None


def figure_for_clause(clause: str) -> str:
    """The figure key a contract clause judges: ``budgets.p95_ms`` -> ``p95_ms``, ``slices.x.max_drop_pp`` -> ``slices.x.drop_pp``."""
    section, _, rest = clause.partition(".")
    if section == "budgets":
        return rest
    if section == "slices" and rest.endswith(".max_drop_pp"):
        return f"slices.{rest.removesuffix('.max_drop_pp')}.drop_pp"
    return clause
