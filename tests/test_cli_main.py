"""The top-level command line: dispatch, exit codes and the module entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gradproof
from gradproof.cli import COMMANDS, EXIT_USAGE, main


def test_no_command_prints_the_commands_and_exits_2(capsys):
    assert main([]) == EXIT_USAGE
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gradproof {gradproof.__version__}"


def test_an_unknown_command_is_a_one_line_usage_error(capsys):
    assert main(["frobnicate"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid choice" in err and "frobnicate" in err
    assert "Traceback" not in err


def test_python_dash_m_runs_the_same_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "gradproof", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"gradproof {gradproof.__version__}"



# Each of these costs a noticeable fraction of a second to import, which a short check on a
# busy core pays in full.
NOT_IMPORTED = {
    "check": ["gradproof.cli.train", "gradproof.cli.demo", "scipy.special", "scipy.optimize",
              "scipy.io"],
    "train": ["gradproof.cli.check", "gradproof.cli.octave", "scipy.special", "scipy.optimize",
              "scipy.io"],
}


@pytest.mark.parametrize("command", NOT_IMPORTED)
def test_a_command_imports_its_own_module_and_not_the_others_or_their_scipy_parts(command):
    watched = [f"gradproof.cli.{command}", *NOT_IMPORTED[command]]
    probe = (f"import sys; from gradproof.cli import main; main([{command!r}, '--help']); "
             f"print([m for m in {watched!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == f"['gradproof.cli.{command}']"
