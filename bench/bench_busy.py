"""gradproof's commands on an idle machine and beside one busy core, with and without the
BLAS thread policy.

Each command runs as a user runs it (``python -m gradproof ...`` in a fresh process, wall
time from start to exit) in two settings:

- **policy**: gradproof's defaults (``gradproof.blas.POLICY``; training's count then follows
  the cores other processes leave free, ``gradproof.blas.follower``);
- **off**: ``GRADPROOF_BLAS_THREADS=off``, the BLAS libraries' own default (OpenBLAS: one
  thread per core), which is what gradproof did before the policy;
- **baseline** (with ``--baseline-src DIR``): the same command from another checkout's
  ``src`` directory, e.g. the last commit before this one, to compare idle times with.

and under two loads: **idle** (nothing of the benchmark's own beside it) and **busy** (one
CPU-bound process pinned to the last core this process may use, started by the benchmark
before the command and stopped after it; it also stops by itself after ``--hog-seconds`` and
is killed when the benchmark exits, however it exits). The settings alternate within each
repetition, in a rotated order, so a change in the machine's background load hits them alike;
each time printed is a median over ``--repeats`` repetitions, and the 1-minute load average is
printed before and after.

Targets: with the policy, each command takes at most 2x its idle time when one core is busy,
and its idle time is within 5% of the baseline's.

The whole run is bounded: ``--budget`` seconds after the start no new repetition begins (the
table then holds the repetitions finished, with their count), and one command may take at
most ``--timeout`` seconds. ``--quick`` is a short run for a last look: 2 repetitions,
``gradproof train`` bounded to 10 epochs, the policy (and the baseline, when given) without
``off``, within 15 minutes.

Usage::

    python bench/bench_busy.py                                  # 3 repetitions, every command
    python bench/bench_busy.py --quick --baseline-src ../base/src
    python bench/bench_busy.py --repeats 5 --baseline-src ../base/src
    python bench/bench_busy.py --only check-auto-5 --train-epochs 10 --settings policy off
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# name -> the gradproof arguments (train gets --out in a scratch directory).
COMMANDS = {
    "check-auto-5": ["check", "--mode", "auto", "--batch", "5"],
    "check-exact-1": ["check"],
    "check-exact-100": ["check", "--batch", "100"],
    "train": ["train"],
}

# The competing process: spins on one core until its deadline.
HOG = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    pass
"""

_HOGS: list[subprocess.Popen] = []


def _kill_hogs() -> None:
    for hog in _HOGS:
        if hog.poll() is None:
            hog.kill()
            hog.wait()
    _HOGS.clear()


@contextmanager
def one_busy_core(core: int, seconds: float) -> Iterator[None]:
    """A CPU-bound process on ``core`` for the duration of the block (at most ``seconds``)."""
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(core), str(seconds)])
    _HOGS.append(hog)
    time.sleep(0.2)  # let it reach its core before the command starts
    try:
        yield
    finally:
        _kill_hogs()


