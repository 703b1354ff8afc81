"""`edgeproof gate`: contract verdict and regression statistics per target; exit 0 pass, 1 fail, 2 bad input, 3 could not decide."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeproof.cli._app import app, console, user_errors
from edgeproof.cli.core import FirmwareOpt, PowerModeOpt, TargetOpt, ThreadsOpt, progress_bar, render_verdict
from edgeproof.errors import DataError
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
    target: TargetOpt = "host",
    power_mode: PowerModeOpt = None,
    firmware: FirmwareOpt = None,
    allow_unverified: Annotated[bool, typer.Option("--allow-unverified")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for gate.md, gate.junit.xml, gate.sarif, gate.json (and measured records).")
    ] = None,
) -> None:
    """Gate a release: every contract clause, plus regression vs baseline (latency ratio intervals,
    paired accuracy test, memory, energy, new CPU-fallback nodes)."""
    from edgeproof.contract import load_contract
    from edgeproof.gate import gate as run_gate
    from edgeproof.gate_output import to_json, to_junit, to_markdown, to_sarif

    spec = load_contract(contract)
    candidates: list[RunRecord] = [load_record(p) for p in candidate or []]
    baselines: list[RunRecord] = [load_record(p) for p in baseline or []]
    if measure:
        from edgeproof.gate import measure_pair
        from edgeproof.measure.interleaved import InterleaveOptions
        from edgeproof.records import RuntimeSettings

        ab = InterleaveOptions(pairs=pairs, max_pairs=max(pairs, max_pairs))
        with progress_bar(f"interleaved A/B on {target}") as update:
            base_rec, cand_rec = measure_pair(
                spec, measure[0], measure[1], target, RuntimeSettings(intra_op_threads=threads), ab, power_mode, firmware, update
            )
        baselines.append(base_rec)
        candidates.append(cand_rec)
        if out:
            save_record(base_rec, out / "baseline.run.json")
            save_record(cand_rec, out / "candidate.run.json")
    if not candidates:
        raise DataError("nothing to gate: give --candidate RUN.json or --measure BASELINE_MODEL CANDIDATE_MODEL")
    verdicts = run_gate(spec, candidates, baselines, allow_unverified=allow_unverified)
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
