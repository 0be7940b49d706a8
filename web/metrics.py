"""GET /metrics in the Prometheus text format, through prometheus_client.

Two kinds of series:

- Events counted where they happen (runs ending, fires missed or skipped, lateness, durations, provider
  errors, notification deliveries): prometheus_client counters and histograms in the process that saw them.
  One process (`serve`, the default) serves its own. Several processes on one machine share them through
  prometheus_client's multiprocess mode: set PROMETHEUS_MULTIPROC_DIR to the same empty directory for every
  cloudcron process there (API, dispatcher, worker) before they start; each writes its values to files in it,
  and any API process's /metrics adds up all of them. Several machines: one such directory per machine and
  scrape an API process on each (a machine with a worker and no API needs one `serve --no-dispatcher
  --no-worker` to be scraped), or sum in Prometheus.
- State read from the database when scraped (queue depth, runs running, the oldest queued run's age, live
  workers and slots, the dispatchers' last tick): a custom collector, so every API process answers the same.

Access (CLOUDCRON_METRICS): `token` (default: any org's API token), `org:NAME` (that org's tokens only), `open`,
`off` (404), or address ranges allowed without a token. Series carry no org label, but they count every org's
runs: where tenants are not the operators, `org:NAME` keeps them to the operator's org.

The hook functions (run_ended, fire_ended, dispatched, provider_error, delivery) never raise: counting is
never a reason for a run to fail.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from datetime import datetime

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY as PROCESS_REGISTRY, CollectorRegistry, Counter, \
    Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from .backoff import one_line
from .errors import APIError

log = logging.getLogger(__name__)

# Read by prometheus_client when it is imported: it must be in the environment before the process starts.
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

# cloudcron's own counters and histograms (in multiprocess mode their values live in MULTIPROC_DIR instead).
REGISTRY = CollectorRegistry()
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)

RUNS = Counter("cloudcron_runs_finished", "Runs that reached a final status, by status and trigger",
               ["status", "trigger"], registry=REGISTRY)
FIRES_MISSED = Counter("cloudcron_fires_missed", "Fires never run because they were older than misfire_grace "
                       "(a missed record counts each fire it stands for)", registry=REGISTRY)
FIRES_SKIPPED = Counter("cloudcron_fires_skipped", "Fires recorded skipped (concurrency forbid, skip_next)",
                        registry=REGISTRY)
DISPATCH_LATENESS = Histogram("cloudcron_dispatch_lateness_seconds", "From a fire's time to the claim that "
                              "queued its run", buckets=LATENESS_BUCKETS, registry=REGISTRY)
START_LATENESS = Histogram("cloudcron_start_lateness_seconds", "From a run's scheduled time to a worker starting "
                           "it (observed when the run ends)", buckets=LATENESS_BUCKETS, registry=REGISTRY)
RUN_DURATION = Histogram("cloudcron_run_duration_seconds", "From a run's start to its end, by final status",
                         ["status"], buckets=DURATION_BUCKETS, registry=REGISTRY)
PROVIDER_ERRORS = Counter("cloudcron_provider_errors", "Provider calls (machine listings) that failed, by "
                          "libcloud provider", ["provider"], registry=REGISTRY)
DELIVERIES = Counter("cloudcron_notification_deliveries", "Notification delivery attempts, by outcome",
                     ["outcome"], registry=REGISTRY)


def _safely(what: str, fn) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - a metric must never break what it counts
        log.warning("metrics: cannot count %s: %s", what, one_line(exc))


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (later - earlier).total_seconds())


def run_ended(run) -> None:
    """Count a run that reached its final status (a Run row, or anything with status, trigger, scheduled_for,
    started_at, finished_at): runs by status and trigger, its duration and its start lateness when it started."""

    def count():
        RUNS.labels(run.status, run.trigger).inc()
        duration = _seconds(run.finished_at, run.started_at)
        if duration is not None:
            RUN_DURATION.labels(run.status).observe(duration)
        late = _seconds(run.started_at, run.scheduled_for)
        if late is not None:
            START_LATENESS.observe(late)

    _safely("a run's end", count)


def fire_ended(status: str, data: dict | None = None) -> None:
    """Count fires the dispatcher recorded without running: `missed` (data["missed_count"] fires) or `skipped`."""

    def count():
        if status == "missed":
            FIRES_MISSED.inc(max(1, int((data or {}).get("missed_count") or 1)))
        elif status == "skipped":
            FIRES_SKIPPED.inc()

    _safely("a fire", count)


def dispatched(lateness: float) -> None:
    """Observe the seconds from a fire's time to the claim that queued its run."""
    _safely("dispatch lateness", lambda: DISPATCH_LATENESS.observe(max(0.0, lateness)))


def provider_error(provider: str) -> None:
    """Count a failed provider call of a libcloud provider (`ec2`, `gce`, ...)."""
    _safely("a provider error", lambda: PROVIDER_ERRORS.labels(provider or "unknown").inc())


