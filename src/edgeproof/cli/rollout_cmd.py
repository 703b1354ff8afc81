"""`edgeproof rollout`: validate a staged-rollout plan, dry-run its waves, drive it over its fleet (simulated, or boards
through their agents), and steer it through its journal."""

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
StepOption = Annotated[float, typer.Option("--step-h", help="Simulated hours between controller steps (a simulated fleet).")]
MaxOption = Annotated[float, typer.Option("--max-h", help="Stop after this many hours of the fleet's time (simulated, or wall clock).")]
PollOption = Annotated[float, typer.Option("--poll-s", help="Wall-clock seconds between controller steps (a fleet of agents).")]


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
    from edgeproof.rollout import load_plan, validate_plan
    from edgeproof.rollout._plan import effective_minimum, hardware_classes, stratum_of
    from edgeproof.rollout._run import open_fleet

    loaded = load_plan(plan)
    with tempfile.TemporaryDirectory(prefix="edgeproof-rollout-") as tmp:
        fleet = open_fleet(loaded, Path(tmp))
        try:
            checked, waves = validate_plan(loaded, fleet.transport.inventory())
        finally:
            fleet.close()
    total = sum(len(w) for w in waves)
    _say(
        f"plan {plan} (sha256 {checked.sha256[:12]}…): release {checked.release.name} (model {checked.release.model_sha256[:12]}…, "
        f"{checked.release.firmware_version}), known good {checked.known_good.name} (model {checked.known_good.model_sha256[:12]}…); signatures verify"
    )
    source = (
        f"simulated: fleet simulator, seed {loaded.target.get('seed', 0)}"
        if fleet.kind == "simulated"
        else f"agents of {loaded.target['boards']}, each connected and its slots read"
    )
    _say(f"fleet: {total} devices ({source}); rollback policy: {checked.rollback_policy}")
    for ref, heading, whose in ((checked.release, "hardware classes", "the release's"), (checked.known_good, "rollback target", "its")):
        classes = hardware_classes(ref, [d for w in waves for d in w])
        _say(
            f"{heading}: "
            + ", ".join(f"{board} on {firmware} ({n} devices)" for (board, firmware), n in sorted(classes.items()))
            + f"; {whose} signed BOM states a passing gate verdict for each ({ref.bom})"
        )
        if ref.firmware_image is not None:
            _say(f"  firmware image {ref.firmware_image} sha256 {ref.firmware_sha256[:12]}… matches the plan's pin")
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
    step_h: StepOption = 1.0,
    max_h: MaxOption = 240.0,
    poll_s: PollOption = 10.0,
    actor: ActorOption = "cli",
) -> None:
    """Validate, journal the start, and drive the plan over its fleet (the plan's ``[target]``: simulated, or boards
    through their agents) until it completes, halts, pauses or runs out of time."""
    _drive(journal, plan, actor, step_h, max_h, poll_s)


@rollout_app.command("run")
@user_errors
def run_cmd(
    journal: JournalArg,
    step_h: StepOption = 1.0,
    max_h: MaxOption = 240.0,
    poll_s: PollOption = 10.0,
) -> None:
    """Go on with the rollout journalled in the folder (after a pause, an approval, or a controller that was killed)."""
    _drive(journal, None, "cli", step_h, max_h, poll_s)


def _drive(journal: Path, plan: Path | None, actor: str, step_h: float, max_h: float, poll_s: float) -> None:
    from edgeproof.errors import DataError
    from edgeproof.rollout import drive

    for name, value in (("--step-h", step_h), ("--poll-s", poll_s)):
        if not value > 0:
            raise DataError(f"{name} must be > 0, got {value:g}")
    state = drive(journal, plan, actor, step_h, max_h, poll_s)
    _print_state(journal)
    # 0 complete, 1 halted or aborted, 3 not decided yet (paused, escalated, out of simulated time)
    raise typer.Exit(0 if state.phase == "complete" else 1 if state.phase in ("halted", "aborted") else 3)


def _time_basis(start: dict[str, object] | None) -> str:
    """What the journal's times are: the fleet simulator's hours, or the wall clock of a fleet of agents (from the plan)."""
    from edgeproof.errors import EdgeproofError
    from edgeproof.rollout import load_plan

    if start is None:
        return "no rollout started"
    try:
        target = load_plan(Path(str(start["plan"]))).target
    except (EdgeproofError, OSError):
        return f"the fleet of {start['plan']}, which no longer reads"
    if target.get("kind", "simulated") == "agents":
        return f"wall-clock hours since the start; agents of {target['boards']}"
    return "simulated hours of the fleet simulator"


def _print_state(journal: Path) -> None:
    from edgeproof.rollout import Journal, fold

    j = Journal(journal)
    s = fold(j.entries)
    start = next(iter(j.of_kind("start")), None)
    t0 = float(start["at_s"]) if start is not None else 0.0
    _say(
        f"rollout in {journal}: {s.phase}{' (paused)' if s.paused else ''}, wave {s.wave}, {len(j.entries)} journal entries, "
        f"{len(s.rolled_back)} devices rolled back, {len(s.self_reverts)} self-reverted (time: {_time_basis(start)})"
    )
    for e in s.self_reverts:
        _say(
            f"  t={(e['at_s'] - t0) / 3600:.2f} h self-revert: device {e['device']} ({e['stratum']}) reverted {e['intent']} by itself: "
            f"{e['reason']}; re-reports slot {e['slot'] or '-'}, model {e['model_sha256'][:12] or '-'}…, firmware "
            f"{e['firmware_version'] or '-'}, {'committed' if e['committed'] else 'not committed'}; on the known-good pair: "
            f"{'yes' if e['on_known_good'] else 'no'} (as the device re-reported it)"
        )
    for e in j.entries:
        if e["kind"] == "reconciled" and e["intent"].startswith("rollback:"):
            _say(
                f"  rollback verified: {e['devices']} devices re-report the known-good model {e['model_sha256'][:12]}… (as the fleet transport reports them)"
            )
    for d in s.decisions:
        if d["outcome"] == "hold" and d is not s.decisions[-1]:
            continue
        _say(f"  t={(d['at_s'] - t0) / 3600:.2f} h wave {d['wave']}: {d['outcome']} by {d['actor']}: {d['reason']}")


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
