"""Wiring of the run engine: the embedded default (threads beside the API) and the split processes."""
from __future__ import annotations

import logging
import signal
import threading

from .dispatcher import Dispatcher
from .heartbeats import start_worker as start_worker_heartbeat
from .queue import consumer

log = logging.getLogger(__name__)


class Embedded:
    """Dispatcher and worker threads running beside the web server in one process."""

    def __init__(self, state, dispatcher: bool, worker: bool, workers: int = 2):
        self.state = state
        self.stop_flag = threading.Event()
        self.dispatcher = self.consumer = self.heartbeat = None
        self._threads: list[threading.Thread] = []
        if worker:
            state.worker_slots = workers
            start_worker_side(state)
            self.consumer = consumer(state.huey, workers=workers, embedded=True)
            self.consumer.start()
            self.heartbeat = start_worker_heartbeat(state.db, workers)
            self._threads.append(start_background(state, self.stop_flag))
        if dispatcher:
            self.dispatcher = Dispatcher(state, state.enqueue)
            state.schedule_listeners.append(self.dispatcher.wake)
            t = threading.Thread(target=self.dispatcher.run, args=(self.stop_flag,), daemon=True, name="dispatcher")
            t.start()
            self._threads.append(t)
            self._threads.append(start_retention(state, self.stop_flag))

    def stop(self):
        self.stop_flag.set()
        if self.dispatcher is not None:
            self.dispatcher.wake()
        if self.consumer is not None:
            self.consumer.stop(graceful=False)
        for t in self._threads:
            t.join(timeout=5)
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def drain(self, grace: float) -> int:
        """SIGTERM: the dispatcher stops claiming, the worker stops taking runs and gives the ones in progress
        `grace` seconds before stopping them (recorded interrupted, reason shutdown). Returns how many were."""
        self.stop_flag.set()
        if self.dispatcher is not None:
            self.dispatcher.wake()
        for t in self._threads:
            t.join(timeout=5)
        interrupted = 0
        if self.consumer is not None:
            from .worker import drain

            interrupted = drain(self.state, grace, stop_taking=self.consumer.stop_flag.set)
            self.consumer.stop(graceful=False)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        return interrupted


def start_worker_side(state) -> None:
    """Remove private run directories a crashed worker left (the queue's handler comes with state.huey)."""
    from .runner import purge_leftovers

    removed = purge_leftovers(state.config.work_dir)
    if removed:
        log.warning("removed %d private run director%s left by a stopped worker", removed, "y" if removed == 1 else "ies")


def start_background(state, stop: threading.Event) -> threading.Thread:
    """The worker side's background loops beside the run consumer: notification delivery (web.notify)."""
    from .notify import start_sender

    return start_sender(state, stop)


def start_retention(state, stop: threading.Event) -> threading.Thread:
    """The dispatcher side's background loop: pruning old runs (web.retention)."""
    from .retention import start

    return start(state, stop)


def start_embedded(state, dispatcher: bool = True, worker: bool = True) -> Embedded:
    return Embedded(state, dispatcher, worker)


HEALTH_CHECK_EVERY = 10.0  # seconds between checks that the consumer's threads are alive (Huey's own interval)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop` (main thread only); a second one is ignored while the drain goes on."""

    def handler(signum, _frame):
        if stop.is_set():
            log.warning("received %s again; already stopping", signal.Signals(signum).name)
            return
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def run_worker(state, workers: int = 2) -> int:
    """python -m web worker: a Huey consumer of run ids until SIGINT/SIGTERM, which drain it.

    The drain: no new run is taken, runs in progress get CLOUDCRON_DRAIN_SECONDS to finish, the rest
    are stopped and recorded interrupted with the reason shutdown; then the process exits."""
    from .migrate import prepare
    from .queue import check_queue
    from .worker import drain

    prepare(state.db)
    check_queue(state)
    state.sandbox.announce()
    state.worker_slots = workers
    start_worker_side(state)
    log.info("worker started with %d slot(s) and %d retry slot(s) on %s", workers,
             state.config.retry_slots or workers, state.config.queue_url.split("@")[-1])
    # Huey's own run() would stop at SIGTERM without waiting for runs: the signals are ours.
    stop = threading.Event()
    stop_on_signals(stop)
    worker = consumer(state.huey, workers=workers, embedded=True)
    worker.start()
    heartbeat = start_worker_heartbeat(state.db, workers)
    start_background(state, stop)
    while not stop.wait(HEALTH_CHECK_EVERY):
        worker.check_worker_health()
    interrupted = drain(state, state.config.drain_seconds, stop_taking=worker.stop_flag.set)
    worker.stop(graceful=False)
    heartbeat.stop()
    log.info("worker stopped%s", f"; {interrupted} run(s) interrupted" if interrupted else "")
    return 0


def run_dispatcher(state) -> int:
    """python -m web dispatcher: claim due schedules until SIGINT/SIGTERM."""
    from .migrate import prepare
    from .queue import check_queue

    prepare(state.db)
    check_queue(state)
    stop = threading.Event()
    stop_on_signals(stop)
    dispatcher = Dispatcher(state, state.enqueue)
    state.schedule_listeners.append(dispatcher.wake)
    start_retention(state, stop)
    dispatcher.run(stop)
    return 0
