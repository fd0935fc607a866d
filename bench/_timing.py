"""The timing helpers the bench scripts share: median wall and CPU times after a warm-up.

The scripts run as ``python bench/<script>.py``, so this directory is on ``sys.path`` and they
import it as ``from _timing import timed``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class Timed(NamedTuple):
    """What :func:`timed` measured: the last result and the median seconds per run."""

    result: Any
    wall: float
    cpu: float


def timed(run: Callable[[], Any], repeats: int) -> Timed:
    """The result of ``run`` and the median wall and CPU times of ``repeats`` runs (one
    warm-up first). CPU time (this process, all its threads) is what other processes sharing
    the cores do not inflate; wall time is what a user waits."""
    return alternated([run], repeats)[0]


def alternated(runs: Sequence[Callable[[], Any]], repeats: int) -> list[Timed]:
    """``timed`` for each of ``runs``, the runs taking turns (one warm-up each first): on
    shared cores the load changes from second to second, and turns spread it over all alike,
    so that their ratio holds where the times themselves do not."""
    results = [run() for run in runs]
    wall: list[list[float]] = [[] for _ in runs]
    cpu: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, run in enumerate(runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            results[i] = run()
            wall[i].append(time.perf_counter() - start)
            cpu[i].append(time.process_time() - start_cpu)
    return [Timed(result, statistics.median(w), statistics.median(c))
            for result, w, c in zip(results, wall, cpu)]
