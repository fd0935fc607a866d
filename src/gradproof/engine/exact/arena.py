"""Work arrays kept between checks: one process's checks of the same shapes reuse their memory.

Contract: an ``Arena`` lends the arrays of one check. ``arena.empty(shape, dtype)`` is an
uninitialised array, taken from the process-wide pool where one of that shape and dtype lies
free there, else made; ``arena.close()`` gives every array it lent back to the pool for the
next check. The borrower keeps no lent array, nor a view of one, after ``close()``.
``counting(n)`` is ``np.arange(n)``, read-only and shared by every check.

Why: a fresh array of a large tensor faults in its memory page by page, and whether malloc
keeps what one check freed for the next depends on what the process freed before: glibc hands
the top of its heap back to the system once more than its trim threshold lies free there, and
that threshold follows the largest block the process has freed. The same one-image check of
the seed network took thousands of page faults in one process and none in another
(bench/README.md). Arrays that stay in the pool are faulted in once per process, whatever
its history; a library must not set the allocator's options for its user's process.

Bounds and threads: the pool holds at most ``POOL_BYTES``; beyond it, the arrays given back
least recently are dropped for the garbage collector. A lock guards the pool, and an array is
lent to one check at a time: checks running at once in several threads each get their own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

# Most bytes the pool keeps between checks. The seed network's check lends 24 MB, whatever
# the batch; a network several times its size falls back to fresh memory for what does not
# fit.
POOL_BYTES = 128 << 20

_Key = tuple[tuple[int, ...], str]


class _Pool:
    """The free arrays of the process, by shape and dtype, the key given back least recently
    first; and the shared ``counting`` array."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: OrderedDict[_Key, list[np.ndarray]] = OrderedDict()
        self.held = 0  # bytes in ``free``
        self.counting = np.zeros(0, dtype=np.intp)

    def take(self, key: _Key) -> np.ndarray | None:
        with self.lock:
            stack = self.free.get(key)
            if not stack:
                return None
            array = stack.pop()
            if not stack:
                del self.free[key]
            self.held -= array.nbytes
            return array

    def give(self, arrays: list[np.ndarray]) -> None:
        with self.lock:
            for array in arrays:
                if array.nbytes > POOL_BYTES:
                    continue
                key = (array.shape, array.dtype.str)
                self.free.setdefault(key, []).append(array)
                self.free.move_to_end(key)
                self.held += array.nbytes
            while self.held > POOL_BYTES:
                key, stack = next(iter(self.free.items()))
                self.held -= stack.pop(0).nbytes
                if not stack:
                    del self.free[key]


_POOL = _Pool()


class Arena:
    """The work arrays lent to one check (see the module docstring)."""

    def __init__(self) -> None:
        self._lent: list[np.ndarray] = []

    def empty(self, shape: int | tuple[int, ...], dtype: np.dtype | type = np.float64
              ) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, lent until ``close()``."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        array = _POOL.take((shape, np.dtype(dtype).str))
        if array is None:
            array = np.empty(shape, dtype)
        self._lent.append(array)
        return array

    def close(self) -> None:
        """Give the lent arrays back to the pool, within ``POOL_BYTES``."""
        _POOL.give(self._lent)
        self._lent = []


def counting(n: int) -> np.ndarray:
    """``np.arange(n)`` (intp), read-only: a view of one array shared by every check, made
    again only when a longer one is asked for (and not kept beyond ``POOL_BYTES``)."""
    with _POOL.lock:
        shared = _POOL.counting
        if shared.size < n:
            shared = np.arange(n, dtype=np.intp)
            shared.flags.writeable = False
            if shared.nbytes <= POOL_BYTES:
                _POOL.counting = shared
    return shared[:n]


def pooled_bytes() -> int:
    """The bytes the pool holds now (for tests and benchmarks)."""
    return _POOL.held
