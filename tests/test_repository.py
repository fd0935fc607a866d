"""The repository itself: what running the README leaves behind, and what test output says."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("example, written", [
    ("seed_backprop.py", "seed_backprop.mat"),
    ("course_classifier.py", "course_classifier.mat"),
])
def test_the_mat_file_a_readme_example_writes_is_ignored_by_git(example, written):
    source = (ROOT / "examples" / example).read_text()
    patterns = [
        line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert re.findall(r'savemat\(\s*"([^"]+)"', source) == [written]
    assert any(fnmatch.fnmatch(written, pattern.lstrip("/")) for pattern in patterns)


def _skip_reasons(tree: ast.AST) -> list[ast.expr]:
    """The ``reason=`` of every call, and the message of every ``pytest.skip(...)``."""
    reasons = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        reasons += [k.value for k in node.keywords if k.arg == "reason"]
        if isinstance(node.func, ast.Attribute) and node.func.attr == "skip" and node.args:
            reasons.append(node.args[0])
    return reasons


def test_skip_reasons_are_fixed_text_naming_no_machine_path():
    found = 0
    for path in sorted((ROOT / "tests").glob("*.py")):
        for reason in _skip_reasons(ast.parse(path.read_text())):
            found += 1
            where = f"{path.name}:{reason.lineno}"
            # Built text (an f-string, a variable) could carry the path of the machine it ran on.
            assert isinstance(reason, ast.Constant) and isinstance(reason.value, str), where
            assert not re.search(r"(^|\s)(/|~/|[A-Za-z]:\\)", reason.value), where
    assert found >= 2  # the CUDA and full-MNIST skips, at least
