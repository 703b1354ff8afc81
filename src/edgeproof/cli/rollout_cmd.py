"""`edgeproof rollout`: validate a staged-rollout plan, dry-run its waves, drive it over a simulated fleet, and steer it through its journal."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from edgeproof.cli._app import app, console, user_errors

rollout_app = typer.Typer(help="Staged rollout: waves gated by the fleet alarms, a journalled controller, rollback.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

JournalArg = Annotated[Path, typer.Option("--journal", help="The rollout's folder (journal.jsonl, fleet store, spool).")]
ActorOption = Annotated[str, typer.Option("--actor", help="Who decides (recorded in the audit entries).")]


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


@rollout_app.command("plan")
@user_errors
def plan_cmd(
    plan: Annotated[Path, typer.Argument(help="The plan TOML.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and list what each wave selects; send nothing.")] = False,
    show_devices: Annotated[bool, typer.Option("--devices", help="List every selected device id.")] = False,
) -> None:
    """Validate a plan against its fleet (signatures, selectors, minimums per stratum, 100% reach, a passing verdict in the
    release's BOM for each board and firmware) and list each wave's devices."""
    from edgeproof.rollout import load_plan, simulated_fleet, validate_plan
    from edgeproof.rollout._plan import effective_minimum, hardware_classes, stratum_of

    loaded = load_plan(plan)
    with tempfile.TemporaryDirectory(prefix="edgeproof-rollout-") as tmp:
        fleet = simulated_fleet(loaded, Path(tmp))
        try:
            checked, waves = validate_plan(loaded, fleet.inventory())
        finally:
            fleet.close()
    total = sum(len(w) for w in waves)
    _say(
        f"plan {plan} (sha256 {checked.sha256[:12]}…): release {checked.release.name} (model {checked.release.model_sha256[:12]}…, "
        f"{checked.release.firmware_version}), known good {checked.known_good.name} (model {checked.known_good.model_sha256[:12]}…); signatures verify"
    )
    _say(
        f"fleet: {total} devices (simulated: fleet simulator, seed {loaded.target.get('seed', 0)}); rollback policy: {checked.rollback_policy}"
    )
    classes = hardware_classes(checked.release, [d for w in waves for d in w])
    _say(
        "hardware classes: "
        + ", ".join(f"{board} on {firmware} ({n} devices)" for (board, firmware), n in sorted(classes.items()))
        + f"; the release's signed BOM states a passing gate verdict for each ({checked.release.bom})"
    )
    reached = 0
    for i, (wave, devices) in enumerate(zip(checked.waves, waves)):
        reached += len(devices)
        strata = Counter(stratum_of(d.labels) for d in devices)
        _say(
            f"  {wave.name} ({wave.kind}): {len(devices)} devices, {100 * reached / max(1, total):.1f}% cumulative, "
            f"{len(strata)} strata (smallest {min(strata.values())}, minimum {effective_minimum(checked, i)}), soak {wave.soak_h:g} h"
        )
        if show_devices:
            _say("    " + " ".join(d.device_id for d in devices))
    if not dry_run:
        _say("(validated only; `edgeproof rollout start` runs it)")


@rollout_app.command("start")
@user_errors
def start_cmd(
    plan: Annotated[Path, typer.Argument(help="The plan TOML.")],
    journal: JournalArg,
    step_h: Annotated[float, typer.Option("--step-h", help="Simulated hours between controller steps.")] = 1.0,
    max_h: Annotated[float, typer.Option("--max-h", help="Stop after this many simulated hours.")] = 240.0,
    actor: ActorOption = "cli",
) -> None:
    """Validate, journal the start, and drive the plan over its simulated fleet until it completes, halts, pauses or runs out of time."""
    _drive(journal, plan, actor, step_h, max_h)


@rollout_app.command("run")
@user_errors
def run_cmd(
    journal: JournalArg,
    step_h: Annotated[float, typer.Option("--step-h", help="Simulated hours between controller steps.")] = 1.0,
    max_h: Annotated[float, typer.Option("--max-h", help="Stop after this many simulated hours.")] = 240.0,
) -> None:
    """Go on with the rollout journalled in the folder (after a pause, an approval, or a controller that was killed)."""
    _drive(journal, None, "cli", step_h, max_h)


def _drive(journal: Path, plan: Path | None, actor: str, step_h: float, max_h: float) -> None:
    from edgeproof.rollout import drive

    state = drive(journal, plan, actor, step_h, max_h)
    _print_state(journal)
    # 0 complete, 1 halted or aborted, 3 not decided yet (paused, escalated, out of simulated time)
    raise typer.Exit(0 if state.phase == "complete" else 1 if state.phase in ("halted", "aborted") else 3)


def _print_state(journal: Path) -> None:
    from edgeproof.rollout import Journal, fold

    j = Journal(journal)
    s = fold(j.entries)
    _say(
        f"rollout in {journal}: {s.phase}{' (paused)' if s.paused else ''}, wave {s.wave}, {len(j.entries)} journal entries, "
        f"{len(s.rolled_back)} devices rolled back (time: simulated hours of the fleet simulator)"
    )
    for e in j.entries:
        if e["kind"] == "reconciled" and e["intent"].startswith("rollback:"):
            _say(
                f"  rollback verified: {e['devices']} devices re-report the known-good model {e['model_sha256'][:12]}… (as the fleet transport reports them)"
            )
    for d in s.decisions:
        if d["outcome"] == "hold" and d is not s.decisions[-1]:
            continue
        _say(f"  t={d['at_s'] / 3600:.1f} h wave {d['wave']}: {d['outcome']} by {d['actor']}: {d['reason']}")


@rollout_app.command("status")
@user_errors
def status_cmd(journal: JournalArg) -> None:
    """The rollout's state and its decisions, read from the journal."""
    _print_state(journal)


def _operator(journal: Path, verb: str, actor: str) -> None:
    """Journal an operator command; the controller acts on it at its next step."""
    from edgeproof.rollout import operator_command

    state = operator_command(journal, verb, actor)
    _say(
        f"{verb} journalled in {journal} by {actor} (rollout {state.phase}, wave {state.wave}); the controller acts on it at its next step"
    )


_OPERATOR_HELP = {
    "pause": "Hold the rollout where it is (no new sends, no judgements) until resume.",
    "resume": "Let a paused rollout go on.",
    "approve": "Let the current wave advance at its next judgement though its gates are undecided (recorded as the operator's decision).",
    "abort": "Stop the rollout and roll every updated device back to the known-good pair (the controller sends it at its next step).",
}


def _operator_command(verb: str) -> None:
    @rollout_app.command(verb, help=_OPERATOR_HELP[verb])
    @user_errors
    def command(journal: JournalArg, actor: ActorOption = "cli") -> None:
        _operator(journal, verb, actor)


for _verb in _OPERATOR_HELP:
    _operator_command(_verb)
