"""check_model's page faults and CPU time per call, after different process histories.

Whether malloc keeps the memory one check freed for the next depends on what the process
freed before (glibc's trim threshold follows the largest block freed so far), so the same
check on the seed network (784-200-784 with biases, the first image of the bundled sample)
is timed in fresh processes that did different things first:

- ``sample kept``: the bundled MNIST sample stays alive (as in ``bench_targets.py``);
- ``sample freed``: the one image copied, the sample (31 MB) freed;
- ``large blocks freed``: 50 MB and 20 MB arrays made and freed;
- ``check_gradient first``: one black-box check of the seed network without biases;
- ``a smaller check between``: every other check_model call is of a 100-30-100 network.

Each process runs one warm-up and ``--calls`` timed checks; printed: the median minor page
faults (``getrusage``) and the median thread CPU time per check, per history and checkout
(``--baseline-src DIR``: another checkout's ``src``, run alternately).

Run: python bench/bench_exact_faults.py --baseline-src ../base/src [--calls 15] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
HISTORIES = ["sample kept", "sample freed", "large blocks freed", "check_gradient first",
             "a smaller check between"]


def worker(history: str, calls: int) -> dict[str, float]:
    """Faults and thread CPU seconds of ``calls`` checks after ``history``, medians."""
    import numpy as np

    import gradproof as gp

    images, _ = gp.load_mnist()
    x = images[:1]  # (1, 784)
    model = gp.Autoencoder(784, 200)
    params = model.init_params(0)
    small = gp.Autoencoder(100, 30)
    small_params = small.init_params(0)
    small_x = np.random.default_rng(0).random((3, 100))
    if history == "sample freed":
        x = x.copy()
        del images
    elif history == "large blocks freed":
        blocks = [np.ones(50_000_000 // 8), np.ones(20_000_000 // 8)]
        del blocks
    elif history == "check_gradient first":
        plain = gp.Autoencoder(784, 200, bias=False)
        plain_params = plain.init_params(0)
        _, grads = plain.loss_and_grad(plain_params, x)
        gp.check_gradient(lambda p: plain.loss(p, x), grads, plain_params)
    gp.check_model(model, params, x)  # warm-up
    faults, seconds = [], []
    for k in range(calls):
        if history == "a smaller check between" and k % 2:
            gp.check_model(small, small_params, small_x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.thread_time()
        gp.check_model(model, params, x)
        seconds.append(time.thread_time() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"faults": statistics.median(faults), "cpu": statistics.median(seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.calls)))
        return 0
    checkouts = {"this checkout": SRC}
    if args.baseline_src is not None:
        checkouts["baseline"] = args.baseline_src.resolve()
    print(f"load average at the start {os.getloadavg()[0]:.2f}")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    names = list(checkouts)
    for round_ in range(args.rounds):
        for history in HISTORIES:
            for name in names if round_ % 2 == 0 else names[::-1]:
                env = dict(os.environ, PYTHONPATH=str(checkouts[name]))
                env.pop("GRADPROOF_BLAS_THREADS", None)
                done = subprocess.run(
                    [sys.executable, __file__, "--worker", history, "--calls", str(args.calls)],
                    env=env, capture_output=True, text=True, check=True)
                results.setdefault((history, name), []).append(json.loads(done.stdout))
        print(f"  round {round_ + 1} done (load average {os.getloadavg()[0]:.2f})", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print("\n| history | checkout | faults per check | CPU per check |")
    print("|---|---|---:|---:|")
    for (history, name), runs in results.items():
        faults = statistics.median(r["faults"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs) * 1e3
        print(f"| {history} | {name} | {faults:,.0f} | {cpu:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
