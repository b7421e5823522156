"""Stop requests by signal, with a handler that takes no lock.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread
happens to be. One that sets a ``threading.Event`` or logs can block for ever on a lock the
interrupted code already holds (an Event's condition is a plain ``Lock``; the logging module's
handlers hold locks too). So the handler only records the signal, and the main thread polls.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable


class StopSignals:
    """Records the first of ``signals`` received; :meth:`wait` returns once one has arrived."""

    def __init__(self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.received: signal.Signals | None = None
        for signum in signals:
            signal.signal(signum, self._record)

    def _record(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def wait(self, until: Callable[[], bool] = lambda: False, every: float = 0.25) -> str:
        """Block until a signal arrives or ``until()`` holds (checked every ``every`` s); say which."""
        while self.received is None:
            if until():
                return "condition"
            time.sleep(every)
        return self.received.name
