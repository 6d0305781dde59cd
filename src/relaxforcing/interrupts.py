"""Graceful stops: the first Ctrl-C or SIGTERM asks the running job to stop after its current chunk."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Callable polled between chunks: the name of the signal that asked to stop, or None."""

    def __init__(self, unit: str = "chunk") -> None:
        self.signal: str | None = None
        self.unit = unit

    def __call__(self) -> str | None:
        return self.signal

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # the second request: stop now (open videos still close as playable)
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: finishing the current {self.unit}, then saving the state (send it again to stop "
              "at once)", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signals(unit: str = "chunk") -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to a :class:`StopRequest` for the duration (main thread only; elsewhere the
    request never fires and signals keep their default behaviour). ``unit`` names the work finished first."""
    request = StopRequest(unit)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request._handle) for s in HANDLED}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Interrupted(Exception):
    """Work stopped on request at a clean boundary (after a whole chunk, video or training step).

    Library code raises it; ``cli.main`` prints it as one line and exits with :attr:`exit_code`.
    """

    def __init__(self, message: str, signal_name: str | None):
        super().__init__(message)
        self.signal = signal_name

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by the signal (130 for SIGINT, 143 for SIGTERM); 1 without one."""
        return 128 + int(signal.Signals[self.signal]) if self.signal else 1
