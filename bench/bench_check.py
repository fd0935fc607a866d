"""Full gradient checks of the seed network: gradproof beside the seed-style loop, torch, scipy.

The seed network: 784-200-784, sigmoid, no biases, ``loss = 0.5 * sum((z - x)**2)``, weights
from ``Autoencoder(784, 200, bias=False).init_params(0)``, on the first image of
``gradproof.load_mnist()``. 313,600 parameters. Every method checks at that point, in
float64, against the model's hand-written gradient unless said otherwise:

* the seed-style loop (written here, plain numpy): perturb one entry in place by ±1e-4,
  recompute the whole loss, restore, compare with the analytic gradient; what a course's
  ``checkNumericalGradient`` does;
* ``gradproof.check_gradient(mode="full")`` on the same numpy loss and the model's
  hand-written gradient; ``mode="auto"`` (the default) too, for reference;
* ``gradproof.check_model``, the exact engine (every entry, local differences);
* ``torch.autograd.gradcheck`` on a torch float64 function computing the same loss of
  (W1, W2): the default (slow) mode builds the Jacobian entry by entry, ``fast_mode=True``
  compares one random projection. Its analytic side is torch's autograd, not the hand-written
  backprop;
* ``scipy.optimize.check_grad`` on the flat vector [W1.ravel(), W2.ravel()]: forward
  differences of every entry, reduced to one number, the 2-norm of the difference.

torch runs on ``--torch-threads`` threads (default 1): on a 2-core machine shared with other
jobs, torch's two intra-op threads wait for each other behind the other jobs, and gradcheck's
loss evaluations took 25 times longer (measured: 3,000 of them in 0.9 s on one thread, 23 s
on two, under a load average of 4.6).

The fast methods (check_model, check_gradient auto, gradcheck fast_mode) take the median of
``--repeats`` runs after a warm-up run; the slow ones run once. ``--quick`` stops each slow
one after ``--budget`` loss evaluations and extrapolates its time to a full run (the table
says so); it then gives no verdict for them.

Run: python bench/bench_check.py [--repeats 3] [--quick [--budget 20000]] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy
import scipy.optimize
import torch

import gradproof as gp

from _timing import timed

# The motivating user's central-difference step.
SEED_STEP = 1e-4


class BudgetSpent(BaseException):
    """Raised by a budgeted loss after its last allowed evaluation. A BaseException, so that
    no checker's ``except Exception`` turns it into an error of its own."""


@dataclass
class Row:
    method: str
    seconds: float
    runs: str
    verdict: str
    verifies: str


class Budget:
    """Counts calls of a loss; with a limit, raises BudgetSpent after that many."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.calls = 0

    def wrap(self, loss: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            if self.limit is not None and self.calls >= self.limit:
                raise BudgetSpent
            self.calls += 1
            return loss(*args)

        return counted


def sigmoid(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-s))


def seed_loss(w1: np.ndarray, w2: np.ndarray, x: np.ndarray) -> float:
    """The seed network's loss, as the motivating user wrote it."""
    a = sigmoid(x @ w1)  # (1, 200)
    z = sigmoid(a @ w2)  # (1, 784)
    return 0.5 * float(np.sum((z - x) ** 2))


