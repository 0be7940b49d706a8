"""The Huey queue that carries run ids from dispatchers to workers (SQLite file by default, Redis to scale out)."""
from __future__ import annotations

import logging

from huey import RedisHuey, SqliteHuey
from huey.consumer import Consumer

from .config import Config

log = logging.getLogger(__name__)
_STATE = None  # the worker's State, bound by bind(); Huey tasks are module-level functions


def make_huey(config: Config):
    """A Huey instance for the configured queue; results are not stored (runs live in the database)."""
    url = config.queue_url
    if url.startswith(("redis://", "rediss://")):
        # Blocking reads: a worker wakes the moment a run id arrives.
        huey = RedisHuey("cloudcron", url=url, results=False, blocking=True, read_timeout=1, utc=True)
    else:
        from .db import private_sqlite_file, sqlite_file

        path = sqlite_file(url) or ""
        if path:
            private_sqlite_file(path)
        huey = SqliteHuey("cloudcron", filename=path, results=False, utc=True, timeout=30)
    huey.execute_run = huey.task(name="execute_run", retries=0)(_execute_run)
    return huey


def _execute_run(run_id: str):
    from .worker import execute_run

    if _STATE is None:
        raise RuntimeError("no worker state bound to the queue")
    execute_run(_STATE, run_id)


def bind(state) -> None:
    """Give the Huey task the state it executes runs with."""
    global _STATE
    _STATE = state


def enqueue(huey, run_id: str) -> None:
    """Put a run id on the queue."""
    huey.execute_run(run_id)


class EmbeddedConsumer(Consumer):
    """A consumer that lives beside the web server: it leaves signal handling to the process owner."""

    def _set_signal_handlers(self):
        pass


def consumer(huey, workers: int, embedded: bool):
    """A thread consumer tuned for low start lateness on the SQLite queue (Huey's idle back-off reaches 10 s)."""
    cls = EmbeddedConsumer if embedded else Consumer
    return cls(huey, workers=workers, worker_type="thread", periodic=False, initial_delay=0.05, backoff=1.1,
               max_delay=0.1, check_worker_health=True)
