"""The service's log: plain lines (the default) or one JSON object per line, quiet about libraries at start.

CLOUDCRON_LOG_FORMAT chooses `plain` or `json`; `--log-level` the level of cloudcron's own loggers
(`web.*`, INFO by default). Libraries (huey, alembic, waitress, apprise, urllib3) log at WARNING and
above unless the level is DEBUG: their start-up INFO lines tell an operator nothing they can act on.

Lines about one run or one schedule carry `run_id` / `schedule_id`: given with `extra={"run_id": ...}`
on the call, or bound for a block of code with `bound(run_id=...)` (a context variable, so each
thread of a worker has its own).
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
from contextlib import contextmanager
from datetime import datetime, timezone

FORMATS = ("plain", "json")
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines are noise at start (huey lists its consumer's settings, alembic its plugins).
QUIET_LIBRARIES = ("huey", "alembic", "waitress", "apprise", "urllib3", "requests")
# The ids a line may carry, in the order they are written.
CONTEXT_FIELDS = ("run_id", "schedule_id", "channel_id", "delivery_id")

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("cloudcron_log_context", default={})


@contextmanager
def bound(**ids):
    """Attach ids (run_id=..., schedule_id=...) to every line logged in this block, in this thread."""
    token = _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601 UTC), level, logger, message, the ids, and exc_info as text."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _context.get()
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an argument that is not JSON (a datetime, a path) is written as its text.
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(level: str = "INFO", fmt: str = "plain", stream=None) -> None:
    """Install the root handler on stderr (or `stream`) in `fmt` ('plain' or 'json') at `level`.

    Raises ValueError for an unknown format or level (the caller turns it into a ConfigError).
    """
    if fmt not in FORMATS:
        raise ValueError(f"'{fmt}' is not one of {', '.join(FORMATS)}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"'{level}' is not a log level (DEBUG, INFO, WARNING, ERROR)")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    quiet = numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
