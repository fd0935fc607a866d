"""The cost of the checks at exact kinks: `auto` on the correct gradients of the stress
harness's float64 networks with relu units put at their kink, this checkout beside another.

Each round runs one fresh process per checkout, the checkouts taking turns (the load of a
shared machine then falls on both alike); each process checks every such network once and
reports its wall and CPU seconds and loss evaluations. The networks are those of
``bench/stress.py`` (seeds ``--first`` to ``--first + --count - 1`` whose kind is "kink" and
whose loss is float64), with the gradient as arrays, where the scans and the circles around
the point (``engine/kink_scan.py``, ``engine/kink_cones.py``) run.

    python bench/bench_kinks.py --baseline-src ../base/src        # 2 rounds, seeds 0-599
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

SRC = Path(__file__).resolve().parents[1] / "src"


def worker(first: int, count: int) -> dict[str, float]:
    """Check every float64 relu-at-kink network of the harness once: seconds, evaluations."""
    import stress  # bench/ is on the path: the script runs from there

    cases = [stress.random_case(seed) for seed in range(first, first + count)]
    cases = [c for c in cases if c.kind == "kink" and c.dtype == "float64"
             and stress.confirmed(c)[0]]
    start, start_cpu, evaluations = time.perf_counter(), time.process_time(), 0
    for case in cases:
        _, grads = case.model.loss_and_grad(case.params, case.x)
        evaluations += stress.run_checker("auto", case, grads, case.seed).loss_evaluations
    return {"cases": len(cases), "wall": time.perf_counter() - start,
            "cpu": time.process_time() - start_cpu, "evaluations": evaluations}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.first, args.count)))
        return 0
    checkouts = {"this checkout": SRC}
    if args.baseline_src is not None:
        checkouts["baseline"] = args.baseline_src.resolve()
    print(f"load average at the start {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    names = list(checkouts)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            env = dict(os.environ, PYTHONPATH=str(checkouts[name]))
            command = [sys.executable, __file__, "--worker", "--first", str(args.first),
                       "--count", str(args.count)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout))
        print(f"  round {round_ + 1} done (load average {os.getloadavg()[0]:.2f})", flush=True)
    print("\n| checkout | networks | wall s (median) | CPU s (median) | loss evaluations |")
    print("|---|---:|---:|---:|---:|")
    medians = {}
    for name, measured in runs.items():
        wall = statistics.median(m["wall"] for m in measured)
        medians[name] = wall
        print(f"| {name} | {measured[0]['cases']} | {wall:.1f} | "
              f"{statistics.median(m['cpu'] for m in measured):.1f} | "
              f"{measured[0]['evaluations']:,} |")
    if "baseline" in medians:
        ratio = medians["this checkout"] / medians["baseline"]
        print(f"\nthis checkout / baseline, wall: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
