"""Progress where stdout is not a terminal: plain lines, at most one per interval.

The clock is injected (no test waits or measures time); the command-line tests set the
interval to zero, so that every update is due and the lines' form can be checked.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import gradproof.cli.progress as progress
from gradproof.cli import main
from gradproof.cli.progress import PlainProgress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_is_printed_only_once_the_interval_has_passed_since_the_last():
    out, clock = io.StringIO(), Clock()
    plain = PlainProgress(Console(file=out, width=80), interval=5.0, clock=clock)
    for now in (101.0, 104.9, 105.0, 106.0, 109.9, 110.0, 130.0):
        clock.now = now
        plain(lambda seconds: f"at {seconds:g} s")
    assert out.getvalue().splitlines() == ["at 5 s", "at 10 s", "at 30 s"]


def test_a_line_too_long_for_the_console_is_not_wrapped():
    out, clock = io.StringIO(), Clock()
    plain = PlainProgress(Console(file=out, width=20), interval=1.0, clock=clock)
    clock.now += 1
    plain(lambda _: "x " * 30)
    assert len(out.getvalue().splitlines()) == 1


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    monkeypatch.delenv("GRADPROOF_MNIST_DIR", raising=False)


def test_train_in_a_log_prints_plain_step_lines(tmp_path, capsys, every_update):
    argv = ["train", "--limit", "300", "--hidden", "8", "--epochs", "2", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if " step " in line]
    assert steps[0].startswith("epoch 1/2  step 1/3  loss ") and steps[-1].startswith("epoch 2/2  step 3/3")
    assert len(steps) == 6 and not any("\r" in line or "━" in line for line in lines)
    assert lines.index(next(line for line in lines if line.startswith("epoch 1/2  loss"))) == 3


def test_check_in_a_log_prints_plain_progress_lines_and_json_stays_pure(capsys, every_update):
    assert main(["check", "--hidden", "4", "--batch", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ticks = [line for line in lines if line.startswith("checking (exact): ")]
    assert ticks and all(" perturbed points, " in line for line in ticks)
    assert main(["check", "--hidden", "4", "--json"]) == 0
    assert capsys.readouterr().out.lstrip().startswith("{")
