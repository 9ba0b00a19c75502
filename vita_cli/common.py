"""Helpers shared by the command modules: one-line errors, consoles, device/dtype flags."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

from vita_core.errors import VitaError

console = Console()
err_console = Console(stderr=True, log_path=False)  # log lines: time and message, no source file:line

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    """Print a one-line error and exit with status 1."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def handle_errors(fn: F) -> F:
    """Turn a VitaError raised by the library into a one-line message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VitaError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 turn', '2 turns' (or `many` for irregular plurals)."""
    return f"{count} {word if count == 1 else many or word + 's'}"
