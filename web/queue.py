"""The Huey queue that carries run ids from dispatchers to workers (SQLite file by default, Redis to scale out)."""
from __future__ import annotations

import logging
import sqlite3
from typing import Callable

from huey import RedisHuey, SqliteHuey
from huey.consumer import Consumer, Scheduler, Worker
from redis.exceptions import RedisError

from .backoff import Backoff
from .config import Config, StartupError
from .db import private_sqlite_file, sqlite_file

log = logging.getLogger(__name__)


def make_huey(config: Config, handler: Callable[[str], object] | None = None):
    """A Huey instance for the configured queue; results are not stored (runs live in the database).

    `handler(run_id)` executes a run taken from the queue (State.execute_run in the service); a queue made
    without one can only enqueue, and a message it is asked to execute raises RuntimeError."""
    url = config.queue_url
    if url.startswith(("redis://", "rediss://")):
        # Blocking reads: a worker wakes the moment a run id arrives.
        huey = RedisHuey("cloudcron", url=url, results=False, blocking=True, read_timeout=1, utc=True)
    else:
        path = sqlite_file(url) or ""
        if path:
            private_sqlite_file(path)
        huey = SqliteHuey("cloudcron", filename=path, results=False, utc=True, timeout=30)

    def execute_run(run_id: str):
        if handler is None:
            raise RuntimeError("this queue was opened without a run handler: it can only enqueue")
        handler(run_id)

    huey.execute_run = huey.task(name="execute_run", retries=0)(execute_run)
    return huey


def check_queue(state) -> None:
    """Refuse, with StartupError, a queue this process cannot write (SQLite) or reach (Redis)."""
    url = state.config.queue_url
    shown = url.split("@")[-1]
    try:
        huey = state.huey  # opens the queue; on SQLite this creates its file and tables
        if url.startswith(("redis://", "rediss://")):
            huey.storage.conn.ping()
            return
        conn = sqlite3.connect(sqlite_file(url) or "", timeout=30, isolation_level=None)
        try:
            # A write that leaves no trace: it needs the file and its directory writable (WAL files).
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE cloudcron_write_check (x INTEGER)")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except (sqlite3.Error, OSError, RedisError) as exc:
        hint = "" if url.startswith("redis") else " (check the permissions of the queue file and of its directory)"
        raise StartupError(f"cannot use the queue {shown}: {' '.join(str(exc).split())}{hint}") from None


def enqueue(huey, run_id: str) -> None:
    """Put a run id on the queue."""
    huey.execute_run(run_id)


QUEUE_BACKOFF_CAP = 30.0  # the longest wait between reads while the queue keeps failing (s)


class BackoffWorker(Worker):
    """Huey's worker loop, except that a queue that cannot be read is retried with back-off.

    Huey logs a traceback and tries again after its polling delay (0.1 s here) for ever; this
    worker logs the traceback once, then one line per failure, and waits 1, 2, 4 ... 30 s.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors = Backoff("reading the run queue", log, first=1.0, cap=QUEUE_BACKOFF_CAP)

    def loop(self, now=None):
        try:
            task = self.huey.dequeue()
        except Exception:
            self.stop_flag.wait(self.errors.failed())
            return
        self.errors.succeeded()
        if task is None:
            if not self.huey.storage.blocking:  # a blocking read (Redis) already waited
                self.sleep()
            return
        self.delay = self.default_delay
        try:
            self.huey.execute(task, now)
        except Exception:  # the task records its own failures; this is a bug worth a traceback each time
            self._logger.exception("Unhandled error during execution of task %s.", task.id)


class BackoffScheduler(Scheduler):
    """Huey's scheduler for a consumer without periodic tasks: reads due delayed tasks, with back-off on errors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors = Backoff("reading the queue's schedule", log, first=1.0, cap=QUEUE_BACKOFF_CAP)

    def loop(self, now=None):
        try:
            due = self.huey.read_schedule(now)
            for task in due:
                self.huey.enqueue(task)
        except Exception:
            self.stop_flag.wait(self.errors.failed())
            return
        self.errors.succeeded()
        self.stop_flag.wait(self.interval)


class QueueConsumer(Consumer):
    """A thread consumer whose worker and scheduler back off while the queue fails."""

    worker_class = BackoffWorker
    scheduler_class = BackoffScheduler


class EmbeddedConsumer(QueueConsumer):
    """A consumer that lives beside the web server: it leaves signal handling to the process owner."""

    def _set_signal_handlers(self):
        pass


def consumer(huey, workers: int, embedded: bool):
    """A thread consumer tuned for low start lateness on the SQLite queue (Huey's idle back-off reaches 10 s).

    No periodic tasks: runs are scheduled by the dispatcher, so BackoffScheduler only moves delayed tasks.
    """
    cls = EmbeddedConsumer if embedded else QueueConsumer
    return cls(huey, workers=workers, worker_type="thread", periodic=False, initial_delay=0.05, backoff=1.1,
               max_delay=0.1, check_worker_health=True)
