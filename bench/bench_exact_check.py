"""check_model beside the seed-style loop on the seed network (784-200-784, sigmoid, biases).

All 314,584 parameters, on the first MNIST image of ``gradproof.load_mnist()`` and on its first
100 images. The seed-style loop is what the motivating user ran: perturb one entry in place,
recompute the whole loss (``sigmoid(x @ W1 + b1)`` ..., float64), restore; it is timed on a
spread of entries over all four tensors and extrapolated to all 314,584 (the table says so).
Each time is the median of ``--repeats`` runs after one warm-up run.

Then the accuracy on one image, against autograd (an independent oracle): the largest
|numeric - true| over each tensor, relative to its largest |true gradient|, for check_model's
local differences (every entry) and for the loop's differences of two totals (its entries).
Then the peak memory of one check_model run on the batch (tracemalloc) and the process's
peak resident size.

check_model runs with its defaults (the output series on) and with ``series=False`` (every
output evaluated at every perturbed point). Both wall and CPU times are printed, with ratios
to check_model's default: the cores may be
shared with other processes, whose load inflates wall times most (the load average is
printed); CPU time also counts the threads of a multithreaded BLAS.

With ``--scaling`` it prints instead how check_model's time and peak memory grow with the
batch, the hidden width and the depth (the default network of each row, with biases, on the
first images of the sample; medians of ``--repeats`` runs, one run for the largest cases).

Run: python bench/bench_exact_check.py [--repeats 3] [--loop-entries 3000]
                                        [--batch-loop-entries 300]
     python bench/bench_exact_check.py --scaling
"""

from __future__ import annotations

import argparse
import os
import resource
import tracemalloc
from collections.abc import Callable
from typing import Any

import autograd.numpy as anp
import numpy as np
from autograd import grad as autograd_grad

import gradproof as gp
from gradproof.engine.exact.evaluator import entry_steps
from gradproof.engine.exact.local_delta import LocalDifferences

from _timing import timed

EPS = float(np.finfo(np.float64).eps)


def seed_loss(p: dict[str, np.ndarray], x: np.ndarray) -> float:
    """The motivating user's loss: sigmoid layers, 0.5 * sum of squared errors."""
    a = 1.0 / (1.0 + np.exp(-(x @ p["W1"] + p["b1"])))
    z = 1.0 / (1.0 + np.exp(-(a @ p["W2"] + p["b2"])))
    return 0.5 * float(np.sum((z - x) ** 2))


def oracle_loss(p: dict[str, Any], x: np.ndarray) -> Any:
    a = 1.0 / (1.0 + anp.exp(-(anp.dot(x, p["W1"]) + p["b1"])))
    z = 1.0 / (1.0 + anp.exp(-(anp.dot(a, p["W2"]) + p["b2"])))
    return 0.5 * anp.sum((z - x) ** 2)


def spread_entries(
    params: dict[str, np.ndarray], count: int, seed: int = 0
) -> list[tuple[str, int]]:
    """``count`` (tensor, flat index) pairs drawn uniformly over all parameters."""
    names = list(params)
    sizes = np.array([params[n].size for n in names])
    picks = np.sort(np.random.default_rng(seed).choice(sizes.sum(), size=count, replace=False))
    owner = np.searchsorted(np.cumsum(sizes), picks, side="right")
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return [(names[k], int(p - offsets[k])) for k, p in zip(owner, picks)]


def loop(loss: Callable[[dict[str, np.ndarray]], float], params: dict[str, np.ndarray],
         entries: list[tuple[str, int]]) -> np.ndarray:
    """Central differences one entry at a time, h = cbrt(eps) * max(1, |θ|) (check_gradient's)."""
    out = np.empty(len(entries))
    for k, (name, i) in enumerate(entries):
        flat = params[name].reshape(-1)
        old = flat[i]
        h = np.cbrt(EPS) * max(1.0, abs(old))
        flat[i] = old + h
        j_plus = loss(params)
        flat[i] = old - h
        j_minus = loss(params)
        flat[i] = old
        out[k] = (j_plus - j_minus) / (2 * h)
    return out


def table(rows: list[tuple[str, float, float, str]]) -> None:
    """Rows of (method, wall s, CPU s, what it verifies); ratios to the first row."""
    wall0, cpu0 = rows[0][1], rows[0][2]
    print("| method | wall s (median) | ratio | CPU s (median) | ratio | what it verifies |")
    print("|---|---:|---:|---:|---:|---|")
    for method, wall, cpu, verifies in rows:
        print(f"| {method} | {wall:.4g} | {wall / wall0:.0f}x | {cpu:.4g} | {cpu / cpu0:.0f}x "
              f"| {verifies} |")
    print()


def bench_batch(model: gp.Autoencoder, params: dict[str, np.ndarray], x: np.ndarray,
                loop_entries: int, repeats: int) -> float:
    """Print the table for one batch; return check_model's median wall time (defaults)."""
    total = sum(p.size for p in params.values())
    everything = f"all {total:,} entries, each a central difference of J with its error estimate"
    report, one_wall, one_cpu = timed(lambda: gp.check_model(model, params, x), repeats)
    assert report.passed, str(report)
    _, wall, cpu = timed(lambda: gp.check_model(model, params, x, series=False), repeats)
    entries = spread_entries(params, loop_entries)
    work = {k: v.copy() for k, v in params.items()}
    scale = total / loop_entries
    extrapolated = f"timed on {loop_entries:,} entries, extrapolated x{scale:.0f} to all {total:,}"
    _, seed_wall, seed_cpu = timed(lambda: loop(lambda p: seed_loss(p, x), work, entries), repeats)
    rows = [
        ("check_model (default)", one_wall, one_cpu, everything),
        ("check_model, series off (every output evaluated)", wall, cpu, everything),
        ("seed-style loop, full loss per entry", seed_wall * scale, seed_cpu * scale, extrapolated),
    ]
    if x.shape[0] == 1:
        _, grads = model.loss_and_grad(params, x)
        _, bb_wall, bb_cpu = timed(
            lambda: gp.check_gradient(lambda p: model.loss(p, x), grads, params), repeats
        )
        rows.append(("check_gradient (auto, black box)", bb_wall, bb_cpu,
                     "rows, columns, 32 entries and 2 directions per tensor (~6,000 evaluations)"))
    table(rows)
    return one_wall


