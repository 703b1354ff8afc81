"""`edgeproof optimize`: search variants × runtime settings × targets for the candidate the contract prefers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeproof.cli._app import app, console, user_errors
from edgeproof.cli.core import (
    InputsOpt,
    JsonOpt,
    ModelArg,
    ProviderOpt,
    SamplesOpt,
    SessionsOpt,
    ShapeOpt,
    progress_bar,
    render_verdict,
)
from edgeproof.errors import DataError
from edgeproof.measure.session import provider_name
from edgeproof.model import parse_shape_overrides
from edgeproof.outcome import exit_code
from edgeproof.records import Figure, save_record
from edgeproof.search import Candidate, Explanation, SearchOptions, SearchResult, TargetOutcome, default_threads, write_artifacts
from edgeproof.search import optimize as run_search

_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise DataError(f"{flag} {text!r}: expected comma-separated whole numbers, e.g. 1,2") from None
    if not values or any(v < 1 for v in values):
        raise DataError(f"{flag} {text!r}: expected comma-separated numbers of at least 1")
    return tuple(dict.fromkeys(values))


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))


def _opt_levels(text: str) -> tuple[str, ...]:
    levels = _names(text)
    bad = [v for v in levels if v not in _OPT_LEVELS]
    if bad or not levels:
        raise DataError(f"--opt-levels {text!r}: each must be one of {', '.join(_OPT_LEVELS)}")
    return levels


def _cell(fig: Figure, digits: int = 3) -> str:
    return "—" if fig.value is None else f"{fig.value:.{digits}g}"


def _energy_cell(fig: Figure) -> str:
    kind = fig.provenance.split(":", 1)[0]
    return "unavail." if fig.value is None else f"{fig.value:.3g} ({kind})"


def _feasible_cell(cand: Candidate) -> str:
    if cand.feasible and cand.eligible:
        return "[green]yes[/]"
    if cand.feasible:
        return f"[yellow]not eligible[/] ({cand.precision})"
    failing = cand.failing()
    more = f" +{len(failing) - 1}" if len(failing) > 1 else ""
    word = "[yellow]undecided[/]" if cand.verdict.outcome == "undecided" else "[red]no[/]"
    return f"{word}: {cand.verdict.binding_clause}{more}"


def _stage_cell(cand: Candidate) -> str:
    if cand.pruned:
        return f"pruned ({cand.pruned_kind}, {cand.stage})"
    return {"full": "full", "timed": "timed", "screened": "screened"}[cand.stage]


def render_race(outcome: TargetOutcome) -> None:
    race = outcome.race
    if race is None:
        return
    console.print(
        f"race on {outcome.target}: {race.raced} candidates raced, {race.pruned} pruned ({race.pruned_slower} clearly slower on "
        f"{race.binding_metric or 'the binding quantity'}, {race.pruned_budget} over a hard budget with certainty), "
        f"{race.timed} timed in fresh sessions, {race.measured_full} measured in full"
        + (f", {race.not_reached} not reached" if race.not_reached else ""),
        highlight=False,
    )


def render_candidates(result: SearchResult, outcome: TargetOutcome, show_all: bool = False) -> None:
    shown = [cid for cid in outcome.candidates if show_all or cid == outcome.selection.chosen or cid in outcome.pareto]
    which = "all" if show_all else "Pareto front and chosen; --all shows every one"
    table = Table(title=f"candidates on {outcome.target} ({which}; ★ Pareto front, → chosen)")
    for col in ("", "id", "variant", "settings", "p50 ms", "p95 ms", "worst drop pp", "RSS MiB", "energy mJ", "feasible", "stage"):
        table.add_column(col, justify="right" if col.endswith(("ms", "pp", "MiB")) else "left")
    for cid in shown:
        cand = result.candidate(cid)
        mark = ("→" if cid == outcome.selection.chosen else " ") + ("★" if cand.pareto else " ")
        drop = _cell(cand.figures["accuracy_drop_pp"], 2) + (f" ({cand.worst_slice})" if cand.worst_slice else "")
        table.add_row(
            mark,
            cid,
            escape(cand.variant),
            cand.settings_label,
            _cell(cand.figures["p50_ms"]),
            _cell(cand.figures["p95_ms"]),
            drop,
            _cell(cand.figures["peak_rss_mib"]),
            _energy_cell(cand.figures["energy_mj_per_inference"]),
            _feasible_cell(cand),
            _stage_cell(cand),
        )
    if shown:
        console.print(table)
    full = sum(result.candidate(cid).measured_in_full for cid in outcome.candidates)
    front = ", ".join(outcome.pareto) or "none"
    console.print(
        f"Pareto front of the {full} candidates measured in full over {', '.join(outcome.pareto_axes) or 'no axis'}: {front}",
        highlight=False,
    )
    if show_all:
        for cid in outcome.candidates:
            cand = result.candidate(cid)
            if cand.pruned:
                console.print(f"  [dim]{cid} pruned: {escape(cand.pruned)}[/]", highlight=False)
    for note in outcome.pareto_notes:
        console.print(f"  [dim]{escape(note)}[/]", highlight=False)


def render_choice(result: SearchResult, outcome: TargetOutcome, out: Path | None = None) -> None:
    sel = outcome.selection
    assert sel.chosen is not None
    cand = result.candidate(sel.chosen)
    console.print(f"[bold green]chosen on {outcome.target}:[/] {cand.id} {escape(cand.name)}", highlight=False)
    trail = []
    for step in sel.steps:
        if step.used:
            trail.append(f"{step.metric} ({step.source}): best {step.best:.4g}, {len(step.kept)} within ±{step.tolerance:.2g}")
        else:
            trail.append(f"{step.metric} ({step.source}) skipped: unavailable")
    console.print(
        f"  picked among {len(sel.considered)} feasible candidates by " + "; then ".join(trail or ["being the only one"]), highlight=False
    )
    if sel.vs_fp32 is not None:
        cmp = sel.vs_fp32
        line = f"  vs fp32 ({cmp.fp32_candidate}): p50 ×{cmp.p50_ratio:.3f}"
        if cmp.p50_interval is not None:
            line += f" (95% CI {cmp.p50_interval[0]:.3f}–{cmp.p50_interval[1]:.3f})"
        line += f", p95 ×{cmp.p95_ratio:.3f}"
        if cmp.p95_interval is not None:
            line += f" (95% CI {cmp.p95_interval[0]:.3f}–{cmp.p95_interval[1]:.3f})"
        line += f" — {escape(cmp.method)}"
        console.print(line + (f" — [yellow]slower than fp32[/] because {escape(cmp.why)}" if cmp.slower else ""), highlight=False)
    for c in outcome.confirmations:
        won = "tie" if c.winner is None else c.winner
        console.print(
            f"  confirmed interleaved ({c.role}): {c.pick} / {c.rival} p50 ×{c.p50.ratio:.3f} (95% CI {c.p50.low:.3f}–{c.p50.high:.3f}), "
            f"p95 ×{c.p95.ratio:.3f} ({c.p95.low:.3f}–{c.p95.high:.3f}), {c.pairs} pairs → {won}: {escape(c.decided_by)}"
            + (f"; {escape(c.note)}" if c.note else ""),
            highlight=False,
        )
    for note in sel.notes:
        console.print(f"  [dim]{escape(note)}[/]", highlight=False)
    render_verdict(cand.verdict)
    if out is not None and cand.record_path and (out / cand.record_path).is_file():
        from edgeproof.cli.core import render_policy
        from edgeproof.records import load_record

        render_policy(load_record(out / cand.record_path).evaluation)
    if outcome.chosen_artifact:
        console.print(f"  chosen variant copied to {outcome.chosen_artifact}", highlight=False)


def render_undecided(outcome: TargetOutcome) -> None:
    console.print(f"[bold yellow]could not decide whether a candidate on {outcome.target} meets the contract[/]")
    for why in outcome.undecided_because:
        console.print(f"  {escape(why)}", highlight=False, soft_wrap=True)


def render_explanation(result: SearchResult, outcome: TargetOutcome, exp: Explanation) -> None:
    if outcome.outcome == "fail":
        console.print(f"[bold red]no candidate on {outcome.target} meets the contract[/]")
    table = Table(title=f"best value any candidate reached, per hard clause ({outcome.target})")
    for col in ("clause", "budget", "best", "by", "met by"):
        table.add_column(col)
    for b in exp.clauses:
        best = f"{b.best_value:.4g} {b.unit}" if b.best_value is not None else "no data" + (" (waived)" if b.met_by else "")
        style = "red" if b.met_by == 0 else "green"
        table.add_row(b.clause, f"{b.budget:.4g} {b.unit}", best, b.best_candidate or "—", f"[{style}]{b.met_by}/{b.of}[/]")
    console.print(table)
    console.print(f"binding clause: [bold]{exp.binding_clause}[/] — {escape(exp.why)}", highlight=False)
    if exp.closest_candidate:
        closest = result.candidate(exp.closest_candidate)
        console.print(f"closest candidate: {closest.id} {escape(closest.name)}, fails {', '.join(exp.closest_fails)}", highlight=False)
    if exp.escalation is not None:
        esc = exp.escalation
        tried = f" (already tried by this search: {', '.join(esc.tried_by_search)})" if esc.tried_by_search else ""
        note = f" — {escape(esc.note)}" if esc.note else ""
        console.print(f"escalate to {esc.owner}: {', '.join(esc.options)}{tried}{note}", highlight=False)
    if exp.escalation_note:
        console.print(f"  [dim]{exp.escalation_note}[/]", highlight=False)
    for note in exp.notes:
        console.print(f"  [dim]{escape(note)}[/]", highlight=False)


def render_search(result: SearchResult, show_all: bool = False, out: Path | None = None) -> None:
    cached = sum(v.cache_hit for v in result.variants)
    full = sum(c.measured_in_full for c in result.candidates)
    console.print(
        f"optimize {Path(result.model.path).name}: {len(result.variants)} variants, {len(result.candidates)} candidates raced, "
        f"{full} measured in full, in {result.elapsed_s:.0f} s; {cached}/{len(result.variants)} variants from cache",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"  [dim]{escape(note)}[/]", highlight=False)
    if result.skipped:
        reasons = sorted({s.reason for s in result.skipped})
        console.print(f"[yellow]{len(result.skipped)} candidates not measured in full:[/] {'; '.join(reasons)}", highlight=False)
    for outcome in result.outcomes:
        render_race(outcome)
        render_candidates(result, outcome, show_all)
        if outcome.outcome == "pass":
            render_choice(result, outcome, out)
            continue
        if outcome.outcome == "undecided":
            render_undecided(outcome)
        if outcome.explanation is not None:
            render_explanation(result, outcome, outcome.explanation)


@app.command()
@user_errors
def optimize(
    model: ModelArg,
    contract: Annotated[Path, typer.Option("--contract", help="Budget contract (TOML); its \\[data] table and slices are used.")],
    data: Annotated[
        str | None, typer.Option("--data", help="Dataset replacing the contract's \\[data] table: an .npz or file.py:function.")
    ] = None,
    threads: Annotated[
        str | None, typer.Option("--threads", help="Intra-op thread counts to try, e.g. 1,2 (default: 1 and 2, capped at the cores).")
    ] = None,
    opt_levels: Annotated[str, typer.Option("--opt-levels", help="Graph optimisation levels to try, e.g. all,basic.")] = "all,basic",
    targets: Annotated[str, typer.Option("--targets", help="host and/or catalog board ids (simulated), comma-separated.")] = "host",
    power_modes: Annotated[
        str | None, typer.Option("--power-modes", help="Board power modes to try (default: every mode in the catalog entry).")
    ] = None,
    max_candidates: Annotated[int | None, typer.Option("--max-candidates", min=1, help="Measure at most this many candidates.")] = None,
    time_budget: Annotated[
        float,
        typer.Option("--time-budget", min=1.0, help="Seconds for the whole search: building, racing and confirming the pick."),
    ] = 240.0,
    show_all: Annotated[bool, typer.Option("--all", help="List every candidate raced, not only the Pareto front and the pick.")] = False,
    shape: ShapeOpt = None,
    inputs: InputsOpt = None,
    sessions: SessionsOpt = 3,
    samples: SamplesOpt = 200,
    provider: ProviderOpt = "cpu",
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Count unverified hard clauses as passing, visibly.")
    ] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Variant cache (default $EDGEPROOF_HOME/variants).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for each candidate's run record, the chosen ONNX and search.json.")] = Path(
        "out/optimize"
    ),
    json_out: JsonOpt = None,
) -> None:
    """Search quantization variants, threads, graph optimisation and targets; pick by the contract.

    Exit 0 when every target has a pick, 1 when on some target every measured candidate fails on
    evidence, else 3 when some target could not be decided (nothing measured in the time budget, or
    a candidate lacks data for a hard clause), 2 for bad input.
    """
    from edgeproof.contract import load_contract

    spec = load_contract(contract)
    options = SearchOptions(
        threads=_int_list(threads, "--threads") if threads else default_threads(),
        opt_levels=_opt_levels(opt_levels),
        targets=_names(targets) or ("host",),
        power_modes=_names(power_modes) if power_modes else None,
        sessions=sessions,
        samples=samples,
        max_candidates=max_candidates,
        time_budget_s=time_budget,
        allow_unverified=allow_unverified,
        data=data,
        shapes=parse_shape_overrides(shape),
        inputs_npz=str(inputs) if inputs else None,
        cache_dir=cache_dir,
        provider=provider_name(provider),
    )
    # a live bar shows nothing in a CI log: there, one line per phase with counts and elapsed time
    on_phase = None if console.is_terminal else (lambda line: console.print(escape(line), highlight=False))
    with progress_bar(f"optimizing {model.name}") as update:
        outcome = run_search(model, spec, options, progress=update, on_phase=on_phase)
    write_artifacts(outcome, out)
    render_search(outcome.result, show_all, out)
    console.print(f"artifacts in {out}/ (search.json, runs/, chosen-*.onnx)", highlight=False)
    if json_out:
        save_record(outcome.result, json_out)
        console.print(f"search result written to {json_out}", highlight=False)
    raise typer.Exit(exit_code(outcome.result.outcome))
