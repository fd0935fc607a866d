"""The two checking speed targets, beside a baseline checkout in the same run.

- ``check_model`` on the seed network with biases (784-200-784, sigmoid, squared error,
  ``Autoencoder(784, 200).init_params(0)``), the first image of ``gradproof.load_mnist()``:
  target <= 25 ms (median);
- ``check_gradient`` (mode auto) on the seed network without biases (``model.loss`` as the
  black box), the same image, as in ``bench_check.py``: target <= 0.5 s (median);
- the same check with the motivating user's own loss as the black box
  (``sigmoid(sigmoid(x @ W1) @ W2)``, squared error, in plain numpy, which validates nothing,
  where ``model.loss`` refuses NaN and Inf in its parameters): "check_gradient numpy".

For each black box the table also gives its loss evaluations per check and the median time of
one evaluation alone, whose product is what the check cannot go below.

Each round starts a fresh process per checkout (``--baseline-src DIR`` names the other
checkout's ``src``; this one's is first on the path otherwise), which times ``--repeats``
checks of each kind after a warm-up; the rounds alternate the checkouts, so a change in the
machine's load hits both. This checkout's process also times each check with
``blas_threads="off"`` (the BLAS library's own thread count), alternating with the default.
Printed: the median over all rounds of each, and the 1-minute load average before and after.

Usage::

    python bench/bench_targets.py --baseline-src ../base/src          # 4 rounds of 15 and 3
    python bench/bench_targets.py --rounds 6 --repeats 20 --gradient-repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _timing import timed

SRC = Path(__file__).resolve().parents[1] / "src"


def worker(repeats: int, gradient_repeats: int, with_off: bool) -> dict[str, Any]:
    """Time the checks in this process; return the seconds of each run by label, and each
    black box's loss evaluations per check and seconds per evaluation."""
    import numpy as np

    import gradproof as gp
    from gradproof import blas

    images, _ = gp.load_mnist()
    x = images[:1]  # (1, 784)
    model = gp.Autoencoder(784, 200)
    params = model.init_params(0)
    plain = gp.Autoencoder(784, 200, bias=False)
    plain_params = plain.init_params(0)
    _, plain_grads = plain.loss_and_grad(plain_params, x)

    def seed_loss(p: dict[str, np.ndarray]) -> float:
        return plain.loss(p, x)

    def sigmoid(s: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-s))

    def numpy_loss(p: dict[str, np.ndarray]) -> float:
        z = sigmoid(sigmoid(x @ p["W1"]) @ p["W2"])  # (1, 784)
        return float(np.sum(0.5 * (z - x) ** 2))

    def gradient_check(loss: Any) -> Any:
        return lambda o: gp.check_gradient(loss, plain_grads, plain_params, **o)

    settings = [{}, {"blas_threads": "off"}] if with_off else [{}]
    checks = {
        "check_model": (repeats, lambda o: gp.check_model(model, params, x, **o)),
        "check_gradient": (gradient_repeats, gradient_check(seed_loss)),
        "check_gradient numpy": (gradient_repeats, gradient_check(numpy_loss)),
    }
    calls, per_call = {}, {}
    for name, loss in (("check_gradient", seed_loss), ("check_gradient numpy", numpy_loss)):
        calls[name] = checks[name][1]({}).loss_evaluations
        with blas.limited("check_gradient"):
            per_call[name] = timed(lambda: loss(plain_params), 200).wall
    times: dict[str, list[float]] = {}
    for name, (count, check) in checks.items():
        for options in settings:  # a warm-up, and a check that the work is right
            if not check(options).passed:
                raise SystemExit(f"{name} {options} failed on a correct gradient")
        for k in range(count):
            for options in settings if k % 2 == 0 else settings[::-1]:
                start = time.perf_counter()
                check(options)
                label = name + (" off" if options else "")
                times.setdefault(label, []).append(time.perf_counter() - start)
    return {"times": times, "calls": calls, "per_call": per_call}


def run_worker(src: Path, args: argparse.Namespace, with_off: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    env.pop("GRADPROOF_BLAS_THREADS", None)
    command = [sys.executable, __file__, "--worker", "--repeats", str(args.repeats),
               "--gradient-repeats", str(args.gradient_repeats)]
    if with_off:
        command.append("--with-off")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15, help="check_model runs per round")
    parser.add_argument("--gradient-repeats", type=int, default=3,
                        help="check_gradient runs per round")
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--with-off", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.repeats, args.gradient_repeats, args.with_off)))
        return 0
    checkouts = {"this checkout": (SRC, True)}
    if args.baseline_src is not None:
        checkouts["baseline"] = (args.baseline_src.resolve(), False)
    print(f"load average at the start {os.getloadavg()[0]:.2f}")
    times: dict[tuple[str, str], list[float]] = {}
    calls: dict[tuple[str, str], int] = {}
    per_call: dict[tuple[str, str], list[float]] = {}
    names = list(checkouts)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            src, with_off = checkouts[name]
            measured = run_worker(src, args, with_off)
            for label, seconds in measured["times"].items():
                times.setdefault((name, label), []).extend(seconds)
            for label, count in measured["calls"].items():
                calls[(name, label)] = count
                per_call.setdefault((name, label), []).append(measured["per_call"][label])
        print(f"  round {round_ + 1} done (load average {os.getloadavg()[0]:.2f})", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print("\n| checkout | check | runs | median | fastest | loss calls | one call "
          "| calls x one call |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, label), values in times.items():
        unit, scale = ("ms", 1e3) if label.startswith("check_model") else ("s", 1.0)
        row = (f"| {name} | {label} | {len(values)} | {statistics.median(values) * scale:.3g} "
               f"{unit} | {min(values) * scale:.3g} {unit} |")
        black_box = (name, label.removesuffix(" off"))
        if black_box in calls:
            one = statistics.median(per_call[black_box])
            row += f" {calls[black_box]} | {one * 1e3:.3f} ms | {calls[black_box] * one:.3g} s |"
        else:
            row += " | | |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
