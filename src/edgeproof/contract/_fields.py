"""Checks for single contract values: names, choices, dates, scenarios; each raises a message fit for the user."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator

from edgeproof.errors import suggest
from edgeproof.scenario_grammar import split_scenario

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def one_of(choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown value {value!r}{suggest(value, choices)}; expected one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def valid_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a name: use letters, digits, '_' and '-'")
    return value


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be > 0, got {value:g}")
    return value


def non_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def unique(values: list[Any]) -> list[Any]:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"{seen[0]!r} is listed twice")
    return values


def as_date(value: object) -> object:
    # A TOML offset date-time is a datetime (a date subclass); an expiry is a calendar day.
    if isinstance(value, datetime):
        raise ValueError("must be a date (YYYY-MM-DD), not a date-time")
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date; write YYYY-MM-DD") from None
    return value


Text = Annotated[str, AfterValidator(non_empty)]
Name = Annotated[str, AfterValidator(valid_name)]


def parse_scenario(text: str) -> tuple[str, float | None]:
    """(name, rate in Hz or None) of a scenario text; a ValueError for the loader to place at its line."""
    return split_scenario(text)


def scenario(text: str) -> str:
    parse_scenario(text)
    return text
