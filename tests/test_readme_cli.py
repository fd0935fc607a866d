"""The README's shell examples print what the README says they print.

Each ```text block of the README made of ``$ command`` lines and their output is run command by
command, through a shell whose ``gradproof`` and ``python`` are this interpreter's, in one folder
for all the blocks (beside a link to ``examples/``): the blocks run in the README's order, as a
reader would type them, so a file one block writes (``seed.mat``) is there for the next. The output (stdout and stderr together) is
compared with the block's, numbers masked, as words rather than lines: rich wraps prose and
tables to the terminal's width, which is the reader's, not the README's. Prose is compared as a
sequence of words, a table's rows as the multiset of their words (a cell wrapped onto two rows
moves its words, it does not change them). ``$ echo $?`` checks the exit code of the command
before it.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"```text\n(\$ .*?)```", re.S)
NUMBER = re.compile(r"\d+(,\d{3})*(\.\d+)?(e[-+]?\d+)?")
TABLE_CHARACTERS = "│┃━─┌┐└┘├┤┬┴┼╇╈"
EXIT_CODE = "echo $?"

# Blocks that cannot be replayed here, by their first command, and why: the list is checked
# against the README, so a block that changes is tested again or listed again.
NOT_REPLAYED = {
    "gradproof compare mean.mat": "mean.mat comes from code the README does not show",
    "gradproof train --epochs 50 --out runs/small --no-plots > train.log":
        "it shows an interrupt by Ctrl-C, after a number of seconds",
    "gradproof octave \"seed_backprop(theta, x, 200)\" --path examples --load seed.mat":
        "its output is abridged (...)",
}


def shell_blocks() -> list[list[tuple[str, str]]]:
    """Each block as its (command, output) pairs, continuation lines joined."""
    blocks = []
    for text in BLOCK.findall(README.read_text()):
        steps: list[tuple[str, list[str]]] = []
        continued = False
        for line in text.splitlines():
            if continued:
                steps[-1] = (steps[-1][0] + " " + line.strip(), steps[-1][1])
            elif line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
            continued = line.endswith("\\")
            if continued:
                steps[-1] = (steps[-1][0][:-1].rstrip(), steps[-1][1])
        blocks.append([(command, "\n".join(output)) for command, output in steps])
    return blocks


def replayed() -> list[list[tuple[str, str]]]:
    return [block for block in shell_blocks() if _first(block) not in NOT_REPLAYED]


def _first(block: list[tuple[str, str]]) -> str:
    return block[0][0].split("    #")[0].strip()


def _needs_octave(block: list[tuple[str, str]]) -> bool:
    return any("octave" in command.split()[0:2] or command.startswith("octave-cli")
               for command, _ in block)


def words(text: str) -> tuple[list[str], Counter]:
    """The prose's words in order and the tables' words counted, numbers masked."""
    prose: list[str] = []
    table: Counter = Counter()
    for line in text.splitlines():
        masked = NUMBER.sub("#", line)
        if any(character in masked for character in TABLE_CHARACTERS):
            for character in TABLE_CHARACTERS:
                masked = masked.replace(character, " ")
            table.update(masked.split())
        else:
            prose.extend(masked.split())
    return prose, table


def _shims(folder: Path) -> Path:
    """``gradproof`` and ``python`` commands that run this interpreter."""
    folder.mkdir()
    for name, tail in (("gradproof", " -m gradproof"), ("python", "")):
        shim = folder / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)}{tail} "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return folder


def test_the_readme_has_shell_examples_and_the_skipped_ones_exist():
    firsts = [_first(block) for block in shell_blocks()]
    assert len(replayed()) >= 8
    assert set(NOT_REPLAYED) <= set(firsts)


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reader")
    (folder / "examples").symlink_to(ROOT / "examples")
    _shims(folder / "bin")
    return folder


@pytest.mark.parametrize("block", replayed(), ids=[_first(block)[:60] for block in replayed()])
def test_a_shell_example_prints_what_the_readme_shows(block, reader_folder, request):
    if _needs_octave(block):
        request.getfixturevalue("octave")
    environment = {**os.environ, "COLUMNS": "120",
                   "PATH": f"{reader_folder / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    last_exit_code = None
    for command, shown in block:
        if command == EXIT_CODE:
            assert str(last_exit_code) == shown.strip(), f"exit code of the command before {command!r}"
            continue
        run = subprocess.run(command.split("    #")[0], shell=True, cwd=reader_folder, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=600)
        last_exit_code = run.returncode
        assert words(run.stdout) == words(shown), f"the output of {command!r}:\n{run.stdout}"
