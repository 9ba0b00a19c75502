"""A new user's first commands: --version, -h, a bare `vita`, help that fits 80 columns."""

import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

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


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_checkpoint_folder_of_the_readme_is_ignored_by_git():
    r = subprocess.run(["git", "check-ignore", "-q", "ckpt/VITA-Audio-Boost/model.safetensors"], cwd=REPO)
    assert r.returncode == 0  # 1: git would offer to commit gigabytes of weights


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a sub-app (typer vendors its own click)
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def test_help_at_80_columns_shows_every_option_name_whole():
    import typer.main

    root = typer.main.get_command(app)
    commands = list(_commands(root))
    assert len(commands) >= 10
    for path, cmd in commands:
        r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert r.exit_code == 0, (path, r.output)
        lines = r.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, path
        assert "…" not in r.stdout, path
        words = set(r.stdout.replace(",", " ").replace("/", " ").split())
        for param in cmd.params:
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("-"):
                    assert name in words, (path, name)
