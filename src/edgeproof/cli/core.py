"""Core commands: doctor, profile, check, history."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeproof import history
from edgeproof.cli._app import app, console, user_errors
from edgeproof.errors import DataError
from edgeproof.measure.doctor import check_host
from edgeproof.measure.runner import ProfileOptions, feeds_for_contract
from edgeproof.measure.session import provider_name
from edgeproof.measure.stages import stage_options, with_stages
from edgeproof.model import parse_shape_overrides
from edgeproof.outcome import OUTCOME_WORDS, exit_code
from edgeproof.records import RunRecord, RuntimeSettings, Verdict, save_record
from edgeproof.runners import runner_for

if TYPE_CHECKING:
    from edgeproof.contract import Contract

ModelArg = Annotated[Path, typer.Argument(help="ONNX model file.")]
ScenarioOpt = Annotated[str, typer.Option("--scenario", help="single-stream | periodic:HZ | server:HZ (Poisson) | offline")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="ONNX Runtime intra-op threads.")]
ProviderOpt = Annotated[str, typer.Option("--provider", help="Execution provider: cpu, cuda or a full provider name.")]
OptLevelOpt = Annotated[str, typer.Option("--opt-level", help="Graph optimisation: disable | basic | extended | all.")]
SessionsOpt = Annotated[int, typer.Option("--sessions", min=1, help="Minimum fresh sessions (intervals span them).")]
SamplesOpt = Annotated[int, typer.Option("--samples", min=20, help="Timed inferences per session (capped by the time budget).")]
BudgetOpt = Annotated[float, typer.Option("--time-budget", min=1.0, help="Seconds after which no further session starts.")]
EngineOpt = Annotated[str, typer.Option("--engine", help="builtin (lean loop) or loadgen (MLPerf LoadGen, VALID/INVALID kept).")]
ShapeOpt = Annotated[list[str] | None, typer.Option("--shape", help="NAME=D1,D2,... fixing an input's free dims (repeatable).")]
InputsOpt = Annotated[
    Path | None, typer.Option("--inputs", help=".npz with one array per input name (real samples; they fix every free dim).")
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the record as JSON here.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Refuse to measure on an unfit host.")]
DeadlineOpt = Annotated[float | None, typer.Option("--deadline-ms", help="Deadline for periodic/server (default: the period).")]
TargetOpt = Annotated[str, typer.Option("--target", help="host, or a board id from `edgeproof targets` (simulated).")]
PowerModeOpt = Annotated[str | None, typer.Option("--power-mode", help="Simulated board only: one of its power modes.")]
FirmwareOpt = Annotated[Path | None, typer.Option("--firmware", help="Simulated board only: firmware profile TOML.")]
PowerCsvOpt = Annotated[
    Path | None,
    typer.Option("--power-csv", help="Host only: an external power meter's CSV log (time + power or cumulative energy) read for energy."),
]
PowerColumnOpt = Annotated[
    str | None, typer.Option("--power-column", help="The --power-csv column to read (e.g. power_mw, energy_j; default: found by name).")
]


def external_meter(power_csv: Path | None, power_column: str | None):
    """The ``--power-csv`` meter, its CSV checked now (a bad file is one line, exit 2, before anything is
    measured); None without ``--power-csv``."""
    from edgeproof.measure.meters.external_csv import ExternalCsvMeter, load_meter_csv

    if power_csv is None:
        if power_column is not None:
            raise DataError("--power-column needs --power-csv FILE")
        return None
    load_meter_csv(power_csv, value_column=power_column)
    return ExternalCsvMeter(power_csv, value_column=power_column)


def resolve_target_id(target: str) -> str:
    """The id ``--target``'s budgets are looked up by: ``host``, the one board a prefix names, or a
    device's board from boards.toml (the device id itself when it declares none)."""
    from edgeproof.targets import get_target
    from edgeproof.targets.host import HOST_ID

    if target.startswith("device:"):
        from edgeproof.farm.inventory import get_device

        return get_device(target).board or target
    return target if target == HOST_ID else get_target(target).id