def accuracy(
    model: gp.Autoencoder, params: dict[str, np.ndarray], x: np.ndarray, per_tensor: int
) -> None:
    truth = autograd_grad(lambda p: oracle_loss(p, x))(params)
    engines = [LocalDifferences(model, params, x, series=series) for series in (True, False)]
    rng = np.random.default_rng(1)
    print("| tensor | check_model: max error / max abs(g), every entry | same, series off "
          "| loop: same, on sampled entries |")
    print("|---|---:|---:|---:|")
    for name, value in params.items():
        scale = np.max(np.abs(truth[name]))
        ours = []
        for engine in engines:
            h = entry_steps(engine, name)
            numeric = engine.differences(name, np.arange(value.size), h).central / (2 * h)
            ours.append(np.max(np.abs(numeric - truth[name].ravel())) / scale)
        sample = rng.choice(value.size, size=min(value.size, per_tensor), replace=False)
        naive = loop(lambda p: seed_loss(p, x), {k: v.copy() for k, v in params.items()},
                     [(name, int(i)) for i in sample])
        theirs = np.max(np.abs(naive - truth[name].ravel()[sample])) / scale
        print(f"| {name} | {ours[0]:.1e} | {ours[1]:.1e} | {theirs:.1e} ({sample.size} entries) |")
    print()


# (label, Autoencoder keyword arguments, batch, slow: time one run only)
SCALING = [
    ("784-200-784", {}, 1, False),
    ("784-200-784", {}, 10, False),
    ("784-200-784", {}, 100, False),
    ("784-200-784", {}, 1000, True),
    ("784-100-784", {"n_hidden": 100}, 100, False),
    ("784-400-784", {"n_hidden": 400}, 100, False),
    ("784-800-784", {"n_hidden": 800}, 100, True),
    ("784-200-784 tied", {"tied": True}, 100, False),
    ("784-200-784 relu output (no series)", {"output_activation": "relu"}, 100, True),
    ("784-256-64-256-784", {"layers": [784, 256, 64, 256, 784]}, 10, False),
    ("784-256-64-256-784", {"layers": [784, 256, 64, 256, 784]}, 100, True),
]


def scaling(images: np.ndarray, repeats: int) -> None:
    """Time and peak memory of check_model across batches, widths and depths."""
    print("| network | batch | wall s (median) | CPU s | tracemalloc peak MiB | passed |")
    print("|---|---:|---:|---:|---:|---|")
    for label, options, batch, slow in SCALING:
        model = gp.Autoencoder(**({"n_visible": 784, "n_hidden": 200} | options))
        params = model.init_params(0)
        x = images[:batch]
        report, wall, cpu = timed(lambda: gp.check_model(model, params, x), 1 if slow else repeats)
        tracemalloc.start()
        gp.check_model(model, params, x)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"| {label} | {batch} | {wall:.3g} | {cpu:.3g} | {peak / 2**20:.0f} | "
              f"{report.passed} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per method (median; at least 3)")
    parser.add_argument("--loop-entries", type=int, default=3000,
                        help="entries the loop is timed on, one image")
    parser.add_argument("--batch-loop-entries", type=int, default=300,
                        help="the same for the batch of 100")
    parser.add_argument("--scaling", action="store_true",
                        help="time check_model across batches, widths and depths instead")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    images, _ = gp.load_mnist()
    if args.scaling:
        print(f"check_model scaling; {os.cpu_count()} cores; load average "
              f"{os.getloadavg()[0]:.1f} at the start\n")
        scaling(images, args.repeats)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
        return 0
    model = gp.Autoencoder(784, 200)
    params = model.init_params(0)
    print(f"seed network 784-200-784, sigmoid, biases; {os.cpu_count()} cores; "
          f"numpy {np.__version__}; median of {args.repeats} runs; "
          f"load average {os.getloadavg()[0]:.1f} at the start\n")

    print("## one MNIST image\n")
    one = bench_batch(model, params, images[:1], args.loop_entries, args.repeats)
    print("## a batch of 100 images\n")
    hundred = bench_batch(model, params, images[:100], args.batch_loop_entries, args.repeats)

    print("## accuracy on one image, against autograd\n")
    accuracy(model, params, images[:1], args.loop_entries // 4)

    tracemalloc.start()
    gp.check_model(model, params, images[:100])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print("## memory\n")
    print(f"check_model on 100 images: tracemalloc peak {peak / 2**20:.0f} MiB; "
          f"process peak RSS {rss:.0f} MiB (target <= 1 GiB)\n")
    print(f"targets: one image {one * 1e3:.1f} ms (<= 50 ms); 100 images {hundred:.2f} s "
          f"(<= 5 s); load average {os.getloadavg()[0]:.1f} at the end (other processes may "
          "share the cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
