"""The one lock every stage shares, the run's stop and its first error.

All coordination goes through this lock and four conditions on it, each with one meaning
and one owner: ``can_read`` (a window slot came back: ``reading.ReadWindow``), ``can_decode``
(bytes to decode, all read, or who decodes changed: ``decoding.Decode``), ``arrived`` (the
item the model streams collect next is in: ``ordering.InputOrder``) and ``moved`` (a batch
was put into, taken from or stored out of the output: ``ordering.OutputOrder``); besides,
the model streams take turns to collect (``infer.Infer``). Every wait also wakes every
``POLL_S`` to notice a stop event nobody notified it about, so no thread can outlive
``close()`` by more than that, except one stuck inside a ``read`` call, which is daemonic and
abandoned.
"""

from __future__ import annotations

import threading

#: How often a waiting thread re-checks an external stop event nobody notified it about.
POLL_S = 0.1


class Control:
    """The shared lock, the stop (the run's own and the caller's event) and the first error."""

    def __init__(self, external_stop: threading.Event | None) -> None:
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._external_stop = external_stop
        self._conditions: list[threading.Condition] = []

    def condition(self) -> threading.Condition:
        """A condition on the shared lock, woken by every stop."""
        condition = threading.Condition(self.lock)
        self._conditions.append(condition)
        return condition

    def stopping(self) -> bool:
        return self._stop.is_set() or (
            self._external_stop is not None and self._external_stop.is_set()
        )

    def wake_all(self) -> None:
        """With the lock held: every waiting thread re-checks its state."""
        for condition in self._conditions:
            condition.notify_all()

    def stop_locked(self) -> None:
        """With the lock held: stop every stage."""
        self._stop.set()
        self.wake_all()

    def fail(self, error: BaseException) -> None:
        with self.lock:
            self.fail_locked(error)

    def fail_locked(self, error: BaseException) -> None:
        """Record the first error and stop every stage. Called with the lock held."""
        if self.error is None:
            self.error = error
        self.stop_locked()
