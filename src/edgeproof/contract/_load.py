"""Read a contract file into a Contract, or raise one ContractError naming the file, line and field."""

from __future__ import annotations

import hashlib
import re
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edgeproof.contract._fields import suggest
from edgeproof.contract._locate import key_lines, line_of
from edgeproof.contract._model import Contract, ContractBody
from edgeproof.errors import ContractError, DataError

_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)$")
_EXPECTED = {
    "string_type": "a string",
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "date_type": "a date",
}
_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    (datetime, "a date-time"),
    (date, "a date"),
    (time, "a time"),
)

Loc = tuple[str | int, ...]


def load_contract(path: str | Path) -> Contract:
    """Load and validate a contract TOML file.

    Raises ContractError with ``<file>:<line>: <field>: <problem>`` for a missing or unreadable
    file, a TOML syntax error, an unknown key (with a did-you-mean), a wrong type, a budget that
    is not positive, an unknown unit, a waiver without expiry or for a clause the contract lacks.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ContractError(f"{path}: no such file") from None
    except OSError as exc:
        raise ContractError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(path, str(exc)) from None
    lines = key_lines(text)
    try:
        body = ContractBody.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(path, raw, lines, exc) from None
    contract = Contract(path=path.resolve(), sha256=hashlib.sha256(data).hexdigest(), **dict(body))
    problems = _cross_check(contract)
    if problems:
        raise _first_problem(path, lines, problems)
    return contract


def _syntax_error(path: Path, message: str) -> ContractError:
    match = _TOML_POSITION.search(message)
    if match is None:
        return ContractError(f"{path}: TOML syntax error: {message}")
    reason = message[: match.start()].strip()
    return ContractError(f"{path}:{match.group(1)}: TOML syntax error at column {match.group(2)}: {reason}")


def _validation_error(path: Path, raw: dict[str, Any], lines: dict[Loc, int], exc: ValidationError) -> ContractError:
    """Group pydantic's errors by the key they concern and report the first in file order."""
    grouped: dict[Loc, list[dict[str, Any]]] = {}
    for details in exc.errors():
        err = dict(details)
        grouped.setdefault(_file_path(raw, err), []).append(err)
    # A required key reported missing from a table that also has an unknown key was most likely
    # misspelt: the unknown key (with its did-you-mean) says so better, so the "missing" one goes.
    misspelt_in = {loc[:-1] for loc, errs in grouped.items() if errs[0]["type"] == "extra_forbidden"}
    problems = [
        (loc, _message(loc, errs)) for loc, errs in grouped.items() if not (errs[0]["type"] == "missing" and loc[:-1] in misspelt_in)
    ]
    return _first_problem(path, lines, problems)


def _file_path(raw: dict[str, Any], err: dict[str, Any]) -> Loc:
    """The part of an error's location that exists in the file (dropping pydantic's type tags).

    A missing key is kept as the last part, so the message can name it.
    """
    node: Any = raw
    out: list[str | int] = []
    for part in err["loc"]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif err["type"] == "missing" and part == err["loc"][-1]:
            out.append(part)
            break
        else:
            continue
        out.append(part)
    return tuple(out)


def _message(loc: Loc, errs: list[dict[str, Any]]) -> str:
    # Within a union, a value error from the branch of the right type says more than "wrong type".
    for err in errs:
        if err["type"] == "value_error":
            return str(err["msg"]).removeprefix("Value error, ")
    err = errs[0]
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        what = "table" if isinstance(err["input"], dict) else "key"
        return f"unknown {what} {key!r}{suggest(key, _allowed_keys(loc[:-1]))}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    expected = [_EXPECTED[e["type"]] for e in errs if e["type"] in _EXPECTED]
    if expected:
        return f"wrong type: expected {' or '.join(dict.fromkeys(expected))}, got {_toml_type(err['input'])}"
    return str(err["msg"])


def _toml_type(value: Any) -> str:
    for cls, name in _TOML_TYPES:
        if isinstance(value, cls):
            return f"{name} ({value!r})" if isinstance(value, (bool, int, float, str)) else name
    return type(value).__name__


def _cross_check(contract: Contract) -> list[tuple[Loc, str]]:
    """Problems that span sections: no hard budget, a waiver for a clause that does not exist, bad slices."""
    problems: list[tuple[Loc, str]] = []
    problems.extend(_target_table_problems(contract))
    budget_ids = contract.all_hard_clause_ids()
    if not budget_ids:
        problems.append(((), "no hard budgets: set at least one in [budgets] or a max_drop_pp in a [slices.<name>] table"))
    clause_ids = budget_ids + contract.regression_clause_ids()
    for i, waiver in enumerate(contract.waivers):
        if waiver.clause not in clause_ids:
            known = ", ".join(clause_ids) or "none"
            problems.append(
                (("waivers", i, "clause"), f"no clause {waiver.clause!r} to waive{suggest(waiver.clause, clause_ids)}; clauses: {known}")
            )
        if contract.contract.targets and waiver.target is not None and waiver.target not in contract.contract.targets:
            problems.append(
                (
                    ("waivers", i, "target"),
                    f"target {waiver.target!r} is not in [contract] targets ({', '.join(contract.contract.targets)})",
                )
            )
    problems.extend(_slice_problems(contract))
    problems.extend(_metric_problems(contract))
    return problems


