"""The `vita` command: one Typer app, one small module per command."""

from importlib.metadata import PackageNotFoundError, version

import typer

# -h beside --help; click hands these settings down to every subcommand and sub-app.
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="vita",
    help="Fast end-to-end speech language models (VITA-Audio compatible).",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
    rich_markup_mode=None,  # click's help: wraps to the terminal and never cuts an option name (Rich's table did)
)


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), so `--version` never drifts from a release."""
    try:
        return version("vita")
    except PackageNotFoundError:  # running from a source tree that was never pip-installed
        from vita_core import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vita {package_version()}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print vita's version and exit."),
) -> None:
    """Fast end-to-end speech language models (VITA-Audio compatible)."""
    if ctx.invoked_subcommand is None:  # a bare `vita` is a request for help, not a usage error
        typer.echo(ctx.get_help())
        raise typer.Exit()


from vita_cli import bench  # noqa: E402,F401  (registers commands on `app`)
from vita_cli import pack, prepare  # noqa: E402,F401  (registers `vita pack` and `vita prepare`)
from vita_cli.eval import app as eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")
from vita_cli.tokenizer import app as tokenizer_app  # noqa: E402

app.add_typer(tokenizer_app, name="tokenizer")
from vita_cli import train  # noqa: E402,F401  (registers `vita train`)
from vita_cli import tts  # noqa: E402,F401
from vita_cli import asr  # noqa: E402,F401
from vita_cli import chat  # noqa: E402,F401
from vita_cli import serve  # noqa: E402,F401
from vita_cli.codec import app as codec_app  # noqa: E402

app.add_typer(codec_app, name="codec")