def delivery(outcome: str) -> None:
    """Count one notification delivery attempt by outcome (e.g. `delivered`, `failed`, `retrying`)."""
    _safely("a delivery", lambda: DELIVERIES.labels(outcome or "unknown").inc())


class _Forward:
    """Collects another registry's series (this process's counters, and prometheus_client's process metrics)."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()


class DatabaseCollector:
    """Gauges read from the database at scrape time; cloudcron_database_up says whether that worked."""

    def __init__(self, state):
        self.state = state

    def collect(self):
        from . import utcnow
        from .heartbeats import fleet
        from .status import backlog

        up = GaugeMetricFamily("cloudcron_database_up", "1 when the database answered this scrape's queries")
        try:
            now = utcnow()
            with self.state.db.session() as session:
                b = backlog(session, now)
                procs = fleet(session, now)
        except Exception as exc:  # noqa: BLE001 - the scrape still answers, saying the database did not
            log.warning("metrics: the database failed: %s", one_line(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("cloudcron_queue_depth", "Runs waiting for a worker (status queued), all orgs",
                                value=b.queued)
        yield GaugeMetricFamily("cloudcron_runs_running", "Runs executing now, all orgs", value=b.running)
        yield GaugeMetricFamily("cloudcron_oldest_queued_age_seconds", "Age of the oldest queued run (0 when none)",
                                value=b.oldest_queued_age or 0.0)
        yield GaugeMetricFamily("cloudcron_workers_live", "Worker processes that beat within 30 s", value=procs.workers)
        yield GaugeMetricFamily("cloudcron_worker_slots", "Runs the live workers can execute at once",
                                value=procs.slots)
        yield GaugeMetricFamily("cloudcron_dispatchers_live", "Dispatchers that ticked within 30 s",
                                value=procs.dispatchers)
        if procs.last_tick is not None:
            yield GaugeMetricFamily("cloudcron_dispatcher_last_tick_age_seconds", "Seconds since any dispatcher "
                                    "last ticked", value=_seconds(now, procs.last_tick))


def scrape_registry(state) -> CollectorRegistry:
    """The registry /metrics renders: the counters (this process's, or every process's in MULTIPROC_DIR)
    and the database gauges."""
    registry = CollectorRegistry()
    if MULTIPROC_DIR:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    else:
        registry.register(_Forward(REGISTRY))
        registry.register(_Forward(PROCESS_REGISTRY))
    registry.register(DatabaseCollector(state))
    return registry


bp = Blueprint("metrics", __name__)


class Forbidden(APIError):
    """403: a scrape CLOUDCRON_METRICS does not allow (another org's token, an address outside the ranges)."""

    status = 403


class Unavailable(APIError):
    """503: the scrape's token cannot be checked because the database cannot be read."""

    status = 503


def _allowed(config) -> None:
    """Apply CLOUDCRON_METRICS: NotFound when off, Unauthorized without a valid token, Forbidden for a token of
    another org than org:NAME's or outside the allowed networks, Unavailable when a token cannot be checked."""
    from . import db
    from .auth import authenticate
    from .errors import NotFound
    from .models import Org

    mode = config.metrics
    if mode == "off":
        raise NotFound("/metrics is turned off (CLOUDCRON_METRICS=off)")
    if mode in ("token", "org"):
        try:
            org_id = authenticate(db())
            name = db().scalar(select(Org.name).where(Org.id == org_id)) if mode == "org" else None
        except DBAPIError as exc:  # the token cannot be checked: say so, rather than an internal error
            log.warning("metrics: cannot check the scrape's token: %s", one_line(exc))
            raise Unavailable(f"/metrics: the database cannot be read, so the token cannot be checked "
                              f"(CLOUDCRON_METRICS={mode}); a range of addresses needs no database") from None
        if mode == "org" and name != config.metrics_org:
            # Not naming the org: a tenant's token learns only that it may not scrape.
            raise Forbidden("/metrics: this token's org may not read the metrics (CLOUDCRON_METRICS)")
    elif mode == "networks":
        try:
            address = ipaddress.ip_address((request.remote_addr or "").split("%", 1)[0])
        except ValueError:
            address = None
        if address is not None and address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
        if address is None or not any(address in net for net in config.metrics_networks):
            raise Forbidden("/metrics: this address is not in CLOUDCRON_METRICS's allowed networks")


@bp.get("/metrics")
def metrics():
    """The scrape, in the Prometheus text format (version 0.0.4), after the CLOUDCRON_METRICS check."""
    from . import state

    st = state()
    _allowed(st.config)
    registry = current_app.extensions.get("cloudcron_metrics")
    if registry is None:  # one per application: a second app in the same process gets its own
        registry = current_app.extensions["cloudcron_metrics"] = scrape_registry(st)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
