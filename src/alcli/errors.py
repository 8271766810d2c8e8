"""The exceptions alcli raises on purpose, and the exit code each one means.

Library code raises these; only the CLI turns them into a one-line message and an exit code
(see ``cli.py``), so the same failure reads the same from every command.
"""

from __future__ import annotations


class AlcliError(Exception):
    """Base of every error alcli raises on purpose. ``hint`` says what to do instead."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(AlcliError):
    """Bad usage or bad input: a wrong option, a missing file, an unknown name. Exit 2."""

    exit_code = 2


class PoolError(UsageError):
    """The POOL spec cannot be resolved into items (nothing matches, bad manifest, ...)."""


class ModelError(UsageError):
    """The model or its weights cannot be loaded (unknown name, weights not available)."""


class StrategyError(UsageError):
    """A strategy is unknown, or its needs are not met by what the caller gave it."""


class LabelsError(UsageError):
    """A labels file is malformed or names items that are not in the pool."""


class RunError(AlcliError):
    """The run itself failed (a worker died, an oracle failed). Exit 1."""


class OracleError(RunError):
    """The oracle could not answer; everything bought so far is saved."""


class ItemError(Exception):
    """One item of a pool cannot be used (missing, corrupt, not an image, too large).

    Not a user error: the pipeline records ``reason`` against the item, skips it and goes on.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreUnreachableError(ItemError):
    """Reading one item failed because the store did not answer: connection refused or
    reset, DNS, no route, or the item's read ran past its deadline.

    It says nothing about the item: the pipeline skips it like any bad item, but a run of
    them in a row means the store is gone, which is the run's problem (``StoreDownError``).
    """

    @classmethod
    def timed_out(cls, seconds: float) -> StoreUnreachableError:
        return cls(f"timed out after {seconds:g} s")


class StoreDownError(RunError):
    """Too many reads in a row could not reach the store: the run stops, keeping what it
    embedded, instead of marking the rest of the pool unreadable."""


def one_line(error: BaseException) -> str:
    """The first line of ``error``'s text (its class name when it has none), for a message."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