@contextmanager
def progress_bar(label: str) -> Iterator:
    """A transient progress bar; yields the callback the runner reports through."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=1.0)

        def update(message: str, fraction: float) -> None:
            bar.update(task, description=f"{label}: {message}", completed=fraction)

        yield update


def measure(
    model: Path,
    target: str,
    scenario: str,
    threads: int,
    provider: str,
    opt_level: str,
    sessions: int,
    samples: int,
    time_budget: float,
    engine: str,
    shape: list[str] | None,
    inputs: Path | None,
    strict: bool,
    deadline_ms: float | None,
    power_mode: str | None = None,
    firmware: Path | None = None,
    power_csv: Path | None = None,
    power_column: str | None = None,
    contract: Contract | None = None,
) -> RunRecord:
    """Profile on the host, or simulate on a catalog board (at the scenario's rate, in the power mode
    and firmware given); the record lands in the history. With a ``contract``, runs are fed its
    data's rows and ``[model.feeds]`` at its ``[budgets] shape`` (``--shape``/``--inputs`` win)."""
    if opt_level not in ("disable", "basic", "extended", "all"):
        raise DataError(f"--opt-level {opt_level!r}: expected disable, basic, extended or all")
    if engine not in ("builtin", "loadgen"):
        raise DataError(f"--engine {engine!r}: expected builtin or loadgen")
    settings = RuntimeSettings(provider=provider_name(provider), intra_op_threads=threads, graph_optimization_level=opt_level)
    options = ProfileOptions(
        scenario=scenario,
        deadline_ms=deadline_ms,
        engine=engine,
        min_sessions=sessions,
        max_sessions=max(sessions, 8),
        samples_per_session=samples,
        time_budget_s=time_budget,
        shapes=parse_shape_overrides(shape),
        inputs_npz=str(inputs) if inputs else None,
        strict=strict,
        # stored check/profile records are what `gate --candidate/--baseline` compares: with the
        # reference workload timed beside the model, the host's drift between them cancels
        reference=True,
    )
    if contract is not None:
        from edgeproof.accuracy import contract_dataset

        dataset = contract_dataset(contract)
        options = stage_options(feeds_for_contract(options, contract, dataset), contract, dataset)
    meter = external_meter(power_csv, power_column)
    with runner_for(target, power_mode=power_mode, firmware=firmware, strict=strict, meter=meter) as runner:
        verb = "profiling" if runner.kind == "measured" else "simulating"
        with progress_bar(f"{verb} {model.name} on {runner.target_id}") as update:
            record = with_stages(runner.run(runner.prepare(model, options), settings, options, update), options, runner.target_id)
    history.append(record)
    return record


