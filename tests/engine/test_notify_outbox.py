"""The outbox on SQLite and PostgreSQL: which run endings write deliveries, and that they share the run's transaction."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from web.crypto import new_id
from web.models import Channel, Delivery, Schedule
from web.runs import create_run, interrupt

from .conftest import T0


def _channel(env, name, default=False) -> str:
    with env.state.db.transaction() as s:
        channel = Channel(id=new_id(), org_id=env.org_id, name=name, kind="webhook", url_shown="https://h/…",
                          target_enc=env.state.box.seal({"kind": "webhook", "url": "https://h/x", "secret": "s" * 16}),
                          is_default=default, created_at=T0, updated_at=T0)
        s.add(channel)
        return channel.id


def _end(env, schedule_id, status) -> str:
    """A run of the schedule that ends with `status` the way the dispatcher records one; its id."""
    with env.state.db.transaction() as s:
        schedule = s.get(Schedule, schedule_id)
        if status == "interrupted":
            run = create_run(s, schedule, "scheduled", T0, T0, status="running")
            s.flush()
            interrupt(s, run, T0, "worker_lost", "no heartbeat")
        else:
            run = create_run(s, schedule, "scheduled", T0, T0, status=status, error="why")
        return run.id


def _deliveries(env, run_id):
    with env.state.db.session() as s:
        return s.scalars(select(Delivery).where(Delivery.run_id == run_id)).all()


@pytest.mark.parametrize("notify, status, expected", [
    (None, "missed", {"default"}),                               # no setting: default channels, default statuses
    (None, "skipped", set()),                                    # skipped is not a default status
    (None, "interrupted", {"default"}),
    ({"on": ["skipped"], "channels": ["named"]}, "skipped", {"named"}),
    ({"on": ["skipped"]}, "skipped", {"default"}),               # no channels given: the defaults
    ({"on": ["missed"], "channels": []}, "missed", set()),       # [] silences the schedule
    ({"on": ["failed"], "channels": ["named"]}, "missed", set()),
])
def test_a_run_ending_writes_one_delivery_per_channel_to_notify(env, notify, status, expected):
    ids = {"default": _channel(env, "default", default=True), "named": _channel(env, "named")}
    if notify and "channels" in notify:
        notify = {**notify, "channels": [ids[n] for n in notify["channels"]]}
    schedule_id = env.add()
    with env.state.db.transaction() as s:
        s.get(Schedule, schedule_id).notify = notify
    run_id = _end(env, schedule_id, status)
    deliveries = _deliveries(env, run_id)
    assert {d.channel_name for d in deliveries} == expected
    for d in deliveries:
        assert d.status == "pending" and d.next_attempt_at == T0 and d.attempts == []
        assert d.event["run"]["id"] == run_id and d.event["run"]["status"] == status
        assert d.event["delivery_id"] == d.id


def test_the_delivery_is_written_in_the_transaction_that_ends_the_run(env):
    _channel(env, "default", default=True)
    schedule_id = env.add()
    with pytest.raises(RuntimeError):
        with env.state.db.transaction() as s:
            run = create_run(s, s.get(Schedule, schedule_id), "scheduled", T0, T0, status="missed")
            s.flush()
            assert len(s.scalars(select(Delivery).where(Delivery.run_id == run.id)).all()) == 1
            raise RuntimeError("the run's transaction fails")
    with env.state.db.session() as s:
        assert s.scalars(select(Delivery)).all() == []
