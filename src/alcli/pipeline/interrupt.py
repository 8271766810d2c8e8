"""Ctrl-C as a stop request while a run is consumed, so it lands at a batch boundary."""

from __future__ import annotations

import signal
import threading
from typing import Any


class CtrlCStops:
    """While a run is consumed on the main thread, the first Ctrl-C sets ``stop`` instead of
    raising KeyboardInterrupt; a second one raises at once.

    Why: Python raises KeyboardInterrupt at whatever bytecode the main thread is running,
    for instance inside ``threading.Condition.wait`` after it woke but before it took its
    lock back (the ``with`` around it then releases a lock it does not hold: "release
    unlocked lock", or another thread's), or between writing a batch and recording it. A
    stop ends the run within ``control.POLL_S`` at a batch boundary, the batches already
    finished are still handed out, and the caller raises KeyboardInterrupt from one known
    place once they are saved (``interrupted`` says whether to). Does nothing off the main
    thread, or when SIGINT is not Python's default handler: ignored (a background job) or
    the application's own.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.interrupted = False
        self._previous: Any = None

    def __enter__(self) -> CtrlCStops:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.stop.set()

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
