"""Accuracy per slice per variant, next to the float reference and each slice's floor from the contract."""

from __future__ import annotations

import plotly.graph_objects as go

from edgeproof.records import Evaluation
from edgeproof.report._collect import Inputs
from edgeproof.report._html import Section, absent_section, badge, esc, note, source, table
from edgeproof.report._labels import model_variant, unique_labels
from edgeproof.report._plots import colour, plot_html, ptext
from edgeproof.report._verdicts import verdict_sources

FLOOR_SUFFIX = ".max_drop_pp"


def distinct_evaluations(inputs: Inputs) -> list[tuple[str, str, Evaluation]]:
    """(variant label, file, evaluation), one per model file and dataset: runs of one model share its evaluation."""
    seen: set[tuple[str, str]] = set()
    found = []
    for f in inputs.runs:
        ev = f.item.evaluation
        if ev is None or not ev.slices:
            continue
        key = (f.item.model.sha256, ev.dataset_id)
        if key in seen:
            continue
        seen.add(key)
        found.append((model_variant(f.item), f.rel, ev))
    return found


def slice_floors(inputs: Inputs) -> dict[str, float]:
    """Each slice's largest allowed drop (pp) as the verdicts in the folder state it."""
    floors: dict[str, float] = {}
    for _, verdict in verdict_sources(inputs):
        for c in verdict.clauses:
            if c.clause.startswith("slices.") and c.clause.endswith(FLOOR_SUFFIX) and c.budget is not None:
                floors.setdefault(c.clause.removeprefix("slices.").removesuffix(FLOOR_SUFFIX), c.budget)
    return floors


def slice_order(evaluations: list[Evaluation]) -> list[str]:
    order: dict[str, None] = {}
    for ev in evaluations:
        order.update(dict.fromkeys(ev.slices))
    return list(order)


def accuracy_figure(labels: list[str], evaluations: list[Evaluation], slices: list[str]) -> go.Figure:
    fig = go.Figure()
    for i, (label, ev) in enumerate(zip(labels, evaluations)):
        present = [s for s in slices if s in ev.slices]
        m = [ev.slices[s] for s in present]
        fig.add_trace(
            go.Bar(
                x=present,
                y=[x.accuracy for x in m],
                name=ptext(label),
                marker_color=colour(i),
                customdata=[[x.drop_pp, x.n, x.agreement] for x in m],
                hovertemplate=f"{ptext(label)}<br>%{{x}}: %{{y:.2%}} {ptext(ev.metric)}<br>drop %{{customdata[0]:.2f}} pp vs reference"
                f"<br>agreement %{{customdata[2]:.1%}} on %{{customdata[1]}} samples<br>measured:evaluate(dataset {ev.dataset_id[:12]})<extra></extra>",
            )
        )
    references: dict[str, Evaluation] = {}
    for ev in evaluations:
        references.setdefault(ev.reference_sha256, ev)
    for ref_sha, ev in references.items():
        present = [s for s in slices if s in ev.slices]
        name = "float reference" if len(references) == 1 else f"reference {ref_sha[:8]}"
        fig.add_trace(
            go.Scatter(
                x=present,
                y=[ev.slices[s].reference_accuracy for s in present],
                mode="markers",
                name=name,
                marker={"symbol": "line-ew-open", "size": 26, "color": "#1d2430", "line": {"width": 2.5}},
                hovertemplate=f"{name}<br>%{{x}}: %{{y:.2%}}<extra></extra>",
            )
        )
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_yaxes(title_text="top-1 accuracy", tickformat=".0%")
    fig.update_xaxes(title_text="slice")
    return fig


def _cell(ev: Evaluation, name: str, floor: float | None) -> str:
    m = ev.slices.get(name)
    if m is None:
        return '<span class="muted">not evaluated</span>'
    over = floor is not None and m.drop_pp > floor
    text = f"{m.accuracy:.2%} ({m.drop_pp:+.2f} pp)".replace("+-", "−")
    return f'<span class="over">{esc(text)}</span>' if over else esc(text)


def section(inputs: Inputs) -> Section:
    found = distinct_evaluations(inputs)
    if not found:
        return absent_section(
            "accuracy",
            "Accuracy per slice per variant",
            "No evaluation in this folder: the run records carry none (`edgeproof check` evaluates the contract's slices).",
        )
    labels = unique_labels([label for label, _, _ in found], [rel for _, rel, _ in found])
    evaluations = [ev for _, _, ev in found]
    slices = slice_order(evaluations)
    floors = slice_floors(inputs)
    body = note(
        "Top-1 accuracy of each variant on each slice of the contract's data (nominal, stress and tail), "
        "measured by running the model; the black bars mark the float reference on the same inputs. "
        "In the table, the drop vs the reference is in brackets, red where it breaks the slice's floor."
    )
    body += plot_html(accuracy_figure(labels, evaluations, slices), "plot-accuracy", height=440)
    headers = ["slice", "samples", "floor (max drop)", "reference", *labels]
    rows = []
    for name in slices:
        first = next(ev.slices[name] for ev in evaluations if name in ev.slices)
        floor = floors.get(name)
        rows.append(
            [
                f"<code>{esc(name)}</code>",
                str(first.n),
                esc(f"{floor:g} pp") if floor is not None else '<span class="muted">none stated</span>',
                esc(f"{first.reference_accuracy:.2%}"),
                *(_cell(ev, name, floor) for ev in evaluations),
            ]
        )
    body += table(headers, rows)
    body += (
        "<p>"
        + " ".join(f"{source(rel)} {badge(f'measured:evaluate(dataset {ev.dataset_id[:12]}, {ev.metric})')}" for (_, rel, ev) in found)
        + "</p>"
    )
    return Section("accuracy", "Accuracy per slice per variant", body, frozenset({"measured"}))