def torch_loss(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    z = torch.sigmoid(torch.sigmoid(x @ w1) @ w2)
    return 0.5 * torch.sum((z - x) ** 2)


def seed_loop(params: dict[str, np.ndarray], x: np.ndarray,
              loss: Callable[[np.ndarray, np.ndarray, np.ndarray], float]) -> dict[str, np.ndarray]:
    """Central differences of every entry, one at a time, perturbing a copy in place."""
    work = {name: value.copy() for name, value in params.items()}
    numeric = {}
    for name, value in work.items():
        flat = value.reshape(-1)  # a view: writing it moves the parameter
        out = np.empty(flat.size)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + SEED_STEP
            plus = loss(work["W1"], work["W2"], x)
            flat[i] = old - SEED_STEP
            minus = loss(work["W1"], work["W2"], x)
            flat[i] = old
            out[i] = (plus - minus) / (2 * SEED_STEP)
        numeric[name] = out.reshape(value.shape)
    return numeric


def relative_error(numeric: dict[str, np.ndarray], analytic: dict[str, np.ndarray]) -> float:
    """Largest |n - a| / max(|n|, |a|) over all entries (0 where both are 0)."""
    worst = 0.0
    for name, a in analytic.items():
        n = numeric[name]
        scale = np.maximum(np.abs(n), np.abs(a))
        error = np.abs(n - a) / np.where(scale > 0, scale, 1.0)
        worst = max(worst, float(error.max()))
    return worst


def slow(
    run: Callable[[Budget], Any], budget: int | None, full_calls: int
) -> tuple[Any, float, str]:
    """Run once; with a budget, stop after it and extrapolate to ``full_calls`` evaluations.

    Returns the result (None when stopped), the seconds and how they were obtained.
    """
    counter = Budget(budget)
    start = time.perf_counter()
    try:
        result = run(counter)
    except BudgetSpent:
        seconds = time.perf_counter() - start
        factor = full_calls / counter.calls
        return None, seconds * factor, (
            f"extrapolated x{factor:.0f} from {counter.calls:,} loss evaluations"
        )
    return result, time.perf_counter() - start, "1 run"


def report_verdict(report: gp.GradReport) -> str:
    checked = sum(t.checked for t in report.tensors)
    size = sum(t.size for t in report.tensors)
    worst = max(t.max_rel_error for t in report.tensors)
    verdict = "pass" if report.passed else "FAIL"
    return f"{verdict} ({checked:,}/{size:,} entries, max rel err {worst:.1e})"


@dataclass
class Problem:
    """The point every method checks: the seed network on one image, and its gradient."""

    model: gp.Autoencoder
    params: dict[str, np.ndarray]
    x: np.ndarray
    grads: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return sum(value.size for value in self.params.values())

    def loss(self, p: dict[str, np.ndarray]) -> float:
        return seed_loss(p["W1"], p["W2"], self.x)

    def torch_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(self.params[name]).requires_grad_() for name in ("W1", "W2"))

    def torch_loss(self, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return torch_loss(w1, w2, torch.from_numpy(self.x))


def seed_problem() -> Problem:
    images, _ = gp.load_mnist()
    x = images[:1]  # (1, 784): the first image
    model = gp.Autoencoder(784, 200, bias=False)
    params = model.init_params(0)
    _, grads = model.loss_and_grad(params, x)
    return Problem(model, params, x, grads)


def slow_rows(problem: Problem, budget: int | None) -> list[Row]:
    """Every entry by a full loss evaluation each: one run, or extrapolated from ``budget``."""
    n, params, grads = problem.size, problem.params, problem.grads
    rows = []

    def loop(counter: Budget) -> dict[str, np.ndarray]:
        return seed_loop(params, problem.x, counter.wrap(seed_loss))

    numeric, seconds, runs = slow(loop, budget, 2 * n)
    verdict = "-" if numeric is None else (
        f"no verdict; max rel err {relative_error(numeric, grads):.1e}"
    )
    rows.append(Row("seed-style loop (numpy, h = 1e-4)", seconds, runs, verdict,
                    f"all {n:,} entries one by one, printed for a person to compare"))

    def full(counter: Budget) -> gp.GradReport:
        return gp.check_gradient(counter.wrap(problem.loss), grads, params, mode="full")

    report, seconds, runs = slow(full, budget, 2 * n + 12)
    rows.append(Row("gradproof check_gradient, mode full", seconds, runs,
                    "-" if report is None else report_verdict(report),
                    "all entries one by one, each with its own error estimate and tolerance; "
                    "a verdict per tensor and a diagnosis"))

    def gradcheck(counter: Budget) -> bool:
        return torch.autograd.gradcheck(counter.wrap(problem.torch_loss), problem.torch_inputs())

    passed, seconds, runs = slow(gradcheck, budget, 2 * n + 1)
    rows.append(Row("torch.autograd.gradcheck (default, slow)", seconds, runs,
                    "-" if passed is None else ("pass" if passed else "FAIL"),
                    "all entries one by one (the Jacobian's one row), "
                    "|a - n| <= 1e-5 + 1e-3 |n|; analytic side: torch autograd"))

    split = params["W1"].size
    theta0 = np.concatenate([params["W1"].ravel(), params["W2"].ravel()])
    flat_grad = np.concatenate([grads["W1"].ravel(), grads["W2"].ravel()])

    def flat_loss(theta: np.ndarray) -> float:
        w1 = theta[:split].reshape(params["W1"].shape)
        w2 = theta[split:].reshape(params["W2"].shape)
        return seed_loss(w1, w2, problem.x)

    def check_grad(counter: Budget) -> float:
        return scipy.optimize.check_grad(counter.wrap(flat_loss), lambda _: flat_grad, theta0)

    norm, seconds, runs = slow(check_grad, budget, n + 1)
    verdict = "-" if norm is None else (
        f"one number: ||a - n|| = {norm:.1e} (||a|| = {np.linalg.norm(flat_grad):.1e})"
    )
    rows.append(Row("scipy.optimize.check_grad", seconds, runs, verdict,
                    "all entries by forward differences (h = 1.5e-8), reduced to the 2-norm "
                    "of the difference; no per-entry verdict, no tolerance"))
    return rows


def fast_rows(problem: Problem, repeats: int) -> list[Row]:
    """The methods that take seconds or less: the median of ``repeats`` runs."""
    runs = f"median of {repeats}"
    report, seconds, _ = timed(
        lambda: gp.check_model(problem.model, problem.params, problem.x), repeats
    )
    rows = [Row("gradproof check_model (exact engine)", seconds, runs, report_verdict(report),
                "all entries one by one, exact local central differences, each with its own "
                "error estimate")]

    report, seconds, _ = timed(
        lambda: gp.check_gradient(problem.loss, problem.grads, problem.params), repeats
    )
    rows.append(Row("gradproof check_gradient, mode auto (default)", seconds, runs,
                    report_verdict(report),
                    "every row and column as a random-weighted probe, 32 entries and 2 "
                    f"directions per tensor ({report.loss_evaluations:,} evaluations)"))

    inputs = problem.torch_inputs()
    passed, seconds, _ = timed(
        lambda: torch.autograd.gradcheck(problem.torch_loss, inputs, fast_mode=True), repeats
    )
    rows.append(Row("torch.autograd.gradcheck, fast_mode", seconds, runs,
                    "pass" if passed else "FAIL", "one random projection u·g·v: one number"))
    return rows


def print_table(rows: list[Row]) -> None:
    reference = rows[0].seconds
    print("| method | seconds | runs | vs the seed-style loop | verdict on the correct gradient "
          "| what it verifies |")
    print("|---|---:|---|---:|---|---|")
    for row in rows:
        ratio = reference / row.seconds
        if row is rows[0]:
            relative = "1 (reference)"
        elif ratio >= 1:
            relative = f"{ratio:,.{0 if ratio >= 10 else 1}f}x faster"
        else:
            relative = f"{1 / ratio:.1f}x slower"
        print(f"| {row.method} | {row.seconds:.4g} | {row.runs} | {relative} | {row.verdict} "
              f"| {row.verifies} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each fast method (median; default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="stop each slow method after --budget loss evaluations and "
                        "extrapolate its time")
    parser.add_argument("--budget", type=int, default=20_000,
                        help="loss evaluations per slow method with --quick (default 20000)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch's intra-op threads (default 1, see above)")
    args = parser.parse_args(argv)
    if min(args.repeats, args.budget, args.torch_threads) < 1:
        parser.error("--repeats, --budget and --torch-threads must be at least 1")
    torch.set_num_threads(args.torch_threads)
    load = os.getloadavg()
    print(f"seed network 784-200-784, no biases, one MNIST image; {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start; numpy "
          f"{np.__version__}, scipy {scipy.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)\n")
    problem = seed_problem()
    rows = slow_rows(problem, args.budget if args.quick else None)
    print_table(rows + fast_rows(problem, args.repeats))
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