def _metric_problems(contract: Contract) -> list[tuple[Loc, str]]:
    """A floor in a unit its output's metric cannot have (a drop in points on an error, an increase on
    a rate), a floor on an output no metric judges, a pipeline-scoped budget without a pipeline."""
    problems: list[tuple[Loc, str]] = []
    judged = list(contract.evaluation.outputs)
    for name, spec in contract.slices.items():
        for output, unit, _ in spec.floors():
            loc: Loc = ("slices", name, unit) if output is None else ("slices", name, "outputs", output, unit)
            if output is not None and output not in judged:
                known = ", ".join(judged) or "none: add [evaluation.outputs.<name>]"
                problems.append((loc[:-1], f"output {output!r} is not judged by any metric (judged: {known})"))
                continue
            metric, high = contract.metric_of(output), contract.higher_is_better(output)
            which = f"output {output!r}" if output is not None else "the first judged output"
            if high and unit != "max_drop_pp":
                problems.append((loc, f"{which} is judged by {metric} (higher is better): give its floor as max_drop_pp"))
            elif not high and unit == "max_drop_pp":
                problems.append((loc, f"{which} is judged by {metric} (lower is better): give max_increase or max_increase_pct"))
    if contract.budgets.scope == "pipeline" and contract.pipeline is None:
        problems.append((("budgets", "scope"), 'scope = "pipeline" needs a [pipeline] table to time'))
    return problems


def _target_table_problems(contract: Contract) -> list[tuple[Loc, str]]:
    """Each ``[budgets.<target>]`` key must name ``host`` or exactly one catalog board (the board-id prefix rule)."""
    from edgeproof.errors import TargetError
    from edgeproof.targets import get_target
    from edgeproof.targets.host import HOST_ID

    problems: list[tuple[Loc, str]] = []
    for key in contract.budgets.per_target:
        if key == HOST_ID:
            continue
        try:
            get_target(key)
        except TargetError as exc:
            problems.append((("budgets", key), f"[budgets.{key}] is not a target table: {exc}"))
    return problems


def _slice_problems(contract: Contract) -> list[tuple[Loc, str]]:
    """Check each slice with the data package's own rules, so the contract and the data agree."""
    from edgeproof.data.slices import check_slice_specs

    problems: list[tuple[Loc, str]] = []
    for spec in contract.slice_specs():
        try:
            check_slice_specs([spec])
        except DataError as exc:
            problems.append((("slices", spec.name), str(exc).removeprefix(f"slice {spec.name!r}: ")))
    return problems


def _first_problem(path: Path, lines: dict[Loc, int], problems: list[tuple[Loc, str]]) -> ContractError:
    """One line for the problem that comes first in the file, with a count of the others."""
    located = [(line_of(lines, loc), loc, msg) for loc, msg in problems]
    located.sort(key=lambda p: (p[0] is None, p[0] or 0))
    line, loc, msg = located[0]
    where = f"{path}:{line}" if line is not None else str(path)
    field = f" {_dotted(loc)}:" if loc else ""
    more = f" (+{len(located) - 1} more problem{'s' if len(located) > 2 else ''})" if len(located) > 1 else ""
    return ContractError(f"{where}:{field} {msg}{more}")


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{name}" if out else name
    return out


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the table at ``loc`` (a path into the contract file) accepts, for a did-you-mean."""
    model: Any = ContractBody
    skip_next = False
    for part in loc:
        if skip_next:  # a slice name or array index inside a dict or list of tables
            skip_next = False
            continue
        if not _is_model(model) or part not in model.model_fields:
            return []
        model = _inner_model(model.model_fields[part].annotation)
        if isinstance(model, tuple):
            model, skip_next = model[0], True
    return list(model.model_fields) if _is_model(model) else []


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _inner_model(annotation: Any) -> Any:
    """The model class an annotation holds; ``(cls,)`` when it is a dict or list of them."""
    origin = get_origin(annotation)
    if origin in (dict, list):
        return (_inner_model(get_args(annotation)[-1]),)
    for arg in get_args(annotation):
        if _is_model(arg):
            return arg
    return annotation
