"""A new user's first commands: --version, -h, a bare `vita`, help that fits 80 columns."""

from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from vita_cli.main import app

runner = CliRunner()


def test_version_comes_from_package_metadata():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.stdout.strip() == f"vita {version('vita')}"


@pytest.mark.parametrize("argv", [[], ["eval"]])
def test_bare_command_prints_help_and_exits_0(argv):
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.stdout and "Commands" in r.stdout


@pytest.mark.parametrize("argv", [["-h"], ["tts", "-h"], ["eval", "-h"], ["eval", "seed-tts", "-h"], ["bench", "-h"]])
def test_dash_h_is_help(argv):
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.stdout and "--help" in r.stdout


def test_log_lines_are_plain():
    """Progress lines carry the message (and time), not the source file and line that printed them."""
    import re

    r = runner.invoke(app, ["bench", "--preset", "tiny", "--modes", "vanilla", "--new-tokens", "16", "--repeats", "1",
                            "--warmup", "0"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "building a random tiny model on cpu" in r.stderr
    assert not re.search(r"\w+\.py:\d+", r.stderr), r.stderr
