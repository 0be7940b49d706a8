"""The background loops under a failure that repeats: the dispatcher's tick and its WAL checkpoints, a run's heartbeat,
and the queue consumer's worker and scheduler wait longer and longer (to a cap) and log the traceback once.

The failures are real (a database without its tables, a database path that is a directory, a queue whose table is
gone, a Redis nobody listens on); the stop flag records each wait instead of sleeping, so no test depends on time."""
from __future__ import annotations

import logging
import sqlite3
import threading

from web import make_state
from web.config import load_config
from web.dispatcher import CHECKPOINT_EVERY, ERROR_BACKOFF_CAP, Dispatcher
from web.queue import QUEUE_BACKOFF_CAP, BackoffScheduler, BackoffWorker, make_huey
from web.worker import HEARTBEAT_EVERY, _heartbeat

from tests.harness.service import free_port

DOUBLING = [1.0, 2.0, 4.0, 8.0, 16.0]


class RecordingStop(threading.Event):
    """A stop flag for one thread: records each wait it is asked for, returns at once, and is set after `limit` waits.

    Other threads (the dispatcher's checkpoint helper) wait on it for real, so they end when it is set."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.waits: list[float] = []
        self.owner = threading.current_thread()

    def wait(self, timeout=None):
        if threading.current_thread() is not self.owner:
            return super().wait(timeout)
        self.waits.append(timeout)
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


def unmigrated_state(tmp_path, database_url=None):
    env = {"CLOUDCRON_DATA_DIR": str(tmp_path / "data")}
    if database_url:
        env["CLOUDCRON_DATABASE_URL"] = database_url
    return make_state(load_config(env))


def assert_logged_once_in_full(caplog, logger: str, what: str, count: int):
    records = [r for r in caplog.records if r.name == logger and what in r.getMessage()]
    assert len(records) == count, [r.getMessage() for r in records]
    assert records[0].levelno == logging.ERROR and records[0].exc_info is not None
    for n, record in enumerate(records[1:], start=2):
        assert record.exc_info is None and f"failed again ({n} times in a row)" in record.getMessage()


def test_a_dispatcher_whose_tick_keeps_failing_backs_off_to_the_cap(tmp_path, database_url, caplog):
    state = unmigrated_state(tmp_path, database_url)  # no tables: every claim fails
    stop = RecordingStop(limit=8)
    with caplog.at_level(logging.INFO, logger="web.dispatcher"):
        Dispatcher(state, lambda ids: None).run(stop)
    assert stop.waits == DOUBLING + [ERROR_BACKOFF_CAP] * 3
    assert_logged_once_in_full(caplog, "web.dispatcher", "dispatcher tick", 8)
    state.db.dispose()


def test_wal_checkpoints_that_keep_failing_back_off_to_the_cap(tmp_path, caplog):
    not_a_database = tmp_path / "a-directory"
    not_a_database.mkdir()
    state = unmigrated_state(tmp_path, f"sqlite:///{not_a_database}")
    stop = RecordingStop(limit=8)
    with caplog.at_level(logging.INFO, logger="web.dispatcher"):
        Dispatcher(state, lambda ids: None)._checkpoints(stop)
    assert stop.waits == [CHECKPOINT_EVERY] + DOUBLING + [ERROR_BACKOFF_CAP] * 2
    assert_logged_once_in_full(caplog, "web.dispatcher", "WAL checkpoint", 7)


def test_a_heartbeat_that_fails_is_tried_again_sooner_and_logged_once_in_full(tmp_path, database_url, caplog):
    state = unmigrated_state(tmp_path, database_url)  # no runs table: every beat fails
    stop = RecordingStop(limit=7)
    with caplog.at_level(logging.INFO, logger="web.worker"):
        _heartbeat(state, "0" * 32, stop)
    # Never later than the usual beat: a run whose beats stop is marked interrupted after 30 s.
    assert stop.waits == [HEARTBEAT_EVERY, 1.0, 2.0, 4.0, 8.0, HEARTBEAT_EVERY, HEARTBEAT_EVERY]
    assert_logged_once_in_full(caplog, "web.worker", "heartbeat of run", 6)
    state.db.dispose()


def broken_queues(tmp_path):
    """A SQLite queue whose table was dropped, and a Redis queue on a port nobody listens on."""
    sqlite_state = unmigrated_state(tmp_path / "sqlite")
    huey = make_huey(sqlite_state.config)
    path = sqlite_state.config.queue_url[len("sqlite:///"):]
    huey.storage.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE task")
        conn.execute("DROP TABLE schedule")
    redis_config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "redis"),
                                "CLOUDCRON_QUEUE_URL": f"redis://127.0.0.1:{free_port()}/0"})
    return {"sqlite": huey, "redis": make_huey(redis_config)}


def test_a_queue_worker_that_cannot_read_the_queue_backs_off_to_the_cap(tmp_path, caplog):
    for kind, huey in broken_queues(tmp_path).items():
        caplog.clear()
        stop = RecordingStop(limit=8)
        worker = BackoffWorker(huey=huey, stop_flag=stop, default_delay=0.05, max_delay=0.1, backoff=1.1)
        with caplog.at_level(logging.INFO, logger="web.queue"):
            while not stop.is_set():
                worker.loop()
        assert stop.waits == DOUBLING + [QUEUE_BACKOFF_CAP] * 3, kind
        assert_logged_once_in_full(caplog, "web.queue", "reading the run queue", 8)


def test_a_queue_scheduler_that_cannot_read_the_schedule_backs_off_to_the_cap(tmp_path, caplog):
    for kind, huey in broken_queues(tmp_path).items():
        caplog.clear()
        stop = RecordingStop(limit=7)
        scheduler = BackoffScheduler(huey=huey, stop_flag=stop, interval=1, periodic=False)
        with caplog.at_level(logging.INFO, logger="web.queue"):
            while not stop.is_set():
                scheduler.loop()
        assert stop.waits == DOUBLING + [QUEUE_BACKOFF_CAP] * 2, kind
        assert_logged_once_in_full(caplog, "web.queue", "reading the queue's schedule", 7)
