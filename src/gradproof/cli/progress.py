"""Progress where stdout is not a terminal (a log file, CI): a plain line now and then.

A rich progress bar redraws one line in place, which a log cannot show, so the commands
switch it off there; ``PlainProgress`` prints whole lines instead, at most one every
``INTERVAL_S`` seconds, so that a long run shows it is alive without flooding the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

INTERVAL_S = 5.0


class PlainProgress:
    """Print ``describe()`` when at least ``interval`` seconds have passed since the last
    line (or the start); ``clock`` is injectable for tests."""

    def __init__(
        self,
        console: Console,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.interval = INTERVAL_S if interval is None else interval
        self.clock = clock
        self.started = self.last = clock()

    def __call__(self, describe: Callable[[float], str]) -> None:
        """``describe(elapsed_seconds)`` builds the line, only when one is due."""
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.console.print(
                describe(now - self.started), highlight=False, markup=False, soft_wrap=True
            )
