"""The sender on SQLite and PostgreSQL against a real loopback receiver, with the clock passed in: claims,
back-off, giving up, permanent failures."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from tests.harness.receiver import LOOPBACK_ALLOWED
from web.crypto import new_id
from web.models import Channel, Delivery
from web.notify import Sender, next_wait

from .conftest import T0


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def _setup(env, url, allow_loopback=True):
    """A webhook channel to `url` and one pending delivery due at T0; the delivery's id. allow_loopback: the
    receivers' list is the operator's LOOPBACK_ALLOWED, not the default (which refuses loopback)."""
    config = env.state.config
    config.notify_backoff, config.notify_retry_for = 5.0, 60.0
    if allow_loopback:
        config.notify_denied_networks = LOOPBACK_ALLOWED
    with env.state.db.transaction() as s:
        channel = Channel(id=new_id(), org_id=env.org_id, name="hook", kind="webhook", url_shown="http://127.0.0.1/…",
                          target_enc=env.state.box.seal({"kind": "webhook", "url": url, "secret": "s" * 16}),
                          is_default=False, created_at=T0, updated_at=T0)
        s.add(channel)
        delivery = Delivery(id=new_id(), org_id=env.org_id, run_id=new_id(), channel_id=channel.id, channel_name="hook",
                            kind="run", event={"type": "run.finished", "run": {"id": "r"}}, status="pending",
                            attempts=[], next_attempt_at=T0, created_at=T0)
        s.add(delivery)
        return delivery.id


def _delivery(env, id_):
    with env.state.db.session() as s:
        return s.get(Delivery, id_)


def test_the_wait_doubles_up_to_the_cap():
    assert [next_wait(n, 5.0) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert next_wait(20, 5.0) == 600.0


def test_a_failing_receiver_is_retried_with_back_off_until_the_retry_time_ends(env, receiver):
    hook = receiver(statuses=(503,))
    delivery_id = _setup(env, hook.url)
    clock = Clock(T0)
    sender = Sender(env.state, clock)
    assert sender.tick() is True
    d = _delivery(env, delivery_id)
    assert d.status == "pending" and d.next_attempt_at == T0 + timedelta(seconds=5)
    assert sender.tick() is False  # not due yet
    expected_waits = [5, 10, 20]
    for wait in expected_waits[1:]:
        clock.now = _delivery(env, delivery_id).next_attempt_at
        assert sender.tick() is True
        assert _delivery(env, delivery_id).next_attempt_at == clock.now + timedelta(seconds=wait)
    clock.now = _delivery(env, delivery_id).next_attempt_at  # T0 + 35 s: the next wait (40 s) ends past 60 s
    assert sender.tick() is True
    d = _delivery(env, delivery_id)
    assert d.status == "failed" and d.next_attempt_at is None and len(d.attempts) == 4 == len(hook.requests)
    assert all(a["error"] == "HTTP 503 Service Unavailable" for a in d.attempts)
    assert sender.tick() is False


def test_a_4xx_is_permanent(env, receiver):
    hook = receiver(statuses=(404,))
    delivery_id = _setup(env, hook.url)
    Sender(env.state, Clock(T0)).tick()
    d = _delivery(env, delivery_id)
    assert d.status == "failed" and len(d.attempts) == 1 and d.attempts[0]["error"] == "HTTP 404 Not Found"


def test_a_delivery_to_a_loopback_receiver_is_refused_by_default_and_not_retried(env, receiver):
    hook = receiver()
    delivery_id = _setup(env, hook.url.replace("127.0.0.1", "localhost"), allow_loopback=False)
    assert Sender(env.state, Clock(T0)).tick() is True
    d = _delivery(env, delivery_id)
    assert hook.requests == [] and d.status == "failed" and d.next_attempt_at is None and len(d.attempts) == 1
    assert d.attempts[0]["error"] == ("the receiver's address is in a network cloudcron does not contact "
                                      "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)")


def test_a_claimed_delivery_is_not_sent_by_a_second_sender_until_its_claim_lapses(env, receiver):
    hook = receiver()
    delivery_id = _setup(env, hook.url)
    first = Sender(env.state, Clock(T0))
    assert first._claim(T0) is not None  # claimed, then the process dies before sending
    second = Sender(env.state, Clock(T0 + timedelta(seconds=1)))
    assert second.tick() is False
    second.clock.now = T0 + first.lease + timedelta(seconds=1)
    assert second.tick() is True
    assert _delivery(env, delivery_id).status == "delivered" and len(hook.requests) == 1


def test_a_deleted_channel_ends_the_delivery(env, receiver):
    hook = receiver()
    delivery_id = _setup(env, hook.url)
    with env.state.db.transaction() as s:
        s.delete(s.scalars(select(Channel)).one())
    Sender(env.state, Clock(T0)).tick()
    d = _delivery(env, delivery_id)
    assert d.status == "failed" and d.attempts[0]["error"] == "the channel was deleted" and hook.requests == []


def _org_deliveries(env, org_id, url, name, due, count):
    """A webhook channel of `org_id` named `name` and `count` pending deliveries to it, all due at `due`; their ids."""
    with env.state.db.transaction() as s:
        channel = Channel(id=new_id(), org_id=org_id, name=name, kind="webhook", url_shown="http://127.0.0.1/…",
                          target_enc=env.state.box.seal({"kind": "webhook", "url": url, "secret": "s" * 16}),
                          is_default=False, created_at=T0, updated_at=T0)
        s.add(channel)
        ids = [new_id() for _ in range(count)]
        for id_ in ids:
            s.add(Delivery(id=id_, org_id=org_id, run_id=new_id(), channel_id=channel.id, channel_name=name,
                           kind="run", event={"type": "run.finished", "run": {"id": "r"}}, status="pending",
                           attempts=[], next_attempt_at=due, created_at=T0))
        return ids


def test_an_org_with_a_backlog_does_not_keep_other_orgs_waiting(env, receiver):
    from web.auth import ensure_org

    env.state.config.notify_denied_networks = LOOPBACK_ALLOWED
    with env.state.db.transaction() as s:
        other_org = ensure_org(s, "globex").id
    slow = receiver(statuses=(503,))
    fast = receiver()
    # One org's 20 deliveries fell due first (its receiver failing slowly); another org's one is due a second later.
    _org_deliveries(env, env.org_id, slow.url, "flood", T0, 20)
    [theirs] = _org_deliveries(env, other_org, fast.url, "pager", T0 + timedelta(seconds=1), 1)
    sender = Sender(env.state, Clock(T0 + timedelta(seconds=1)))
    assert sender.tick() is True and len(slow.requests) == 1
    assert sender.tick() is True
    assert _delivery(env, theirs).status == "delivered" and len(slow.requests) == 1
