"""The counters the engine moves: fires missed and skipped, dispatch lateness, runs by final status and trigger.

Read from this process's registry (web.metrics.REGISTRY), as /metrics serves it in one-process mode."""
from __future__ import annotations

from datetime import timedelta

from web import metrics
from web.dispatcher import Dispatcher
from web.worker import claim as worker_claim

from .conftest import T0


def value(name, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_claim_counts_missed_fires_one_by_one_and_observes_dispatch_lateness(env):
    env.add(now=T0 - timedelta(minutes=1), misfire_grace=120)
    d = Dispatcher(env.state, lambda ids: None, clock=lambda: T0, pending=lambda: 0)
    missed = value("cloudcron_fires_missed_total")
    runs_missed = value("cloudcron_runs_finished_total", status="missed", trigger="scheduled")
    late_count = value("cloudcron_dispatch_lateness_seconds_count")
    late_sum = value("cloudcron_dispatch_lateness_seconds_sum")
    # Fires every minute from T0; claimed at T0 + 10:30 with a 120 s grace: 9 missed, one run for T0 + 10:00.
    assert len(d.claim(T0 + timedelta(minutes=10, seconds=30))) == 1
    assert value("cloudcron_fires_missed_total") == missed + 9
    assert value("cloudcron_runs_finished_total", status="missed", trigger="scheduled") == runs_missed + 1
    assert value("cloudcron_dispatch_lateness_seconds_count") == late_count + 1
    assert value("cloudcron_dispatch_lateness_seconds_sum") - late_sum == 30.0


def test_a_fire_skipped_under_forbid_is_counted(env):
    env.add(now=T0 - timedelta(minutes=1))  # concurrency forbid by default
    d = Dispatcher(env.state, lambda ids: None, clock=lambda: T0, pending=lambda: 0)
    skipped = value("cloudcron_fires_skipped_total")
    assert len(d.claim(T0)) == 1
    assert d.claim(T0 + timedelta(minutes=1)) == []  # the first run is still queued
    assert value("cloudcron_fires_skipped_total") == skipped + 1


def test_an_interrupted_run_is_counted_with_its_duration_and_start_lateness(env):
    env.add(now=T0 - timedelta(minutes=1))
    d = Dispatcher(env.state, lambda ids: None, clock=lambda: T0, pending=lambda: 0)
    [run_id] = d.claim(T0)
    assert worker_claim(env.state, run_id, T0 + timedelta(seconds=2))
    before = value("cloudcron_runs_finished_total", status="interrupted", trigger="scheduled")
    durations = value("cloudcron_run_duration_seconds_count", status="interrupted")
    late = value("cloudcron_start_lateness_seconds_sum")
    assert d.sweep(T0 + timedelta(minutes=5)) == (0, 1)  # no heartbeat: the worker is gone
    assert value("cloudcron_runs_finished_total", status="interrupted", trigger="scheduled") == before + 1
    assert value("cloudcron_run_duration_seconds_count", status="interrupted") == durations + 1
    assert value("cloudcron_start_lateness_seconds_sum") - late == 2.0


def test_the_hooks_for_other_parts_count_by_label_and_never_raise():
    before = value("cloudcron_notification_deliveries_total", outcome="delivered")
    metrics.delivery("delivered")
    assert value("cloudcron_notification_deliveries_total", outcome="delivered") == before + 1
    errors = value("cloudcron_provider_errors_total", provider="ec2")
    metrics.provider_error("ec2")
    assert value("cloudcron_provider_errors_total", provider="ec2") == errors + 1
    metrics.run_ended(object())  # not a run: logged, not raised