def run_once(arguments: list[str], src: Path, threads: str | None, timeout: float) -> float:
    """Wall seconds of ``python -m gradproof ARGUMENTS`` with ``src`` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(src))
    env.pop("GRADPROOF_BLAS_THREADS", None)
    if threads is not None:
        env["GRADPROOF_BLAS_THREADS"] = threads
    with tempfile.TemporaryDirectory() as scratch:
        extra = ["--out", scratch] if arguments[0] == "train" else []
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "gradproof", *arguments, *extra],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(f"gradproof {' '.join(arguments)} took more than {timeout:.0f} s "
                             "(--timeout); stopped") from None
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"gradproof {' '.join(arguments)} exited {done.returncode}: "
                         f"{done.stderr.decode()[-2000:]}")
    return seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (median; >= 1)")
    parser.add_argument("--only", nargs="+", choices=list(COMMANDS), default=list(COMMANDS),
                        help="the commands to run (default: all)")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="bound gradproof train to N epochs (default: its own 50)")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="another checkout's src directory, run as the baseline")
    parser.add_argument("--settings", nargs="+", choices=["policy", "off", "baseline"],
                        default=["policy", "off", "baseline"],
                        help="the settings to run (default: all; baseline needs --baseline-src)")
    parser.add_argument("--hog-seconds", type=float, default=600.0,
                        help="the competing process stops by itself after this long")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one command may take")
    parser.add_argument("--budget", type=float, default=3600.0,
                        help="no repetition starts this many seconds after the start")
    parser.add_argument("--quick", action="store_true",
                        help="2 repetitions, train bounded to 10 epochs, no 'off', 15 minutes")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.budget = 2, min(args.budget, 900.0)
        args.train_epochs = args.train_epochs or 10
        args.settings = [name for name in args.settings if name != "off"]
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.baseline_src is None:
        args.settings = [name for name in args.settings if name != "baseline"]
    else:
        args.baseline_src = args.baseline_src.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(_kill_hogs)
    # A SIGTERM or SIGHUP ends the benchmark through SystemExit, so the hog is stopped too.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_, code=128 + signum: sys.exit(code))
    core = max(os.sched_getaffinity(0))
    known = {"policy": (SRC, None), "off": (SRC, "off"), "baseline": (args.baseline_src, None)}
    settings = {name: known[name] for name in args.settings}
    commands = {name: list(COMMANDS[name]) for name in args.only}
    if args.train_epochs is not None and "train" in commands:
        commands["train"] += ["--epochs", str(args.train_epochs)]
    print(f"{os.cpu_count()} CPUs; the competing process runs on CPU {core}; "
          f"load average at the start {os.getloadavg()[0]:.2f}")
    times: dict[tuple[str, str, str], list[float]] = {}
    names = list(settings)
    deadline = time.monotonic() + args.budget
    for repeat, command, setting in schedule(list(commands), names, args.repeats):
        if time.monotonic() > deadline:
            print(f"  --budget of {args.budget:.0f} s spent: stopped in repetition {repeat + 1}")
            break
        src, threads = settings[setting]
        for load in ("idle", "busy") if repeat % 2 == 0 else ("busy", "idle"):
            if load == "busy":
                with one_busy_core(core, args.hog_seconds):
                    seconds = run_once(commands[command], src, threads, args.timeout)
            else:
                seconds = run_once(commands[command], src, threads, args.timeout)
            times.setdefault((command, setting, load), []).append(seconds)
            print(f"  repeat {repeat + 1} {command} {setting} {load}: {seconds:.2f} s "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print_table(commands, names, times)
    return 0


def schedule(commands: list[str], names: list[str], repeats: int) -> Iterator[tuple[int, str, str]]:
    """(repetition, command, setting) in the order they run: the settings rotate from one
    repetition to the next, so that none always runs first."""
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for command in commands:
            for setting in order:
                yield repeat, command, setting


def print_table(commands: dict[str, list[str]], names: list[str],
                times: dict[tuple[str, str, str], list[float]]) -> None:
    median = {key: statistics.median(values) for key, values in times.items()}
    print("\n| command | setting | runs | idle s (median) | one core busy s | busy / idle "
          "| idle / baseline |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for command, arguments in commands.items():
        for setting in names:
            if (command, setting, "idle") not in median or (command, setting, "busy") not in median:
                continue  # the budget ran out before this pair was measured
            idle, busy = median[(command, setting, "idle")], median[(command, setting, "busy")]
            base = median.get((command, "baseline", "idle"))
            versus = "" if base is None else f"{idle / base:.2f}"
            runs = len(times[(command, setting, "idle")])
            print(f"| `gradproof {' '.join(arguments)}` | {setting} | {runs} | {idle:.2f} "
                  f"| {busy:.2f} | {busy / idle:.2f} | {versus} |")


if __name__ == "__main__":
    raise SystemExit(main())
