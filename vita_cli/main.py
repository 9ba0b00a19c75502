"""The `vita` command: one Typer app, one small module per command."""

import typer

app = typer.Typer(
    name="vita",
    help="Fast end-to-end speech language models (VITA-Audio compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Fast end-to-end speech language models (VITA-Audio compatible)."""


from vita_cli import bench  # noqa: E402,F401  (registers commands on `app`)
from vita_cli import pack, prepare  # noqa: E402,F401  (registers `vita pack` and `vita prepare`)
from vita_cli.eval import app as eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")
from vita_cli import train  # noqa: E402,F401  (registers `vita train`)
from vita_cli import tts  # noqa: E402,F401
from vita_cli import asr  # noqa: E402,F401
from vita_cli import chat  # noqa: E402,F401
from vita_cli.codec import app as codec_app  # noqa: E402

app.add_typer(codec_app, name="codec")
