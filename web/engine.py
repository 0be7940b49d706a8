"""Wiring of the run engine: the embedded default (threads beside the API) and the split processes."""
from __future__ import annotations

import logging
import signal
import threading

from .dispatcher import Dispatcher
from .queue import bind, consumer

log = logging.getLogger(__name__)


class Embedded:
    """Dispatcher and worker threads running beside the web server in one process."""

    def __init__(self, state, dispatcher: bool, worker: bool, workers: int = 2):
        self.state = state
        self.stop_flag = threading.Event()
        self.dispatcher = self.consumer = None
        self._threads: list[threading.Thread] = []
        if worker:
            start_worker_side(state)
            self.consumer = consumer(state.huey, workers=workers, embedded=True)
            self.consumer.start()
        if dispatcher:
            self.dispatcher = Dispatcher(state, state.enqueue)
            state.schedule_listeners.append(self.dispatcher.wake)
            t = threading.Thread(target=self.dispatcher.run, args=(self.stop_flag,), daemon=True, name="dispatcher")
            t.start()
            self._threads.append(t)

    def stop(self):
        self.stop_flag.set()
        if self.dispatcher is not None:
            self.dispatcher.wake()
        if self.consumer is not None:
            self.consumer.stop(graceful=False)
        for t in self._threads:
            t.join(timeout=5)


def start_worker_side(state) -> None:
    """Bind the queue task to this state and remove private run directories a crashed worker left."""
    from .runner import purge_leftovers

    bind(state)
    removed = purge_leftovers(state.config.work_dir)
    if removed:
        log.warning("removed %d private run director%s left by a stopped worker", removed, "y" if removed == 1 else "ies")


def start_embedded(state, dispatcher: bool = True, worker: bool = True) -> Embedded:
    return Embedded(state, dispatcher, worker)


def run_worker(state, workers: int = 2) -> int:
    """python -m web worker: a Huey consumer of run ids until SIGINT/SIGTERM."""
    from .migrate import prepare
    from .queue import check_queue

    state.sandbox.announce()
    prepare(state.db)
    check_queue(state)
    start_worker_side(state)
    log.info("worker started with %d slot(s) on %s", workers, state.config.queue_url.split("@")[-1])
    consumer(state.huey, workers=workers, embedded=False).run()
    return 0


def run_dispatcher(state) -> int:
    """python -m web dispatcher: claim due schedules until SIGINT/SIGTERM."""
    from .migrate import prepare
    from .queue import check_queue

    prepare(state.db)
    check_queue(state)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    dispatcher = Dispatcher(state, state.enqueue)
    state.schedule_listeners.append(dispatcher.wake)
    dispatcher.run(stop)
    return 0
