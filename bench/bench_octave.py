"""`gradproof.octave.check` beside the check the courses teach, on MATLAB cost functions.

The classifier is the classic course size, 400-25-10 (10,285 parameters), on 5000 synthetic
examples (pixels uniform in [0, 1], labels uniform in 1..10, weights uniform in +-0.12), its
cost written vectorised in MATLAB (``bench/octave/classifier_cost.m``, lambda = 1). Per round,
alternating so that a change in the machine's load hits every row:

- **identified**: ``gradproof.octave.check`` with ``shapes``: the network identified from the
  cost's own J and every entry checked against its backprop (wall time including Octave's
  start, loading the data and the one call for the gradient);
- **black box**: the same with ``identify=False``, the default mode (auto: every row and
  column of each weight matrix, sampled entries and random directions), as for a cost outside
  the family;
- **the course loop**: ``bench/octave/loop_check.m``, a central difference per entry in an
  Octave loop, timed in Octave on the first ``--subset`` entries and extrapolated to all;
- **the seed network** (``examples/seed_backprop.m``, 784-200-784, 313,600 parameters, one
  example, both mistakes): identified and every entry checked.

One call of each cost is timed in Octave in the same round (the per-call cost the times
depend on). Run: ``python bench/bench_octave.py [--rounds 3] [--subset 100]``; it prints a
table and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io

from gradproof.octave import check
from gradproof.octave.runner import octave_executable

HERE = Path(__file__).resolve().parent / "octave"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIZES = (400, 25, 10)
EXAMPLES_COUNT = 5000
EXPR = "classifier_cost(theta, 400, 25, 10, X, y, 1)"
SHAPES = {"Theta1": (25, 401), "Theta2": (10, 26)}
SEED_EXPR = "seed_backprop(theta, x, 200)"
SEED_SHAPES = {"encoder": (784, 200), "decoder": (200, 784)}


def write_variables(target: Path, seed: int = 0) -> int:
    """The classifier's data and starting weights, as a .mat file; returns the parameters' count."""
    rng = np.random.default_rng(seed)
    n_input, n_hidden, n_labels = SIZES
    size = n_hidden * (n_input + 1) + n_labels * (n_hidden + 1)
    scipy.io.savemat(
        target,
        {
            "X": rng.uniform(size=(EXAMPLES_COUNT, n_input)),
            "y": rng.integers(1, n_labels + 1, size=(EXAMPLES_COUNT, 1)).astype(np.float64),
            "theta": rng.uniform(-0.12, 0.12, size=(size, 1)),
        },
    )
    return size


def octave(script: str) -> str:
    done = subprocess.run(
        [octave_executable(), "--quiet", "--norc", "--no-history", "--eval", script],
        capture_output=True, text=True, check=True,
    )
    return done.stdout


def timed(run: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    out = run()
    return time.perf_counter() - started, out


def loop_seconds(variables: Path, subset: int) -> tuple[float, float]:
    """Seconds of the course loop over ``subset`` entries, and of one call of the cost."""
    script = (
        f"addpath('{HERE}'); load('{variables}'); f = @(theta) {EXPR}; "
        "f(theta); started = tic(); f(theta); one = toc(started); "
        f"printf('%.6f %.6f\\n', loop_check(f, theta, {subset}), one);"
    )
    loop, one = (float(v) for v in octave(script).split()[-2:])
    return loop, one


def seed_call_seconds(variables: Path) -> float:
    script = (
        f"addpath('{EXAMPLES}'); load('{variables}'); f = @(theta) {SEED_EXPR}; "
        "f(theta); started = tic(); for k = 1:10; f(theta); end; printf('%.6f\\n', toc(started) / 10);"
    )
    return float(octave(script).split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subset", type=int, default=100)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows: dict[str, list[float]] = {k: [] for k in
                                    ("identified", "black", "loop", "call", "seed", "seed_call")}
    with tempfile.TemporaryDirectory() as scratch:
        variables = Path(scratch) / "classifier.mat"
        size = write_variables(variables)
        seed = Path(scratch) / "seed.mat"
        octave(f"addpath('{EXAMPLES}'); seed_backprop_vars('{seed}', 784, 200);")
        for _ in range(args.rounds):
            seconds, identified = timed(
                lambda: check(EXPR, path=HERE, variables=variables, shapes=SHAPES))
            rows["identified"].append(seconds)
            seconds, black = timed(
                lambda: check(EXPR, path=HERE, variables=variables, shapes=SHAPES,
                              identify=False))
            rows["black"].append(seconds)
            loop, one = loop_seconds(variables, args.subset)
            rows["loop"].append(loop * size / args.subset)
            rows["call"].append(one)
            seconds, seed_report = timed(
                lambda: check(SEED_EXPR, path=EXAMPLES, variables=seed, shapes=SEED_SHAPES))
            rows["seed"].append(seconds)
            rows["seed_call"].append(seed_call_seconds(seed))
    med = {k: statistics.median(v) for k, v in rows.items()}
    seed_bugs = ", ".join(sorted(f"{f.kind} {f.tensor}" for f in seed_report.findings if f.is_bug))
    print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"medians of {args.rounds} rounds")
    print(f"one call of the classifier's cost in Octave: {med['call'] * 1e3:.1f} ms; "
          f"of the seed's: {med['seed_call'] * 1e3:.1f} ms")
    print("| check | entries | cost evaluations | seconds |")
    print("|---|---|---:|---:|")
    print(f"| classifier, `gradproof octave` identified (passed: {identified.passed}) "
          f"| {size:,}, every one | {identified.loss_evaluations:,} | {med['identified']:.1f} |")
    print(f"| classifier, `gradproof octave --black-box`, mode auto (passed: {black.passed}) "
          f"| rows, columns, samples, directions | {black.loss_evaluations:,} "
          f"| {med['black']:.1f} |")
    print(f"| classifier, course loop in Octave, {args.subset} entries timed, extrapolated "
          f"| {size:,}, one by one | {2 * size:,} | {med['loop']:.0f} |")
    print(f"| seed network, `gradproof octave` identified ({seed_bugs}) "
          f"| 313,600, every one | {seed_report.loss_evaluations:,} | {med['seed']:.1f} |")
    print("rounds (s): " + "; ".join(f"{k} " + ", ".join(f"{v:.2f}" for v in vals)
                                     for k, vals in rows.items()))


if __name__ == "__main__":
    main()
