"""README.md's walkthrough runs as written: every shell block marked `<!-- runs -->` is run, in order,
in one shell, in a fresh folder (recipes/ linked in, `vita` and `python` on PATH), and every
`vita` command and flag a marked block names must exist.

The marker is an HTML comment on the line before the block's opening fence, so it does not show when
README is rendered. Blocks that cannot run here (a GPU, several nodes, a live microphone or speaker,
released checkpoints, corpora to download) stay unmarked. README is read at test time, so the test
follows later edits: a marked block that stops working fails here.

Blocks marked `<!-- runs: full -->` instead are the slower rest of the walkthrough (later training
stages, more tts/asr/chat/eval variants, the decoder bench): checked for commands and flags always,
run only with VITA_README_FULL=1, so the default run stays at a few minutes on 2 cores. No block
may need files that only a `full` block makes.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = "<!-- runs -->"
FULL_MARKER = "<!-- runs: full -->"  # run only with VITA_README_FULL=1; no later block may need its files
FULL = os.environ.get("VITA_README_FULL") == "1"


@dataclass(frozen=True)
class Block:
    line: int  # README line of the opening fence
    text: str
    full: bool = False  # marked `runs: full`


def marked_blocks(markdown: str) -> list[Block]:
    """The fenced blocks whose opening fence follows a `<!-- runs -->` (or `<!-- runs: full -->`) line."""
    lines = markdown.splitlines()
    blocks = []
    for n, line in enumerate(lines):
        if line.strip() not in (MARKER, FULL_MARKER):
            continue
        if n + 1 >= len(lines) or not lines[n + 1].startswith("```"):
            raise AssertionError(f"README.md:{n + 1}: {line.strip()} must be followed by a ``` fence")
        end = next((k for k in range(n + 2, len(lines)) if lines[k].startswith("```")), None)
        if end is None:
            raise AssertionError(f"README.md:{n + 2}: the marked block is never closed")
        blocks.append(Block(n + 2, "\n".join(lines[n + 2 : end]), line.strip() == FULL_MARKER))
    return blocks


def commands(block: Block) -> list[tuple[int, list[str]]]:
    """(README line, argv) of each `vita ...` call in a block; continuation lines joined, comments dropped."""
    joined, start, found = "", None, []
    for k, line in enumerate(block.text.splitlines()):
        start = block.line + 1 + k if not joined else start
        joined += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        lexer = shlex.shlex(joined, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|()<>"):  # an operator ends a simple command
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words = words[1:]  # VAR=value before the command
                if words and words[0] == "vita":
                    found.append((start, words[1:]))
                words = []
            else:
                words.append(token)
        joined = ""
    return found


def _click_app():
    from vita_cli.main import app

    return typer.main.get_command(app)


def resolve(argv: list[str]):
    """The (sub)command `vita argv...` runs and the words after its name; AssertionError if none."""
    command, rest = _click_app(), list(argv)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):  # a group (Typer's own click)
        if rest[0] not in command.commands:
            raise AssertionError(f"no such command: {rest[0]!r} (known: {', '.join(sorted(command.commands))})")
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def test_marked_blocks_exist_and_name_real_commands_and_flags():
    blocks = marked_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 5, "README.md has lost its marked walkthrough blocks"
    called = 0
    for block in blocks:
        for line, argv in commands(block):
            called += 1
            try:
                command, rest = resolve(argv)
            except AssertionError as exc:
                raise AssertionError(f"README.md:{line}: vita {' '.join(argv)}: {exc}") from None
            known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            for word in rest:
                flag = word.split("=", 1)[0]
                if flag.startswith("-") and flag != "-" and not re.fullmatch(r"-\d.*", flag):
                    assert flag in known, f"README.md:{line}: `vita {' '.join(argv[:2])}` has no option {flag}"
    assert called, "no `vita` command in the marked blocks"


def test_the_checker_catches_drift():
    """The checks above fail on a renamed command or flag (so they are not vacuous)."""
    with pytest.raises(AssertionError, match="no such command: 'pak'"):
        resolve(["pak", "recipes/data/tiny.yaml"])
    with pytest.raises(AssertionError, match="no such command: 'asrr'"):
        resolve(["eval", "asrr", "--data", "x"])
    command, rest = resolve(["eval", "asr", "--data", "x"])
    assert command.name == "asr" and rest == ["--data", "x"]
    block = Block(10, 'export A=1\nvita pack r.yaml \\\n    --out p  # comment\necho x | vita tts - --out -')
    assert commands(block) == [(12, ["pack", "r.yaml", "--out", "p"]), (14, ["tts", "-", "--out", "-"])]
    with pytest.raises(AssertionError, match="must be followed by a ``` fence"):
        marked_blocks(f"{MARKER}\ntext\n")
    assert marked_blocks(f"{FULL_MARKER}\n```\nvita bench\n```\n") == [Block(2, "vita bench", True)]


def _shim(folder: Path, name: str, argv: list[str]) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"\n')
    path.chmod(0o755)


def test_readme_walkthrough_runs_as_written(tmp_path):
    """The `runs` blocks (the essential chain, a few minutes on 2 cores); with VITA_README_FULL=1 the
    `runs: full` ones too, in README order."""
    blocks = [b for b in marked_blocks(README.read_text(encoding="utf-8")) if FULL or not b.full]
    script = "\n".join(f"echo \"### README.md:{b.line} $(date +%s.%N)\" >&2\n{b.text}" for b in blocks)
    for needed in sorted(set(re.findall(r"/usr/share/[\w./-]+", script))):
        if not Path(needed).exists():
            pytest.skip(f"{needed} is missing (README's system packages: pocketsphinx-testdata)")
    work, bin_dir = tmp_path / "clone", tmp_path / "bin"
    work.mkdir()
    bin_dir.mkdir()
    (work / "recipes").symlink_to(REPO / "recipes")
    _shim(bin_dir, "vita", [sys.executable, "-m", "vita_cli"])
    _shim(bin_dir, "python", [sys.executable])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITA_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO), HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path / "config"), COLUMNS="120", OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=work, env=env,
                            capture_output=True, text=True, timeout=1800)
    starts = re.findall(r"### (README\.md:\d+) ([\d.]+)", result.stderr)
    if result.returncode != 0:
        raise AssertionError(f"the block at {starts[-1][0] if starts else '?'} failed (exit {result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    ends = [float(t) for _, t in starts[1:]] + [time.time()]
    for (where, start), end in zip(starts, ends):  # shown with -s or -rP: where the minutes go
        print(f"{where}: {end - float(start):.1f} s")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"CPU time of the blocks: {cpu:.1f} s (about the wall time on an idle machine: one process, one thread)")