def render_run(record: RunRecord) -> None:
    lat = record.latency
    table = Table(title=f"{record.model.name} on {record.target.id} ({record.kind}) — {record.scenario.name}", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("provenance")
    for key in ("p50", "p90", "p95", "p99"):
        iv = lat.ci[key]
        table.add_row(f"{key} latency", f"{getattr(lat, key + '_ms'):.3f} ms", f"{iv.low:.3f}–{iv.high:.3f}", record.latency_provenance)
    table.add_row("samples", f"{lat.n_samples} in {lat.n_sessions} sessions", "", lat.ci_method)
    reasons: list[str] = []
    for name, fig in (
        ("load (cold start)", record.load_time_ms),
        ("peak RSS", record.peak_rss_mib),
        ("model size", record.model_size_mib),
        ("energy / inference", record.energy_mj_per_inference),
        ("sustained power", record.sustained_w),
        ("peak temperature", record.temperature_c),
    ):
        interval = f"{fig.interval[0]:.2f}–{fig.interval[1]:.2f}" if fig.interval else ""
        if fig.value is None:
            why = fig.provenance.split(":", 1)[1]
            if why not in reasons:
                reasons.append(why)
            table.add_row(name, "unavailable", "", f"unavailable [{reasons.index(why) + 1}]")
        else:
            table.add_row(name, f"{fig.value:.3f} {fig.unit}", interval, fig.provenance)
    sc = record.scenario
    if sc.deadline_miss_rate is not None:
        table.add_row("deadline misses", f"{sc.deadline_miss_rate:.2%}", "", f"deadline {sc.deadline_ms:g} ms")
    if sc.queueing_delay_p95_ms is not None:
        table.add_row("queueing delay p95", f"{sc.queueing_delay_p95_ms:.3f} ms", "", record.latency_provenance)
    if sc.throughput_ips is not None:
        table.add_row("throughput", f"{sc.throughput_ips:.1f} inf/s", "", f"batch {sc.batch_size}")
    if sc.loadgen:
        table.add_row("LoadGen result", sc.loadgen["result"], "", "mlperf-loadgen")
    if record.placement:
        p = record.placement
        share = f"{p.fallback_node_frac:.0%} of nodes"
        if p.fallback_time_frac is not None:
            share += f", {p.fallback_time_frac:.0%} of time"
        table.add_row("CPU fallback", share, "", f"{p.provenance} (primary {p.primary_provider})")
    console.print(table)
    for i, why in enumerate(reasons, 1):
        console.print(f"[{i}] {why}", highlight=False)
    render_stages(record)
    for w in lat.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    for w in record.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    if record.fitness and not record.fitness.fit:
        for c in record.fitness.checks:
            if not c.ok:
                console.print(f"[yellow]host unfit:[/] {c.name} = {c.value}: {c.detail}")


def render_stages(record: RunRecord) -> None:
    """The pipeline's end-to-end time by stage, when the record has it (or why it has not)."""
    st = record.stages
    if st is None:
        return
    if st.total is None:
        console.print(f"pipeline stages: unavailable ({st.unavailable})", highlight=False)
        return
    console.print(f"pipeline: {st.pipeline}", highlight=False)
    table = Table(title=f"end to end by stage ({st.n} inferences, one row each)")
    for col, justify in (("stage", "left"), ("p50", "right"), ("p95", "right"), ("share", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for t in [*st.stages, st.total]:
        table.add_row(t.name, f"{t.p50_ms:.3f} ms", f"{t.p95_ms:.3f} ms", f"{t.share:.0%}")
    console.print(table)
    if record.copies is not None and record.copies.count:
        c = record.copies
        console.print(f"copies: {c.count} Memcpy nodes, {c.bytes or 0:.0f} B, {c.time_ms or 0:.3f} ms ({c.provenance})", highlight=False)


def _short(text: str, width: int = 64) -> str:
    """Tables show a provenance's start; the JSON record keeps all of it."""
    return text if len(text) <= width else text[: width - 1] + "…"


def render_verdict(verdict: Verdict) -> None:
    colours = {"pass": "green", "fail": "red", "unverified": "yellow", "waived": "cyan"}
    table = Table(title=f"contract verdict on {verdict.target}: {OUTCOME_WORDS[verdict.outcome]}")
    for col in ("clause", "status", "value", "budget", "margin", "provenance"):
        table.add_column(col)
    for c in verdict.clauses:
        fmt = lambda v, unit=c.unit: "—" if v is None else f"{v:.4g} {unit}"
        status = f"[{colours[c.status]}]{c.status}[/]" + ("" if c.hard else " (soft)")
        budget = fmt(c.budget) + (f" {c.budget_from}" if c.budget_from and c.budget_from.startswith("[budgets.") else "")
        if c.clause == "model.inputs" and c.value is not None:
            # a check, not a quantity: say what was checked
            table.add_row(c.clause, status, escape(c.note.split("; binding")[0]), "—", "—", _short(c.provenance))
            continue
        table.add_row(c.clause, status, fmt(c.value), escape(budget), fmt(c.margin), _short(c.provenance))
    console.print(table)
    if verdict.binding_clause:
        console.print(f"binding clause: [bold]{verdict.binding_clause}[/]")
    if verdict.allow_unverified and any(c.status == "unverified" for c in verdict.clauses):
        console.print("[yellow]--allow-unverified: unverified clauses were counted as passing[/]")
    for w in verdict.waivers_applied:
        console.print(f"[cyan]waiver applied:[/] {escape(w.sentence())}", highlight=False, soft_wrap=True)
    for w in verdict.waivers_expired:
        console.print(f"[yellow]waiver not applied:[/] {escape(w.sentence(expired=True))}", highlight=False, soft_wrap=True)
    for why in verdict.undecided_because:
        console.print(f"[yellow]could not decide:[/] {escape(why)}", highlight=False, soft_wrap=True)
    for line in verdict.record_mode:
        console.print(f"record mode: {escape(line)}", highlight=False, soft_wrap=True)
    for advice in verdict.advice:
        console.print(f"[yellow]advice:[/] {escape(advice)}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def doctor(
    target: Annotated[
        str, typer.Option("--target", help="host, or device:<id>: the agent's fingerprint, lock, disk budget and bring-up checklist.")
    ] = "host",
) -> None:
    """Check whether this host (or a device) is fit for measuring: exit 0 fit, 1 unfit."""
    if target.startswith("device:"):
        from edgeproof.cli import device_cmd

        device_cmd.doctor(target)
    if target != "host":
        raise DataError(f"doctor --target {target!r}: give host or device:<id> (a catalog board is simulated, not measured)")
    from edgeproof.measure import thermal

    fitness = check_host(thermal.max_temperature_c())
    table = Table(title=f"host fitness: {'fit' if fitness.fit else 'UNFIT'}")
    for col in ("check", "ok", "value", "detail"):
        table.add_column(col)
    for c in fitness.checks:
        table.add_row(c.name, "[green]yes[/]" if c.ok else "[red]no[/]", c.value, c.detail)
    console.print(table)
    raise typer.Exit(0 if fitness.fit else 1)


@app.command()
@user_errors
def profile(
    model: ModelArg,
    target: TargetOpt = "host",
    scenario: ScenarioOpt = "single-stream",
    threads: ThreadsOpt = 1,
    provider: ProviderOpt = "cpu",
    opt_level: OptLevelOpt = "all",
    sessions: SessionsOpt = 3,
    samples: SamplesOpt = 300,
    time_budget: BudgetOpt = 60.0,
    engine: EngineOpt = "builtin",
    shape: ShapeOpt = None,
    inputs: InputsOpt = None,
    deadline_ms: DeadlineOpt = None,
    json_out: JsonOpt = None,
    strict: StrictOpt = False,
    power_mode: PowerModeOpt = None,
    firmware: FirmwareOpt = None,
    power_csv: PowerCsvOpt = None,
    power_column: PowerColumnOpt = None,
    contract: Annotated[
        Path | None,
        typer.Option("--contract", help="Feed the contract's data and time its [pipeline] end to end by stage (no verdict)."),
    ] = None,
) -> None:
    """Measure a model: latency percentiles with intervals, cold start, peak RSS, energy, placement."""
    from edgeproof.contract import load_contract

    record = measure(
        model,
        target,
        scenario,
        threads,
        provider,
        opt_level,
        sessions,
        samples,
        time_budget,
        engine,
        shape,
        inputs,
        strict,
        deadline_ms,
        power_mode,
        firmware,
        power_csv,
        power_column,
        contract=load_contract(contract) if contract is not None else None,
    )
    render_run(record)
    if json_out:
        save_record(record, json_out)
        console.print(f"record written to {json_out}")


@app.command()
@user_errors
def check(
    model: ModelArg,
    contract: Annotated[Path, typer.Option("--contract", help="Budget contract (TOML).")],
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Count unverified hard clauses as passing, visibly.")
    ] = False,
    target: TargetOpt = "host",
    scenario: Annotated[str | None, typer.Option("--scenario", help="Override the contract's scenario.")] = None,
    threads: ThreadsOpt = 1,
    provider: ProviderOpt = "cpu",
    opt_level: OptLevelOpt = "all",
    sessions: SessionsOpt = 3,
    samples: SamplesOpt = 300,
    time_budget: BudgetOpt = 60.0,
    engine: EngineOpt = "builtin",
    shape: ShapeOpt = None,
    inputs: InputsOpt = None,
    deadline_ms: DeadlineOpt = None,
    json_out: JsonOpt = None,
    strict: StrictOpt = False,
    power_mode: PowerModeOpt = None,
    firmware: FirmwareOpt = None,
    power_csv: PowerCsvOpt = None,
    power_column: PowerColumnOpt = None,
) -> None:
    """Profile, then judge every contract clause: exit 0 pass, 1 fail, 2 bad input, 3 could not decide."""
    from edgeproof.accuracy import evaluate_for_contract
    from edgeproof.contract import evaluate, load_contract

    spec = load_contract(contract)
    # accuracy first: bad data or a metric that raises stops the check before minutes of timing
    evaluation = evaluate_for_contract(spec, model)
    record = measure(
        model,
        target,
        scenario or spec.scenario_for(resolve_target_id(target)),
        threads,
        provider,
        opt_level,
        sessions,
        samples,
        time_budget,
        engine,
        shape,
        inputs,
        strict,
        deadline_ms,
        power_mode,
        firmware,
        power_csv,
        power_column,
        contract=spec,
    )
    if evaluation is not None:
        record = record.model_copy(update={"evaluation": evaluation})
        history.append(record)
    render_run(record)
    render_policy(record.evaluation)
    verdict = evaluate(spec, record, allow_unverified=allow_unverified)
    render_verdict(verdict)
    if json_out:
        save_record(record, json_out)
        save_record(verdict, json_out.with_suffix(".verdict.json"))
    raise typer.Exit(exit_code(verdict.outcome))


def render_policy(evaluation) -> None:
    """The contract's confidence policy per slice: how often the fallback answers, and top-1 without and with it."""
    rows = [(name, m) for name, m in (evaluation.slices.items() if evaluation else []) if m.policy is not None]
    if not rows:
        return
    first = rows[0][1].policy
    table = Table(
        title=f"confidence policy: below {first.min_confidence:g} the {first.fallback} answers (measured:onnxruntime on the slices)"
    )
    for col in ("slice", "fallback rate", "top-1 without", "top-1 with policy"):
        table.add_column(col)
    for name, m in rows:
        table.add_row(name, f"{m.policy.fallback_rate:.1%}", f"{m.accuracy:.1%}", f"{m.policy.accuracy:.1%}")
    console.print(table)


@app.command("history")
@user_errors
def history_cmd(
    model: Annotated[str | None, typer.Option("--model", help="Only runs of this model name.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 30,
) -> None:
    """List past runs and what each changed vs the previous run of the same model and settings."""
    rows = history.list_runs(model=model, limit=limit)
    if not rows:
        console.print(f"no runs recorded yet in {history.history_path()}")
        return
    table = Table(title=f"history ({history.history_path()})")
    for col in (
        "run",
        "when",
        "kind",
        "model",
        "variant",
        "target",
        "thr",
        "scenario",
        "p50 ms",
        "p95 ms",
        "RSS MiB",
        "load ms",
        "energy mJ",
        "worst drop pp",
    ):
        table.add_column(col)

    def cell(row: dict, key: str) -> str:
        value = row[key]
        if value is None:
            return "unavail." if key == "energy_mj" else "—"
        change = row["changes"][key]
        delta = "" if change is None else f" ({change:+.1%})"
        return f"{value:.3g}{delta}"

    for r in rows:
        table.add_row(
            r["run_id"],
            str(r["created_at"])[:19],
            r["kind"],
            r["model_name"],
            r["variant"],
            r["target"],
            str(r["threads"]),
            r["scenario"],
            *(cell(r, k) for k in history.FIGURES),
        )
    console.print(table)
