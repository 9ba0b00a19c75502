"""Helpers shared by the command modules: one-line errors, consoles, device/dtype flags."""

from __future__ import annotations

import functools
import signal
import sys
import threading
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up (temp files, staging folders) runs."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def handle_errors(fn: F) -> F:
    """Turn a VitaError raised by the library into a one-line message and a non-zero exit.

    While the command runs, SIGTERM (kill, a job scheduler's stop) unwinds the stack as Ctrl-C
    does, so nothing half-written is left, and exits with 143 as a plain SIGTERM death would.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
        try:
            return fn(*args, **kwargs)
        except VitaError as exc:
            fail(str(exc))
        except Terminated:
            err_console.print("terminated")
            sys.exit(143)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 turn', '2 turns' (or `many` for irregular plurals)."""
    return f"{count} {word if count == 1 else many or word + 's'}"
