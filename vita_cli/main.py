"""The `vita` command: one Typer app, one small module per command."""

import typer

app = typer.Typer(
    name="vita",
    help="Fast end-to-end speech language models (VITA-Audio compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


from vita_cli.eval import app as eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")
