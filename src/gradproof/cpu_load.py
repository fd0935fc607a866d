"""How many of the machine's CPUs other processes leave free, measured over a window.

Contract: ``read_sample(cpus=usable_cpus())`` returns a ``Sample`` of the busy CPU time of the
CPUs this process may run on (from ``/proc/stat``; None where that file cannot be read), this
process's own CPU time (every thread) and the 1-minute load average (None where the system has
none). ``others_busy(before, after)`` says how many cores other processes kept busy between
two samples; ``threads_for(free, most)`` turns the cores left free into a thread count. Pure functions on the samples, so that
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
        CPU-seconds that the CPUs sampled spent busy since boot, or None where
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


def read_sample(stat_path: str = _PROC_STAT, cpus: frozenset[int] | None = None) -> Sample:
    """Sample the CPU time of ``cpus`` (ids, as ``usable_cpus`` gives them; None: the whole
    machine) and of this process now."""
    return Sample(time.monotonic(), _busy(stat_path, cpus), time.process_time(), _load())


def usable_cpus() -> frozenset[int] | None:
    """The ids of the CPUs this process may run on (its affinity: ``taskset``, a container's
    cpuset), or None where the system does not say."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


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


def _busy(path: str, cpus: frozenset[int] | None) -> float | None:
    """Busy CPU-seconds since boot of ``cpus`` (the per-CPU lines) or of the whole machine (the
    "cpu" line), from ``/proc/stat``; None where it cannot be read or names none of them."""
    try:
        with open(path, encoding="ascii") as stat:
            lines = stat.read().splitlines()
    except OSError:
        return None
    wanted = {"cpu"} if cpus is None else {f"cpu{cpu}" for cpu in cpus}
    busy, found = 0, 0
    for line in lines:
        fields = line.split()
        # The name, then user, nice, system, idle and iowait at least.
        if len(fields) < 6 or fields[0] not in wanted:
            continue
        try:
            ticks = [int(value) for value in fields[1:]]
        except ValueError:
            return None
        # guest and guest_nice (the 9th and 10th numbers) are already counted in user and nice.
        busy += sum(ticks[:8]) - sum(ticks[column] for column in _IDLE_COLUMNS)
        found += 1
    return busy / _ticks_per_second() if found else None


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
