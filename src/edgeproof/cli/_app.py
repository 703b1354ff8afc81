"""The typer app and the one place where user errors become one line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from edgeproof.errors import EdgeproofError
from edgeproof.outcome import EXIT_BAD_INPUT

app = typer.Typer(
    name="edgeproof",
    help="Prove an ML model fits its edge board before it ships, and keep it fitting in the field.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (CI logs, tests) gets a wide fixed width instead of rich's 80 columns, so tables stay readable.
_PIPE_WIDTH = 160
console = Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command so bad input prints one line on stderr and exits 2, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeproofError as exc:
            # escaped: messages name contract tables ([model.feeds], [budgets]) that are not markup
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            # A path the user gave that cannot be read or written (a folder for a file, no permission,
            # a full disk): their input to fix, not a bug to trace.
            where = f"{exc.filename}: " if exc.filename else ""
            err_console.print(f"[bold red]error:[/] {where}{exc.strerror or exc}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper
