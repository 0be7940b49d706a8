"""Back-off for the service's background loops (dispatcher, WAL checkpoints, heartbeats, queue consumer).

A loop that fails the same way many times a second (a read-only database, a queue that went away)
must neither fill the log nor keep the machine busy: the first failure is logged with its
traceback, each later one as a single line with the count so far, and the wait before the next
try doubles from `first` up to `cap` seconds. The first success logs that it works again.
"""
from __future__ import annotations

import logging
import sys

SUMMARY_CHARS = 300


def one_line(exc: BaseException | None) -> str:
    """An exception as 'Type: message' on one line, cut to SUMMARY_CHARS (database errors carry whole statements)."""
    if exc is None:
        return "unknown error"
    orig = getattr(exc, "orig", None)  # SQLAlchemy: the driver's own message, without the statement
    text = " ".join(str(orig if orig is not None else exc).split())
    name = type(orig if orig is not None else exc).__name__
    summary = f"{name}: {text}" if text else name
    return summary if len(summary) <= SUMMARY_CHARS else summary[: SUMMARY_CHARS - 3] + "..."


class Backoff:
    """Counts a loop's failures in a row; failed() logs and says how long to wait, succeeded() resets."""

    def __init__(self, what: str, log: logging.Logger, first: float = 1.0, cap: float = 60.0):
        self.what = what
        self.log = log
        self.first = first
        self.cap = cap
        self.failures = 0

    def delay(self) -> float:
        """Seconds to wait after the current run of failures: first, 2 × first, 4 × first, ... at most cap."""
        return min(self.cap, self.first * 2 ** min(max(self.failures - 1, 0), 32))

    def failed(self) -> float:
        """Record a failure (call it from the except block) and return the seconds to wait before trying again."""
        self.failures += 1
        delay = self.delay()
        if self.failures == 1:
            self.log.error("%s failed; trying again in %.3g s", self.what, delay, exc_info=True)
        else:
            self.log.warning("%s failed again (%d times in a row): %s; trying again in %.3g s",
                             self.what, self.failures, one_line(sys.exc_info()[1]), delay)
        return delay

    def succeeded(self) -> None:
        """Record a success: the next failure is logged in full again."""
        if self.failures:
            self.log.warning("%s works again after %d failure(s) in a row", self.what, self.failures)
            self.failures = 0
