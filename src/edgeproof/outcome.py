"""What a judging command decided (pass, fail, could not decide) and the exit code each one maps to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

EXIT_PASS = 0
EXIT_FAIL = 1  # a contract or gate failure shown by evidence
EXIT_BAD_INPUT = 2  # a user's mistake: one line naming the file and field
EXIT_UNDECIDED = 3  # nothing failed, but something the verdict needs was not measured

Outcome = Literal["pass", "fail", "undecided"]

# How an outcome reads in a title or a summary line.
OUTCOME_WORDS: dict[str, str] = {"pass": "PASS", "fail": "FAIL", "undecided": "COULD NOT DECIDE"}
_EXIT_CODES: dict[str, int] = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "undecided": EXIT_UNDECIDED}


def overall(outcomes: Iterable[Outcome]) -> Outcome:
    """One outcome for many targets: fail if any fails by evidence, else undecided if any is, else pass.

    A failure outranks "could not decide" because it needs no more measurement to be acted on.
    """
    seen = set(outcomes)
    if "fail" in seen:
        return "fail"
    return "undecided" if "undecided" in seen else "pass"


def exit_code(outcome: Outcome) -> int:
    """The process exit code for an outcome: 0 pass, 1 fail, 3 could not decide."""
    return _EXIT_CODES[outcome]
