"""`gradproof.octave.check` beside the check the courses teach, on the course classifier.

The classifier is the classic course size, 400-25-10 (10,285 parameters), on 5000 synthetic
examples (pixels uniform in [0, 1], labels uniform in 1..10, weights uniform in +-0.12), its
cost written vectorised in MATLAB (``bench/octave/classifier_cost.m``, lambda = 1). Per round,
alternating so that a change in the machine's load hits both:

- **gradproof**: ``gradproof.octave.check`` in its default mode (auto: every row and column
  of each weight matrix, sampled entries and random directions), wall time including Octave's
  start and the one call for the gradient;
- **the course loop**: ``bench/octave/loop_check.m``, a central difference per entry in an
  Octave loop, timed in Octave on the first ``--subset`` entries and extrapolated to all 10,285.

Run: ``python bench/bench_octave.py [--rounds 3] [--subset 200]``; it prints a table and the
load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io

from gradproof.octave import check
from gradproof.octave.runner import octave_executable

HERE = Path(__file__).resolve().parent / "octave"
SIZES = (400, 25, 10)
EXAMPLES = 5000
EXPR = "classifier_cost(theta, 400, 25, 10, X, y, 1)"
SHAPES = {"Theta1": (25, 401), "Theta2": (10, 26)}


def write_variables(target: Path, seed: int = 0) -> int:
    """The classifier's data and starting weights, as a .mat file; returns the parameters' count."""
    rng = np.random.default_rng(seed)
    n_input, n_hidden, n_labels = SIZES
    size = n_hidden * (n_input + 1) + n_labels * (n_hidden + 1)
    scipy.io.savemat(
        target,
        {
            "X": rng.uniform(size=(EXAMPLES, n_input)),
            "y": rng.integers(1, n_labels + 1, size=(EXAMPLES, 1)).astype(np.float64),
            "theta": rng.uniform(-0.12, 0.12, size=(size, 1)),
        },
    )
    return size


def gradproof_seconds(variables: Path) -> tuple[float, bool, int]:
    started = time.perf_counter()
    report = check(EXPR, path=HERE, variables=variables, shapes=SHAPES)
    return time.perf_counter() - started, report.passed, report.loss_evaluations


def loop_seconds(variables: Path, subset: int) -> tuple[float, float]:
    """Seconds of the course loop over ``subset`` entries, and of one call of the cost."""
    script = (
        f"addpath('{HERE}'); load('{variables}'); f = @(theta) {EXPR}; "
        "f(theta); started = tic(); f(theta); one = toc(started); "
        f"printf('%.6f %.6f\\n', loop_check(f, theta, {subset}), one);"
    )
    done = subprocess.run(
        [octave_executable(), "--quiet", "--norc", "--eval", script],
        capture_output=True, text=True, check=True,
    )
    loop, one = (float(v) for v in done.stdout.split()[-2:])
    return loop, one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subset", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        variables = Path(scratch) / "classifier.mat"
        size = write_variables(variables)
        ours, loops, calls = [], [], []
        for _ in range(args.rounds):
            seconds, passed, evaluations = gradproof_seconds(variables)
            ours.append(seconds)
            loop, one = loop_seconds(variables, args.subset)
            loops.append(loop * size / args.subset)
            calls.append(one)
    print(f"400-25-10 classifier, {size:,} parameters, {EXAMPLES} examples; "
          f"load average {os.getloadavg()[0]:.2f}; medians of {args.rounds} rounds")
    print(f"one call of the cost in Octave: {statistics.median(calls) * 1e3:.1f} ms")
    print("| check | entries | seconds |")
    print("|---|---|---|")
    print(f"| gradproof octave (auto, {evaluations:,} evaluations, passed: {passed}) "
          f"| rows, columns, samples, directions | {statistics.median(ours):.1f} |")
    print(f"| course loop in Octave, {args.subset} entries timed, extrapolated "
          f"| {size:,} one by one | {statistics.median(loops):.0f} |")


if __name__ == "__main__":
    main()
