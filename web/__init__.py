"""cloudcron: a self-hosted scheduler for cloud machines, with a Mist.io-compatible schedules API."""
from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from flask import Flask, current_app, g, request

ROOT = Path(__file__).resolve().parent.parent
# The service shares code with the Ansible collection (plugins/module_utils), which lives at the root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from .config import Config, load_config  # noqa: E402
from .crypto import Box, load_or_create_key  # noqa: E402
from .db import Database  # noqa: E402

__version__ = "0.1.0"


@dataclass
class State:
    """What every part of the service shares: settings, database, secret box, and change listeners."""

    config: Config
    db: Database
    box: Box
    # Called with (next_run_at) after a commit changed a schedule's timing, so a dispatcher can wake.
    schedule_listeners: list = field(default_factory=list)

    _huey: object = None
    _sandbox: object = None
    _listings: object = None
    _executions: object = None
    _retry_slots: object = None
    # Runs the queue consumer of this process executes at once (`serve`: 2; `worker --workers N`), set when the
    # consumer starts; the default bound of retry attempts (retry_slots).
    worker_slots: int = 2
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def schedule_changed(self, when):
        for listener in self.schedule_listeners:
            listener(when)

    @property
    def huey(self):
        """The run queue, opened on first use (an API-only process may never need it)."""
        if self._huey is None:
            from .queue import make_huey

            self._huey = make_huey(self.config, handler=self.execute_run)
        return self._huey

    @property
    def sandbox(self):
        """How runs execute here (web.sandbox.Sandbox), probed on first use.

        Raises SandboxError (a ConfigError) with CLOUDCRON_SANDBOX=required on a host where
        bubblewrap cannot build the sandbox.
        """
        if self._sandbox is None:
            from .sandbox import detect, secret_paths

            self._sandbox = detect(self.config.sandbox, self.config.unsafe_unsandboxed_ansible,
                                   hidden=secret_paths(self.config), tmpfs_mb=self.config.sandbox_tmpfs_mb)
        return self._sandbox

    @property
    def listings(self):
        """The bounded pool that lists providers for API requests (web.listings.ListingPool)."""
        with self._lock:
            if self._listings is None:
                from .listings import ListingPool

                self._listings = ListingPool(self.config.listing_slots, self.config.listings_per_org,
                                             self.config.provider_timeout, self.config.run_listings_per_org)
            return self._listings

    @property
    def executions(self):
        """The runs this process is executing, which a drain waits for (web.worker.Executions)."""
        with self._lock:
            if self._executions is None:
                from .worker import Executions

                self._executions = Executions()
            return self._executions

    @property
    def retry_slots(self):
        """The bound on retry attempts' playbooks running at once in this process, all orgs together, a freed slot
        going to the waiting orgs in turn (web.worker.FairSlots, used by _retry_run): CLOUDCRON_RETRY_SLOTS, or
        the process's worker slots when it is unset."""
        with self._lock:
            if self._retry_slots is None:
                from .worker import FairSlots

                self._retry_slots = FairSlots(self.config.retry_slots or self.worker_slots)
            return self._retry_slots

    def execute_run(self, run_id: str) -> None:
        """Execute one run taken from the queue (the queue's handler)."""
        from .logs import bound
        from .worker import execute_run

        with bound(run_id=run_id):  # every line the run's execution logs carries its id (JSON logs)
            execute_run(self, run_id)

    def enqueue(self, run_ids) -> None:
        from .queue import enqueue

        for run_id in run_ids:
            enqueue(self.huey, run_id)


def make_state(config: Config | None = None) -> State:
    """Open the database and the secret key for a configuration."""
    config = config or load_config()
    return State(config=config, db=Database(config.database_url), box=Box(load_or_create_key(config.secret_key_file)))


def create_app(config: Config | None = None, state: State | None = None) -> Flask:
    """The Flask application: defaults, then the environment (CLOUDCRON_*), then `config`."""
    state = state or make_state(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = state.config.max_body_bytes
    app.json.sort_keys = False
    app.extensions["cloudcron"] = state

    from . import errors, ui
    from .api import audit, blueprint, calendars, channels, meta, resources, runs, schedules, status
    from .validation import check_request_text

    errors.register(app)
    # Before routing to any view (or 404): a NUL in a path or query reaches PostgreSQL as a 500 otherwise.
    app.before_request(check_request_text)
    app.register_blueprint(blueprint([m.bp for m in (audit, calendars, channels, meta, resources, runs, schedules,
                                                       status)]))
    from . import health, metrics

    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    ui.init_app(app, state)

    @app.teardown_appcontext
    def _close(_exc):
        session = g.pop("db", None)
        if session is not None:
            session.close()

    return app


def state() -> State:
    return current_app.extensions["cloudcron"]


def db():
    """The request's session: a writer for methods that change things, a reader otherwise."""
    if "db" not in g:
        g.db = state().db.session(write=request.method not in ("GET", "HEAD", "OPTIONS"))
    return g.db


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


logging.getLogger(__name__).addHandler(logging.NullHandler())
