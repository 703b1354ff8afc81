"""Accuracy drop per slice per variant as a heatmap (red where a slice floor breaks), the pick, fp32 and the front first."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from edgeproof.records import Evaluation, RunRecord, Verdict
from edgeproof.report._collect import Inputs
from edgeproof.report._decision import Decision, decisions, is_reference, split_primary
from edgeproof.report._html import Section, absent_section, badge, esc, muted, note, source, table
from edgeproof.report._labels import model_variant, unique_labels
from edgeproof.report._plots import plot_html, ptext
from edgeproof.report._verdicts import judged_run, verdict_sources

FLOOR_SUFFIX = ".max_drop_pp"
SLICE_PREFIX = "slices."
# Cell colours: white (no drop) to grey-blue (the floor nearly used up); red where the floor breaks, light enough to read the drop on.
OK_SHADE, BROKEN = "#b7c6dd", "#e8837a"
ROW_PX, HEATMAP_BASE_PX = 36, 84


@dataclass(frozen=True)
class Row:
    """One variant's evaluation as a heatmap row, and the slices its verdict failed (when a verdict judged it)."""

    label: str
    rel: str
    evaluation: Evaluation
    failed: frozenset[str] = frozenset()


def failed_slices(verdict: Verdict | None) -> frozenset[str]:
    """Slices with a failing floor clause in ``verdict`` (any output's), as the judge said."""
    if verdict is None:
        return frozenset()
    return frozenset(c.clause.split(".")[1] for c in verdict.clauses if c.clause.startswith(SLICE_PREFIX) and c.status == "fail")


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


def _floors_of(verdict: Verdict) -> dict[str, float]:
    return {
        c.clause.removeprefix(SLICE_PREFIX).removesuffix(FLOOR_SUFFIX): c.budget
        for c in verdict.clauses
        if c.clause.startswith(SLICE_PREFIX) and c.clause.endswith(FLOOR_SUFFIX) and c.clause.count(".") == 2 and c.budget is not None
    }


def slice_floors(inputs: Inputs) -> dict[str, dict[str, float]]:
    """Each dataset's slice floors (largest allowed drop, pp), from the verdicts that judged a run on it.

    Floors belong to a contract, and two contracts may name the same slice: they are kept per dataset,
    found through the run a verdict judged (a check's or gate's run file, a search candidate's run).
    """
    runs_by_id = {f.item.run_id: f.item for f in inputs.runs}
    pairs: list[tuple[Verdict, RunRecord | None]] = [(v, judged_run(inputs, rel)) for rel, v in verdict_sources(inputs)]
    pairs += [(c.verdict, runs_by_id.get(c.run_id)) for f in inputs.searches for c in f.item.candidates]
    floors: dict[str, dict[str, float]] = {}
    for verdict, run in pairs:
        if run is not None and run.evaluation is not None:
            for name, floor in _floors_of(verdict).items():
                floors.setdefault(run.evaluation.dataset_id, {}).setdefault(name, floor)
    return floors


def slice_order(evaluations: list[Evaluation]) -> list[str]:
    order: dict[str, None] = {}
    for ev in evaluations:
        order.update(dict.fromkeys(ev.slices))
    return list(order)


def metric_unit(ev: Evaluation) -> str:
    """What a drop is counted in: percentage points of the headline metric (the first judged output's)."""
    if ev.outputs:
        output, metric = next(iter(ev.outputs.items()))
        return f"pp of {metric} on output {output}"
    return f"pp of {ev.metric}"


def breaks(row: Row, slice_name: str, floor: float | None) -> bool:
    """A floor breaks where the verdict that judged this variant failed it, or (unjudged) where the drop exceeds it."""
    m = row.evaluation.slices.get(slice_name)
    return slice_name in row.failed or (m is not None and floor is not None and m.drop_pp > floor)


def _shade(drop_pp: float, floor: float | None, worst_pp: float) -> float:
    """0 (no drop, or better than the reference) to 0.9 (the floor used up, or the worst drop shown when there is no floor)."""
    scale = floor if floor is not None and floor > 0 else worst_pp
    return 0.0 if drop_pp <= 0 or scale <= 0 else 0.9 * min(drop_pp / scale, 1.0)


