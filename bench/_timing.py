"""The one timing helper the bench scripts share: median wall and CPU time after a warm-up.

The scripts run as ``python bench/<script>.py``, so this directory is on ``sys.path`` and they
import it as ``from _timing import timed``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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
    result = run()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return Timed(result, statistics.median(wall), statistics.median(cpu))
