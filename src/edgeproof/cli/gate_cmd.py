"""`edgeproof gate`: contract verdict and regression statistics per target; exit 0 pass, 1 fail, 2 bad input, 3 could not decide."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeproof.cli._app import app, console, user_errors
from edgeproof.cli.core import (
    FirmwareOpt,
    InputsOpt,
    PowerColumnOpt,
    PowerCsvOpt,
    PowerModeOpt,
    ShapeOpt,
    TargetOpt,
    ThreadsOpt,
    external_meter,
    progress_bar,
    render_verdict,
)
from edgeproof.errors import DataError
from edgeproof.model import sha256_file
from edgeproof.outcome import OUTCOME_WORDS, exit_code, overall
from edgeproof.records import RunRecord, load_record, save_record, write_atomic


@app.command()
@user_errors
def gate(
    contract: Annotated[Path, typer.Option("--contract", help="Budget contract (TOML).")],
    candidate: Annotated[list[Path] | None, typer.Option("--candidate", help="Candidate run record(s), one per target.")] = None,
    baseline: Annotated[list[Path] | None, typer.Option("--baseline", help="Baseline run record(s), matched by target.")] = None,
    measure: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--measure", help="BASELINE_MODEL CANDIDATE_MODEL: measure both on --target, interleaved in fresh sessions."),
    ] = None,
    pairs: Annotated[int, typer.Option("--pairs", min=2, help="Session pairs for --measure (always run).")] = 10,
    max_pairs: Annotated[
        int,
        typer.Option(
            "--max-pairs", min=2, help="With --measure: add pairs, 5 at a time, up to this many while a latency clause is undecided."
        ),
    ] = 30,
    threads: ThreadsOpt = 1,
    shape: ShapeOpt = None,
    inputs: InputsOpt = None,
    target: TargetOpt = "host",
    power_mode: PowerModeOpt = None,
    firmware: FirmwareOpt = None,
    anchor_bom: Annotated[
        Path | None,
        typer.Option("--anchor-bom", help="With --measure: BOM of the release in the field; its lineage names the anchor release."),
    ] = None,
    anchor_model: Annotated[
        Path | None,
        typer.Option("--anchor-model", help="With --measure: the anchor release's model, measured interleaved with the candidate."),
    ] = None,
    power_csv: PowerCsvOpt = None,
    power_column: PowerColumnOpt = None,
    field: Annotated[
        Path | None,
        typer.Option(
            "--field", help="A folder of telemetry segment files: the cohort's field record is the candidate (see edgeproof.field)."
        ),
    ] = None,
    field_cohort: Annotated[str | None, typer.Option("--field-cohort", help="With --field: only this cohort's windows.")] = None,
    field_model: Annotated[
        Path | None,
        typer.Option("--field-model", help="With --field: the model the cohort runs (its interface and size; picks its windows)."),
    ] = None,
    field_sha256: Annotated[str | None, typer.Option("--field-sha256", help="With --field: the model's sha256 (or a prefix).")] = None,
    allow_unverified: Annotated[bool, typer.Option("--allow-unverified")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for gate.md, gate.junit.xml, gate.sarif, gate.json (and measured records).")
    ] = None,
) -> None:
    """Gate a release: every contract clause, plus regression vs baseline (latency ratio intervals,
    paired accuracy test, memory, energy, new CPU-fallback nodes, and drift vs the lineage's anchor
    release with --anchor-bom/--anchor-model)."""
    from edgeproof.contract import load_contract
    from edgeproof.gate import gate as run_gate
    from edgeproof.gate_output import to_json, to_junit, to_markdown, to_sarif

    spec = load_contract(contract)
    candidates: list[RunRecord] = [load_record(p) for p in candidate or []]
    baselines: list[RunRecord] = [load_record(p) for p in baseline or []]
    anchors: list[tuple[RunRecord, RunRecord]] = []
    anchor_path = _anchor_model(anchor_bom, anchor_model)
    if anchor_path is not None and not measure:
        raise DataError("--anchor-bom/--anchor-model need --measure: the anchor and the candidate are measured interleaved in this run")
    if measure:
        from edgeproof.gate import measure_pair
        from edgeproof.measure.interleaved import InterleaveOptions
        from edgeproof.measure.runner import ProfileOptions
        from edgeproof.model import parse_shape_overrides
        from edgeproof.records import RuntimeSettings

        fed = ProfileOptions(shapes=parse_shape_overrides(shape), inputs_npz=str(inputs) if inputs else None)

        ab = InterleaveOptions(pairs=pairs, max_pairs=max(pairs, max_pairs))
        with progress_bar(f"interleaved A/B on {target}") as update:
            base_rec, cand_rec = measure_pair(
                spec,
                measure[0],
                measure[1],
                target,
                RuntimeSettings(intra_op_threads=threads),
                ab,
                power_mode,
                firmware,
                update,
                options=fed,
                meter=external_meter(power_csv, power_column),
            )
        baselines.append(base_rec)
        candidates.append(cand_rec)
        if anchor_path is not None and sha256_file(anchor_path) == base_rec.model.sha256:
            anchors.append((base_rec, cand_rec))  # the baseline is the anchor: the same interleaved pair
        elif anchor_path is not None:
            from edgeproof.gate import measure_anchor

            with progress_bar(f"anchor vs candidate, interleaved on {target}") as update:
                anchor_pair = measure_anchor(
                    spec,
                    anchor_path,
                    measure[1],
                    target,
                    RuntimeSettings(intra_op_threads=threads),
                    ab,
                    power_mode,
                    firmware,
                    update,
                    meter=external_meter(power_csv, power_column),
                    options=fed,
                )
            anchors.append(anchor_pair)
            if out:
                save_record(anchor_pair[0], out / "anchor.run.json")
        if out:
            save_record(base_rec, out / "baseline.run.json")
            save_record(cand_rec, out / "candidate.run.json")
    if field is not None:
        candidates.append(_field_candidate(spec, field, field_cohort, field_model, field_sha256, target, out))
    if not candidates:
        raise DataError("nothing to gate: give --candidate RUN.json or --measure BASELINE_MODEL CANDIDATE_MODEL")
    between = None
    if candidates and baselines and not measure:
        from edgeproof import history
        from edgeproof.gate import between_run_from_history

        between = between_run_from_history(history.load_runs(), candidates[0])
    verdicts = run_gate(spec, candidates, baselines, allow_unverified=allow_unverified, anchors=anchors, between=between)
    for v in verdicts:
        render_verdict(v)
    if out:
        artifact = candidates[0].model.path
        write_atomic(out / "gate.md", to_markdown(verdicts))
        write_atomic(out / "gate.junit.xml", to_junit(verdicts))
        write_atomic(out / "gate.sarif", to_sarif(verdicts, artifact))
        write_atomic(out / "gate.json", to_json(verdicts))
        console.print(f"gate outputs written to {out}/ (gate.md, gate.junit.xml, gate.sarif, gate.json)")
    outcome = overall(v.outcome for v in verdicts)
    console.print(f"[bold]{OUTCOME_WORDS[outcome]}[/] ({len(verdicts)} target{'s' if len(verdicts) != 1 else ''})")
    raise typer.Exit(exit_code(outcome))


def _field_candidate(spec, directory: Path, cohort: str | None, model: Path | None, sha: str | None, target: str, out: Path | None):
    """The field record of a cohort's telemetry, judged as a candidate on ``target`` ("field" unless --target names one)."""
    from edgeproof.field import field_record

    target_id = "field" if target == "host" else target
    record, summary = field_record(
        directory, target=target_id, scenario=spec.scenario_for(target_id), cohort=cohort, model_sha256=sha, model_path=model
    )
    console.print(
        f"field: {summary.windows} windows, {summary.devices} device(s), {summary.inferences} inferences "
        f"({record.latency_provenance}); p95 {record.latency.p95_ms:.3f} ms"
        + (f"; mean confidence {summary.mean_confidence:.3f}" if summary.mean_confidence is not None else "")
        + (f"; policy fallback {summary.policy_fallback_rate:.2%}" if summary.policy_fallback_rate is not None else "")
    )
    for problem in summary.problems[:3]:
        console.print(f"[yellow]skipped[/] {problem}")
    if out:
        save_record(record, out / "field.run.json")
    return record


def _anchor_model(anchor_bom: Path | None, anchor_model: Path | None) -> Path | None:
    """The anchor release's model file: ``--anchor-model``, else the one the ``--anchor-bom`` lineage
    names; its bytes must hash to the anchor's sha256 the BOM records."""
    if anchor_bom is None:
        return anchor_model
    from edgeproof.bom import anchor_of, read_bom

    sha, recorded, _ = anchor_of(read_bom(anchor_bom))
    path = anchor_model or (Path(recorded) if recorded else None)
    if path is None or not path.is_file():
        raise DataError(f"{anchor_bom}: the anchor model ({sha[:12]}…) is not at {recorded}; give it with --anchor-model FILE")
    found = sha256_file(path)
    if found != sha:
        raise DataError(f"{path}: sha256 {found[:12]}… is not the anchor release's model ({sha[:12]}…) named by {anchor_bom}")
    return path