def drop_heatmap(rows: list[Row], slices: list[str], floors: dict[str, float]) -> go.Figure:
    """Rows are variants, columns slices; each cell prints its drop, red where the slice's floor breaks."""
    worst = max((m.drop_pp for r in rows for m in r.evaluation.slices.values()), default=0.0)
    z: list[list[float | None]] = []
    text: list[list[str]] = []
    hover: list[list[str]] = []
    for r in rows:
        zr: list[float | None] = []
        tr: list[str] = []
        hr: list[str] = []
        for name in slices:
            m = r.evaluation.slices.get(name)
            floor = floors.get(name)
            if m is None:
                zr.append(None)
                tr.append("not evaluated")
                hr.append(f"{ptext(r.label)}<br>{ptext(name)}: not evaluated")
                continue
            broken = breaks(r, name, floor)
            zr.append(1.0 if broken else _shade(m.drop_pp, floor, worst))
            tr.append(f"{m.drop_pp:+.2f} pp".replace("+-", "−").replace("-", "−"))
            hr.append(
                "<br>".join(
                    ptext(line)
                    for line in (
                        f"{r.label} on {name}",
                        f"drop {m.drop_pp:+.2f} {metric_unit(r.evaluation)} vs the float reference",
                        f"{m.accuracy:.2%} vs reference {m.reference_accuracy:.2%}, agreement {m.agreement:.1%}, {m.n} samples",
                        (f"floor {floor:g} pp: " + ("BROKEN" if broken else "kept")) if floor is not None else "no floor stated",
                        f"measured:evaluate({m.slice_id[:12]}…)",
                    )
                )
            )
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    columns = [f"{ptext(name)}<br>" + (f"floor {floors[name]:g} pp" if name in floors else "no floor") for name in slices]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=[ptext(r.label) for r in rows],
            text=text,
            texttemplate="%{text}",
            textfont={"size": 13},
            hovertext=hover,
            hoverinfo="text",
            zmin=0,
            zmax=1,
            colorscale=[[0.0, "#ffffff"], [0.9, OK_SHADE], [0.9001, BROKEN], [1.0, BROKEN]],
            showscale=False,
            xgap=2,
            ygap=2,
        )
    )
    fig.update_xaxes(side="top", tickfont={"size": 12})
    fig.update_yaxes(autorange="reversed", automargin=True, tickfont={"size": 12})
    fig.update_layout(plot_bgcolor="#eef0f4")
    return fig


def heatmap_html(rows: list[Row], floors: dict[str, float], plot_id: str) -> str:
    slices = slice_order([r.evaluation for r in rows])
    layout = {"margin": {"l": 20, "r": 20, "t": 64, "b": 10}}
    height = HEATMAP_BASE_PX + ROW_PX * len(rows)
    return plot_html(drop_heatmap(rows, slices, floors), plot_id, height=height, layout=layout, modebar=False)


def decision_rows(d: Decision, runs_by_id: dict[str, RunRecord]) -> tuple[list[Row], list[str]]:
    """The shown candidates' evaluations (one row per variant and dataset), and a sentence for each shown one without."""
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    missing = []
    for s in d.shown:
        c = s.candidate
        run = runs_by_id.get(c.run_id)
        ev = run.evaluation if run is not None else None
        if ev is None or not ev.slices:
            if is_reference(c, runs_by_id):
                missing.append(f"{c.id} ({' + '.join(s.roles)}) is the float reference every drop is measured against.")
            else:
                missing.append(
                    f"{c.id} ({' + '.join(s.roles)}) has no evaluation: the race did not take it as far as evaluating its slices."
                )
            continue
        key = (c.variant_sha256, ev.dataset_id)
        if key in seen:
            continue
        seen.add(key)
        rows.append(Row(f"{s.label} · {c.variant}", c.record_path or "", ev, failed_slices(c.verdict)))
    return rows, missing


def decision_heatmap(d: Decision, runs_by_id: dict[str, RunRecord], floors: dict[str, dict[str, float]], plot_id: str) -> tuple[str, int]:
    """(HTML, 1 when a heatmap was drawn) for one search target's pick, fp32 and front."""
    rows, missing = decision_rows(d, runs_by_id)
    html = f"<h3>{esc(d.outcome.target)}: the pick, fp32 and the Pareto front {source(d.found.rel)}</h3>" if rows or missing else ""
    if rows:
        html += heatmap_html(rows, floors.get(rows[0].evaluation.dataset_id, {}), plot_id)
    return html + "".join(note(m) for m in missing), int(bool(rows))


