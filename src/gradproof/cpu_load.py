"""How many of the machine's CPUs other processes leave free, measured over a window.

Contract: ``read_sample()`` returns a ``Sample`` of the machine's busy CPU time (from
``/proc/stat``; None where that file cannot be read), this process's own CPU time (every
thread) and the 1-minute load average (None where the system has none). ``others_busy(before,
after)`` says how many cores other processes kept busy between two samples; ``threads_for(free,
most)`` turns the cores left free into a thread count. Pure functions on the samples, so that
the decision is tested with made-up samples.

Why both times: the machine's busy time includes this process's own threads (the BLAS worker
that spins after each product among them), which must not count as load, or a process on two
threads would see its own work and fall back to one. Where ``/proc/stat`` is missing (macOS,
Windows) the load average stands in, less its own share; it lags by about a minute, so a
change of load is followed late there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_PROC_STAT = "/proc/stat"

# Positions, among the numbers of /proc/stat's "cpu" line (user, nice, system, idle, iowait,
# irq, softirq, steal, guest, guest_nice), of those that count as idle: idle and iowait
# (waiting on a disk leaves the core free for computation).
_IDLE_COLUMNS = (3, 4)


@dataclass(frozen=True)
class Sample:
    """What the CPUs had done up to one moment.

    Attributes
    ----------
    wall : float
        ``time.monotonic()`` seconds.
    busy : float or None
        CPU-seconds that all of the machine's CPUs spent busy since boot, or None where
        ``/proc/stat`` cannot be read.
    own : float
        CPU-seconds this process (all its threads) has used.
    load : float or None
        The 1-minute load average, or None where the system has none.
    """

    wall: float
    busy: float | None
    own: float
    load: float | None


def read_sample(stat_path: str = _PROC_STAT) -> Sample:
    """Sample the machine's and this process's CPU time now."""
    return Sample(time.monotonic(), _machine_busy(stat_path), time.process_time(), _load())


def others_busy(before: Sample, after: Sample) -> float | None:
    """Cores that other processes kept busy between two samples, on average; None where
    neither ``/proc/stat`` nor a load average says (or no time passed)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return None
    own = (after.own - before.own) / wall  # cores this process used
    if before.busy is not None and after.busy is not None:
        return max(0.0, (after.busy - before.busy) / wall - own)
    if after.load is not None:
        return max(0.0, after.load - own)
    return None


def threads_for(free: float, most: int) -> int:
    """Threads for ``free`` cores left idle by other processes: one per core, a core counted
    when at least half of it is free, between 1 and ``most``."""
    return max(1, min(most, int(free + 0.5)))


def _machine_busy(path: str) -> float | None:
    try:
        with open(path, encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 6 or fields[0] != "cpu":  # "cpu" and user .. iowait at least
        return None
    try:
        ticks = [int(value) for value in fields[1:]]
    except ValueError:
        return None
    # guest and guest_nice (columns 9 and 10) are already counted in user and nice.
    total = sum(ticks[:8])
    idle = sum(ticks[column] for column in _IDLE_COLUMNS)
    return (total - idle) / _ticks_per_second()


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0  # Linux's USER_HZ everywhere it is not configured otherwise


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
