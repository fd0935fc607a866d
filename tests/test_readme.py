"""The README's Python examples print what the README says they print.

Each ```python block that is followed by a ```text block is run on its own in a fresh
interpreter (numpy and gradproof imported, as every example does first) and its output compared
with the text block line by line, with numbers masked: times, evaluation counts and the last
digits of errors change from machine to machine, the words and the structure must not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = re.compile(r"```python\n(.*?)```\s*\n```text\n(.*?)```", re.S)
NUMBER = re.compile(r"\d+(\.\d+)?(e[-+]\d+)?")
PRELUDE = "import numpy as np\nimport gradproof as gp\n"


def examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(README.read_text())


def masked(text: str) -> list[str]:
    return [NUMBER.sub("#", line).rstrip() for line in text.strip().splitlines()]


def test_the_readme_has_examples_with_their_output():
    assert len(examples()) >= 10


@pytest.mark.parametrize(("code", "shown"), examples(),
                         ids=[code.splitlines()[0][:40] for code, _ in examples()])
def test_an_example_prints_what_the_readme_shows(code, shown, tmp_path):
    run = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert masked(run.stdout) == masked(shown)