def full_table(rows: list[Row], floors: dict[str, float]) -> str:
    """One model's variants on one data set as a table: accuracy and drop per slice, red where a floor breaks."""
    headers = ["slice", "samples", "floor (max drop)", "reference", *(r.label for r in rows)]
    lines = []
    for name in slice_order([r.evaluation for r in rows]):
        first = next(r.evaluation.slices[name] for r in rows if name in r.evaluation.slices)
        floor = floors.get(name)
        lines.append(
            [
                f"<code>{esc(name)}</code>",
                str(first.n),
                esc(f"{floor:g} pp") if floor is not None else muted("none stated"),
                esc(f"{first.reference_accuracy:.2%}"),
                *(_cell(r, name, floor) for r in rows),
            ]
        )
    evidence = " ".join(
        f"{source(r.rel)} {badge(f'measured:evaluate(dataset {r.evaluation.dataset_id[:12]}, {r.evaluation.metric})')}" for r in rows
    )
    return table(headers, lines) + f"<p>{evidence}</p>"


def _cell(row: Row, name: str, floor: float | None) -> str:
    m = row.evaluation.slices.get(name)
    if m is None:
        return muted("not evaluated")
    text = f"{m.accuracy:.2%} ({m.drop_pp:+.2f} pp)".replace("+-", "−").replace("(-", "(−")
    return f'<span class="over">{esc(text)}</span>' if breaks(row, name, floor) else esc(text)


def _grouped(found: list[tuple[str, str, Evaluation]], labels: list[str]) -> list[list[Row]]:
    """Rows by float reference and dataset: variants of one model on one data set share a heatmap."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for label, (_, rel, ev) in zip(labels, found):
        groups.setdefault((ev.reference_sha256, ev.dataset_id), []).append(Row(label, rel, ev))
    return list(groups.values())


def section(inputs: Inputs) -> Section:
    found = distinct_evaluations(inputs)
    if not found:
        return absent_section(
            "accuracy",
            "Accuracy drop per slice",
            "No evaluation in this folder: the run records carry none (`edgeproof check` evaluates the contract's slices).",
        )
    floors = slice_floors(inputs)
    runs_by_id = {f.item.run_id: f.item for f in inputs.runs}
    unit = metric_unit(found[0][2])
    body = note(
        f"The drop of each variant against the float reference on each slice of the contract's data (nominal, stress, tail), in {unit}: "
        "measured by running both models on the same inputs. A cell is red where the drop breaks the slice's floor; "
        "grey-blue cells shade with how much of the floor is used. Hover a cell for the accuracies and sample counts."
    )
    primary, more = split_primary(decisions(inputs))
    shown, first = 0, ""
    for d in primary:
        html, drawn = decision_heatmap(d, runs_by_id, floors, f"plot-accuracy-{shown}")
        first += html
        shown += drawn
    others = ""
    for d in more:
        html, drawn = decision_heatmap(d, runs_by_id, floors, f"plot-accuracy-{shown}")
        others += html
        shown += drawn
    body += first
    if others:
        body += f"<details><summary>{len(more)} more search target(s) in this folder</summary>{others}</details>"
    labels = unique_labels([label for label, _, _ in found], [rel for _, rel, _ in found])
    groups = _grouped(found, labels)
    everything = "".join(
        f"<h4>{len(rows)} variant(s) of the float model <code>{esc(rows[0].evaluation.reference_sha256[:12])}</code> on dataset "
        f"<code>{esc(rows[0].evaluation.dataset_id[:12])}</code></h4>"
        + heatmap_html(rows, floors.get(rows[0].evaluation.dataset_id, {}), f"plot-accuracy-all-{i}")
        for i, rows in enumerate(groups)
    )
    tables = "".join(full_table(rows, floors.get(rows[0].evaluation.dataset_id, {})) for rows in groups)
    if shown:
        body += f"<details><summary>All {len(found)} evaluated variant(s) in this folder</summary>{everything}{tables}</details>"
    else:
        body += everything + f"<details><summary>Accuracy per slice, as a table</summary>{tables}</details>"
    return Section("accuracy", "Accuracy drop per slice", body, frozenset({"measured"}))
