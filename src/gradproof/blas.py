"""How many threads the BLAS (and OpenMP) pools get while gradproof's hot paths run.

Contract: ``limited(path, option)`` is a context manager that gives the thread pools of the
loaded BLAS and OpenMP libraries (numpy's OpenBLAS, torch's OpenMP, found by
``threadpoolctl``) the number of threads ``resolve(path, option)`` decides, for the duration of
the block, and restores the caller's setting afterwards, also after an exception or a
KeyboardInterrupt. ``policy(path)`` is the same as a decorator for a front door whose
keyword-only ``blas_threads`` option it reads. No environment variable is read other than
``GRADPROOF_BLAS_THREADS``, and none is changed (OpenBLAS's own, such as
``OPENBLAS_CORETYPE``, are the machine's business).

Why: after each matrix product numpy's OpenBLAS keeps its worker threads spinning (about
0.1 s), and libgomp does the same after a parallel region. gradproof's hot paths alternate
small products with elementwise numpy work on the calling thread; on a machine with few cores,
or with other busy processes, the spinning worker takes the core that work needs, and a
worker that loses its core to another process holds up every product it shares. The counts in
``POLICY`` come from measurements with one and two threads on idle and loaded machines
(bench/README.md, "Under load"; ``bench/bench_busy.py`` repeats them).

Which setting wins: the front door's ``blas_threads`` option, else ``$GRADPROOF_BLAS_THREADS``,
else ``POLICY[path]``. Each is a positive integer, ``"auto"`` (the policy) or ``"off"`` (leave
the pools as they are: the libraries' own defaults or whatever the caller set). The call that
finds the pools free sets them and restores them when it ends; calls nested in it (the torch
adapter's ``check_gradient``) or started from other threads while it runs keep its setting.

Following the load: for the paths in ``FOLLOWS_LOAD`` (training), ``"auto"`` starts from
``POLICY[path]`` and ``follower(path, option)`` then chooses the count again every
``FOLLOW_SECONDS`` from the cores other processes left free over that window
(``gradproof.cpu_load``): two threads train the seed network faster than one on an idle 2-core
machine, one keeps it near its idle time beside a busy core where two more than double it, and
no fixed count does both (bench/README.md, "Following the load"). A number pins the count: in
float32 one and two threads round the products differently, so only a pinned count makes a
run, and a resumed run, the same bit for bit whatever the load.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from threadpoolctl import ThreadpoolController

from gradproof import cpu_load
from gradproof.errors import InputError

ENV_VAR = "GRADPROOF_BLAS_THREADS"
OPTION = "blas_threads"
AUTO = "auto"
OFF = "off"

# Hot path -> threads its BLAS and OpenMP pools get (see the module docstring and
# bench/README.md for the measurements behind each).
POLICY: Mapping[str, int] = {
    "check_gradient": 1,  # and check_network, check_vjp: their loss evaluations are its own
    "check_model": 1,
    "train": 1,
    "torch": 1,
    "octave": 1,  # numpy's pools in gradproof.octave.check, and Octave's own OpenBLAS (its environment)
}

# The paths whose "auto" count follows the cores other processes leave free, and how often it
# is chosen again: a quarter of a second is a few hundred training steps of the seed network,
# long enough for the CPU times to resolve a core's share (/proc/stat counts hundredths of a
# second) and short enough to follow a process that starts or stops.
FOLLOWS_LOAD = frozenset({"train"})
FOLLOW_SECONDS = 0.25
# The first window is shorter, so that a short call (one epoch of a benchmark) is not spent
# on the starting count: at /proc/stat's hundredths of a second, 50 ms on two cores resolve
# the others' load to within about 0.4 of a core, enough to tell an idle machine from one
# busy core, and the next windows correct a wrong first choice.
FIRST_SECONDS = 0.05

# The values every setting accepts, in words (the messages and the CLI's help read this).
ALLOWED = (
    f"a number of threads >= 1, {AUTO!r} (gradproof's measured choice) or {OFF!r} (leave the "
    f"BLAS and OpenMP thread pools as they are)"
)

F = TypeVar("F", bound=Callable[..., Any])


def parse(value: Any, source: str) -> int | str:
    """Return ``value`` as a thread count, ``"auto"`` or ``"off"``.

    Parameters
    ----------
    value : int or str
        A positive integer (a numpy integer too, or its text), ``"auto"`` or ``"off"`` (any case, spaces around).
    source : str
        How messages name where the value came from (``"blas_threads"``, ``"--blas-threads"``).

    Raises
    ------
    InputError
        Anything else, naming ``source`` and the allowed values.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in (AUTO, OFF):
            return text
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise InputError(f"{source} must be {ALLOWED}, got {value!r}")


def resolve(path: str, option: Any = None) -> int | None:
    """Return the thread count for ``path``, or None to leave the pools alone.

    ``option`` (the front door's ``blas_threads``; None when not given) wins over
    ``$GRADPROOF_BLAS_THREADS``, which wins over ``POLICY[path]``. For a path that follows
    the load this is the count it starts from.
    """
    choice = _choice(option)
    if choice == OFF:
        return None
    return POLICY[path] if choice == AUTO else int(choice)


def _choice(option: Any) -> int | str:
    if option is not None:
        return parse(option, OPTION)
    text = os.environ.get(ENV_VAR, "")
    return parse(text, f"the environment variable {ENV_VAR}") if text.strip() else AUTO


