"""The board matrix: every model × device × power mode measured on its board and judged by the contract.

One board runs its cells one after another (it measures one job at a time); boards run side by side
on Ray (``edgeproof.farm.ray_farm``) or, without it, one after another in this process. A board lost
mid-cell is retried once after a re-hello; a cell that still cannot be measured is an error with the
reason, and a board that stays dead turns the rest of its cells into errors too. An error is never a pass.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgeproof.agent import AgentError, BoardLost
from edgeproof.errors import EdgeproofError, TargetError
from edgeproof.farm.inventory import Device, get_device, load_inventory
from edgeproof.measure.runner import ProfileOptions
from edgeproof.outcome import Outcome, overall
from edgeproof.records import Evaluation, RunRecord, RuntimeSettings, Verdict

CellOutcome = Literal["pass", "fail", "undecided", "error"]


@dataclass(frozen=True)
class CellPlan:
    """One cell to run: a model on a device in a power mode (None: the mode the board is in)."""

    model: Path
    device: Device
    power_mode: str | None


@dataclass
class Cell:
    """One cell's result: the verdict and record, or the error that kept it from being measured."""

    model: Path
    device_id: str
    power_mode: str | None
    outcome: CellOutcome
    verdict: Verdict | None = None
    record: RunRecord | None = None
    error: str | None = None

    @property
    def target_id(self) -> str:
        return f"device:{self.device_id}"


@dataclass
class MatrixPlan:
    """What a matrix file (or the command line) asks for."""

    models: list[Path]
    devices: list[Device]
    contract: Path | None = None
    modes: dict[str, list[str | None]] = field(default_factory=dict)

    def cells(self) -> list[CellPlan]:
        return [
            CellPlan(model, device, mode)
            for device in self.devices
            for mode in self.modes.get(device.id) or list(device.power_modes) or [None]
            for model in self.models
        ]


def select_devices(spec: str, inventory: str | Path | None = None) -> list[Device]:
    """``all-devices`` (every inventory device, ``local`` only when nothing else is listed) or ids, comma-separated."""
    devices = load_inventory(inventory)
    if spec in ("all", "all-devices"):
        listed = [d for d in devices.values() if d.id != "local"]
        return listed or [devices["local"]]
    return [get_device(part.strip(), inventory) for part in spec.split(",") if part.strip()]


def load_matrix(path: Path, inventory: str | Path | None = None) -> MatrixPlan:
    """A matrix file: ``models`` (paths, relative to the file), ``devices`` (ids or "all-devices"),
    optional ``contract`` and ``[modes]`` (device id → modes, default: the inventory's)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TargetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"{path}: not a TOML matrix ({exc})") from None
    unknown = set(raw) - {"models", "devices", "contract", "modes"}
    if unknown:
        raise TargetError(f"{path}: {sorted(unknown)[0]}: unknown key; a matrix has models, devices, contract and [modes]")
    models = raw.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise TargetError(f"{path}: models: expected a list of model paths")
    devices_spec = raw.get("devices", "all-devices")
    if isinstance(devices_spec, list):
        devices_spec = ",".join(str(d).removeprefix("device:") for d in devices_spec)
    devices = select_devices(str(devices_spec), inventory)
    modes = raw.get("modes") or {}
    if not isinstance(modes, dict) or not all(isinstance(v, list) for v in modes.values()):
        raise TargetError(f"{path}: modes: expected a table of device id = [modes]")
    contract = raw.get("contract")
    return MatrixPlan(
        models=[(path.parent / m).resolve() for m in models],
        devices=devices,
        contract=(path.parent / contract).resolve() if isinstance(contract, str) else None,
        modes={k: list(v) for k, v in modes.items()},
    )


def _judge(
    record: RunRecord, contract_path: Path | None, evaluation: Evaluation | None, allow_unverified: bool
) -> tuple[CellOutcome, Verdict | None]:
    if contract_path is None:
        return "pass", None
    from edgeproof.contract import evaluate, load_contract

    if evaluation is not None:
        record = record.model_copy(update={"evaluation": evaluation})
    verdict = evaluate(load_contract(contract_path), record, allow_unverified=allow_unverified)
    return verdict.outcome, verdict


def run_board_cells(
    cells: list[CellPlan],
    contract: Path | None,
    settings: RuntimeSettings,
    options: ProfileOptions,
    evaluations: dict[Path, Evaluation | None] | None = None,
    allow_unverified: bool = False,
    on_cell: Callable[[Cell], None] | None = None,
) -> list[Cell]:
    """One board's cells, one after another: each power mode opens the board once and runs every model."""
    from edgeproof.runners.agent import AgentRunner

    out: list[Cell] = []
    dead: str | None = None
    by_mode: dict[tuple[str, str | None], list[CellPlan]] = {}
    for plan in cells:
        by_mode.setdefault((plan.device.id, plan.power_mode), []).append(plan)
    for (_, mode), group in by_mode.items():
        runner = None
        for plan in group:
            cell = Cell(plan.model, plan.device.id, mode, "error")
            if dead is not None:
                cell.error = dead
            else:
                try:
                    if runner is None:
                        runner = AgentRunner(plan.device, power_mode=mode).open()
                    record = runner.run(runner.prepare(plan.model, options), settings, options)
                    cell.record = record
                    cell.outcome, cell.verdict = _judge(record, contract, (evaluations or {}).get(plan.model), allow_unverified)
                except BoardLost as exc:
                    dead = cell.error = f"board lost: {exc}"
                    runner = None
                except (AgentError, EdgeproofError) as exc:
                    cell.error = str(exc)
            out.append(cell)
            if on_cell is not None:
                on_cell(cell)
        if runner is not None:
            try:
                runner.close()
            except AgentError:
                pass
    return out


def matrix_outcome(cells: list[Cell]) -> Outcome:
    """Fail if any cell fails by evidence; else could not decide if any cell errored or was undecided."""
    return overall("undecided" if c.outcome == "error" else c.outcome for c in cells)


def by_device(cells: list[CellPlan]) -> dict[str, list[CellPlan]]:
    grouped: dict[str, list[CellPlan]] = {}
    for plan in cells:
        grouped.setdefault(plan.device.id, []).append(plan)
    return grouped


def run_matrix(
    plan: MatrixPlan,
    settings: RuntimeSettings,
    options: ProfileOptions,
    allow_unverified: bool = False,
    on_cell: Callable[[Cell], None] | None = None,
) -> list[Cell]:
    """Every cell, board after board in this process (the farm runs boards side by side on Ray)."""
    evaluations = model_evaluations(plan)
    out: list[Cell] = []
    for cells in by_device(plan.cells()).values():
        out += run_board_cells(cells, plan.contract, settings, options, evaluations, allow_unverified, on_cell)
    return out


def model_evaluations(plan: MatrixPlan) -> dict[Path, Evaluation | None]:
    """Each model's accuracy on the contract's slices, once per model (it does not depend on the board)."""
    if plan.contract is None:
        return {}
    from edgeproof.accuracy import evaluate_for_contract
    from edgeproof.contract import load_contract

    spec = load_contract(plan.contract)
    return {model: evaluate_for_contract(spec, model) for model in plan.models}
