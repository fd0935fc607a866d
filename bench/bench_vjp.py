"""gradproof.check_vjp beside a per-entry loop on two layers, every entry of every input.

The layers: an affine layer (x of 32x64, w of 64x128, b of 128: 10,368 entries) with
``x @ w + b``, and a 3x3 convolution (stride 1, padding 1) of a (2, 3, 8, 8) input with 4
filters, written with loops as a course's ``conv_forward_naive`` is (492 entries). Each
backward is correct. The loop is the check a course gives: for each entry of each input, a
central difference of sum(dout * forward(...)) with step 1e-5, compared with backward's
gradient by relative error, one random dout: two forward calls per entry. check_vjp checks
every entry too (its default ``auto`` mode with a budget above these sizes), with its error
estimates, a second random dout along random directions and its linearity probes, moving
entries whose outputs do not overlap in one forward call. Prints a Markdown table of median
wall times of ``--repeats`` runs after one warm-up, the ratio, and the forward calls of each
(counted in one more, untimed run).

Run: python bench/bench_vjp.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import numpy as np

import gradproof as gp

from _timing import timed

STEP = 1e-5


def affine_forward(x, w, b):
    return x @ w + b, (x, w, b)  # (N, M)


def affine_backward(dout, cache):
    x, w, b = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)  # like x, like w, like b


def conv_forward(x, w, b):
    """Loops over images, filters and output positions: (N, C, H, W) -> (N, F, H, W)."""
    n_images, _, height, width = x.shape
    n_filters, _, kh, kw = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.empty((n_images, n_filters, height, width))
    for n in range(n_images):
        for f in range(n_filters):
            for i in range(height):
                for j in range(width):
                    out[n, f, i, j] = np.sum(padded[n, :, i:i + kh, j:j + kw] * w[f]) + b[f]
    return out, (x, w, b)


def conv_backward(dout, cache):
    x, w, b = cache
    n_images, _, height, width = x.shape
    n_filters, _, kh, kw = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dpadded = np.zeros_like(padded)
    dw = np.zeros_like(w)
    for n in range(n_images):
        for f in range(n_filters):
            for i in range(height):
                for j in range(width):
                    window = padded[n, :, i:i + kh, j:j + kw]
                    dw[f] += dout[n, f, i, j] * window  # (C, kh, kw), like w[f]
                    dpadded[n, :, i:i + kh, j:j + kw] += dout[n, f, i, j] * w[f]
    return dpadded[:, :, 1:-1, 1:-1], dw, dout.sum(axis=(0, 2, 3))  # like x, w, b


def entry_loop(forward: Callable[..., Any], backward: Callable[..., Any], inputs: tuple) -> float:
    """The course's check: the largest relative error over every entry of every input."""
    inputs = [np.array(a, dtype=np.float64) for a in inputs]
    out, cache = forward(*inputs)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    grads = backward(dout, cache)
    worst = 0.0
    for a, g in zip(inputs, grads):
        for index in np.ndindex(a.shape):
            old = a[index]
            a[index] = old + STEP
            plus = np.sum(dout * forward(*inputs)[0])
            a[index] = old - STEP
            minus = np.sum(dout * forward(*inputs)[0])
            a[index] = old
            numeric = (plus - minus) / (2 * STEP)
            scale = max(abs(numeric), abs(g[index]), 1e-12)
            worst = max(worst, abs(numeric - g[index]) / scale)
    return worst


def forward_calls(check: Callable[[Callable[..., Any]], Any], forward: Callable[..., Any]) -> int:
    """How many times ``check`` calls the forward it is handed."""
    calls = [0]

    def counted(*args: Any) -> Any:
        calls[0] += 1
        return forward(*args)

    check(counted)
    return calls[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median; at least 3)")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    rng = np.random.default_rng(0)
    cases = {
        "affine 32x64 @ 64x128": (
            affine_forward, affine_backward,
            (rng.standard_normal((32, 64)), rng.standard_normal((64, 128)),
             rng.standard_normal(128)),
        ),
        "conv 3x3, (2, 3, 8, 8), 4 filters, loops": (
            conv_forward, conv_backward,
            (rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3)),
             rng.standard_normal(4)),
        ),
    }
    print(f"load average {os.getloadavg()[0]:.2f}, median of {args.repeats} runs after a warm-up")
    print(
        "| layer | entries | check_vjp s | per-entry loop s | loop / check_vjp "
        "| forward calls (check_vjp / loop) | verdict |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, (forward, backward, inputs) in cases.items():
        ours = timed(lambda: gp.check_vjp(forward, backward, inputs), args.repeats)
        loop = timed(lambda: entry_loop(forward, backward, inputs), args.repeats)
        report = ours.result
        entries = sum(t.size for t in report.tensors)
        checked = sum(t.checked for t in report.tensors)
        verdict = f"{'pass' if report.passed else 'FAIL'}, {checked}/{entries} entries"
        calls = (
            forward_calls(lambda f: gp.check_vjp(f, backward, inputs), forward),
            forward_calls(lambda f: entry_loop(f, backward, inputs), forward),
        )
        print(
            f"| {name} | {entries:,} | {ours.wall:.3f} | {loop.wall:.3f} | "
            f"{loop.wall / ours.wall:.2f} | {calls[0]:,} / {calls[1]:,} | {verdict} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