@contextmanager
def limited(path: str, option: Any = None) -> Iterator[None]:
    """Run the block with the thread count ``resolve(path, option)`` decides.

    Parameters
    ----------
    path : str
        A key of ``POLICY``.
    option : int or str, optional
        The caller's ``blas_threads`` option (validated even inside another call, where the
        outer call's setting stays).

    Raises
    ------
    InputError
        A bad ``option`` or ``$GRADPROOF_BLAS_THREADS``.
    """
    count = resolve(path, option)
    _POOLS.enter(count)
    try:
        yield
    finally:
        _POOLS.leave()


def policy(path: str) -> Callable[[F], F]:
    """Decorate a front door so that it runs inside ``limited(path, blas_threads)``.

    The function must take a keyword-only ``blas_threads`` option (documented in its own
    docstring); the decorator reads it and passes it on unchanged.
    """

    def decorate(function: F) -> F:
        parameter = inspect.signature(function).parameters.get(OPTION)
        if parameter is None or parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{function.__qualname__} needs a keyword-only {OPTION} option")

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with limited(path, kwargs.get(OPTION)):
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


class LoadFollower:
    """Chooses the pools' thread count again, every ``every`` seconds (the first time after
    ``FIRST_SECONDS``), from the cores other processes left free since the last choice
    (``cpu_load``); ``tick()`` after each step of work costs a clock read until a window is
    over.

    Parameters
    ----------
    count : int
        The count the pools hold now.
    every : float, optional
        Seconds per window (``FOLLOW_SECONDS``).
    sample : callable, optional
        Returns a ``cpu_load.Sample`` (by default ``cpu_load.read_sample`` of the CPUs this
        process may run on: beside a process busy on one of them, a ``taskset`` to two
        cores of a large machine has one core free, not all the others).
    cpus : int, optional
        How many CPUs the samples cover, and the most threads to use (by default those this
        process may run on).
    """

    def __init__(
        self,
        count: int,
        every: float | None = None,
        sample: Callable[[], cpu_load.Sample] | None = None,
        cpus: int | None = None,
    ) -> None:
        self.count = count
        self.every = FOLLOW_SECONDS if every is None else every
        usable = cpu_load.usable_cpus()
        self._sample = sample or functools.partial(cpu_load.read_sample, cpus=usable)
        self._cpus = cpus or (len(usable) if usable else os.cpu_count() or 1)
        self._before = self._sample()
        self._due = self._before.wall + min(FIRST_SECONDS, self.every)

    def tick(self) -> None:
        """Choose the count again where the window is over (and the pools are this call's)."""
        if time.monotonic() < self._due:
            return
        after = self._sample()
        others = cpu_load.others_busy(self._before, after)
        self._before, self._due = after, after.wall + self.every
        if others is None:
            return  # nothing measured: the count stays
        count = cpu_load.threads_for(self._cpus - others, self._cpus)
        if count != self.count and _POOLS.change(count):
            self.count = count


def follower(path: str, option: Any = None) -> LoadFollower | None:
    """A ``LoadFollower`` for a call of ``path`` running inside ``limited(path, option)``,
    where the count follows the load (``path`` in ``FOLLOWS_LOAD`` and the setting "auto"),
    else None (a number or "off": the count stays)."""
    if path not in FOLLOWS_LOAD or _choice(option) != AUTO:
        return None
    return LoadFollower(POLICY[path])


class _Pools:
    """The process's thread pools, set by the call that finds them free and restored when
    that call ends; calls nested in it, or made from other threads while it runs, keep its
    setting and change nothing.

    Only the thread that set the pools restores them, because numpy's OpenBLAS ignores a
    count set from another thread once the main thread has set one (measured with OpenBLAS
    0.3.31): a restore from another thread would leave the caller's setting lost.

    The ``threadpoolctl`` controller is kept between calls (building one scans every loaded
    library: 0.3 to 1.5 ms, against 25 us to set the pools through a kept one), and built
    again when ``sys.modules`` has grown, since a library bringing its own pool (torch's
    OpenMP, scipy's OpenBLAS) arrives with an import.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread that set the pools
        self._depth = 0  # its calls in progress
        self._limiter: Any = None
        self._controller: ThreadpoolController | None = None
        self._modules = -1

    def enter(self, count: int | None) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._owner is None:
                if count is not None:
                    self._limiter = self._current().limit(limits=count)
                self._owner = me
            if self._owner == me:
                self._depth += 1

    def change(self, count: int) -> bool:
        """Set the pools to ``count`` threads, where the calling thread's one call set them
        (not a call nested in another, whose caller owns the setting); the setting found
        before that call is still what ``leave`` restores. Returns whether it did."""
        with self._lock:
            if self._owner != threading.get_ident() or self._depth != 1 or self._limiter is None:
                return False
            self._current().limit(limits=count)
            return True

    def leave(self) -> None:
        with self._lock:
            if self._owner != threading.get_ident():
                return
            self._depth -= 1
            if self._depth == 0:
                if self._limiter is not None:
                    self._limiter.restore_original_limits()
                    self._limiter = None
                self._owner = None

    def _current(self) -> ThreadpoolController:
        if self._controller is None or len(sys.modules) != self._modules:
            self._controller = ThreadpoolController()
            self._modules = len(sys.modules)
        return self._controller


_POOLS = _Pools()
