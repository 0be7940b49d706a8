"""Listings a worker does for its runs stay within the org's run listing slots (CLOUDCRON_RUN_LISTINGS_PER_ORG).

One org's cloud here is a real endpoint that accepts and never answers; the other org's is a real moto EC2 server.
Runs are prepared by the worker's own prepare(), each on its own thread as a worker slot would."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import select

from tests.harness.endpoints import BlackHole
from tests.harness.service import wait_until
from web.auth import ensure_org
from web.crypto import new_id
from web.dispatcher import Dispatcher
from web.models import Cloud, Machine, RunMachine, Schedule, Script
from web.machines import CloudSpec, ProviderLimits
from web.schedules import build, next_run_at
from web.worker import Execution, Listings, _by_org_in_turn, claim, plan_many, prepare

from .conftest import T0


def _cloud(env, org_id, options, credentials) -> str:
    cid = new_id()
    with env.state.db.transaction() as s:
        s.add(Cloud(id=cid, org_id=org_id, title=f"c-{cid[:6]}", provider="ec2", options=options,
                    credentials_enc=env.state.box.seal(credentials), created_at=T0, updated_at=T0))
    return cid


def _script_run(env, org_id, cloud_id, machine_id, more=()) -> str:
    """A due script schedule of `org_id` on one machine of `cloud_id` (and the [cloud, machine] pairs of `more`),
    claimed by the dispatcher; its run id."""
    now = T0 - timedelta(minutes=1)
    with env.state.db.transaction() as s:
        script = Script(id=new_id(), org_id=org_id, name=new_id(), script="#!/bin/sh\ntrue\n",
                        exec_type="executable", created_at=now, updated_at=now)
        s.add(script)
        s.flush()
        values = build(s, org_id, {"name": new_id(), "script_id": script.id, "machines_per_cloud": [[cloud_id, machine_id], *more],
                                   "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "minutes"}},
                       None, now, timedelta(seconds=1))
        sch = Schedule(id=new_id(), org_id=org_id, total_run_count=0, created_at=now, updated_at=now, **values)
        sch.next_run_at = next_run_at(sch, now)
        s.add(sch)
    runs = Dispatcher(env.state, lambda ids: None, clock=lambda: T0).claim(T0)
    assert len(runs) == 1
    assert claim(env.state, runs[0], T0)
    return runs[0]


def _errors(env, run_id) -> list[str]:
    with env.state.db.session() as s:
        return [m.error or "" for m in s.scalars(select(RunMachine).where(RunMachine.run_id == run_id))]


def test_an_orgs_runs_beyond_its_listing_slot_use_stored_machines_and_other_orgs_still_list(env, moto_server):
    env.state.config.provider_timeout = 20
    moto_server.create_machines(1)
    with BlackHole() as hole:
        slow = _cloud(env, env.org_id, hole.options(), {"key": "AKIDSLOW", "secret": "not-a-secret"})
        with env.state.db.transaction() as s:  # what an earlier listing of the slow cloud stored
            s.add(Machine(id=new_id(), org_id=env.org_id, cloud_id=slow, machine_id="i-a", name="a", state="running",
                          public_ips=["192.0.2.10"], private_ips=[], tags={}, created_at=T0, updated_at=T0))
        with env.state.db.transaction() as s:
            other_org = ensure_org(s, "globex").id
        fast = _cloud(env, other_org, dict(moto_server.options), dict(moto_server.credentials))

        first = _script_run(env, env.org_id, slow, "i-a")
        held = threading.Thread(target=prepare, args=(env.state, first, T0), daemon=True)
        held.start()
        wait_until(lambda: hole.accepted >= 1, 20, what="the first run's listing to reach the endpoint")
        assert env.state.listings.runs_in_flight(env.org_id) == 1

        # A second run of the same org does not take another slot for the same endless wait.
        second = _script_run(env, env.org_id, slow, "i-a")
        (rendered, _meta), error = prepare(env.state, second, T0)
        assert error is None, error
        assert held.is_alive() and hole.accepted == 1  # answered while the first still waits, without asking again
        # Its target is the stored machine (reached, here, only as far as its missing SSH key), no listing error.
        assert _errors(env, second) == ["no SSH key (set key_id on the machine)"], _errors(env, second)

        # Another org's run lists its own cloud as usual.
        third = _script_run(env, other_org, fast, "i-none")
        prepare(env.state, third, T0)
        with env.state.db.session() as s:
            listed = s.scalars(select(Machine).where(Machine.cloud_id == fast)).all()
        assert listed and all(m.machine_id.startswith("i-") for m in listed)
        assert held.is_alive()
    held.join(timeout=60)
    assert not held.is_alive()
    assert env.state.listings.runs_in_flight(env.org_id) == 0
    assert any("cannot list machines" in e for e in _errors(env, first)), _errors(env, first)


def _stored_machine(env, org_id, cloud_id, machine_id) -> None:
    """A machine as an earlier listing of the cloud stored it."""
    with env.state.db.transaction() as s:
        s.add(Machine(id=new_id(), org_id=org_id, cloud_id=cloud_id, machine_id=machine_id, name=machine_id,
                      state="running", public_ips=["192.0.2.10"], private_ips=[], tags={},
                      created_at=T0, updated_at=T0))


def test_one_orgs_many_slow_clouds_delay_another_orgs_run_in_the_batch_by_about_one_timeout_not_one_each(
        env, moto_server):
    timeout, slow_clouds = 2, 5
    env.state.config.provider_timeout = timeout
    moto_server.create_machines(1)
    with BlackHole() as hole:
        slow = [_cloud(env, env.org_id, hole.options(), {"key": "AKIDSLOW", "secret": "not-a-secret"})
                for _ in range(slow_clouds)]
        for cid in slow:
            _stored_machine(env, env.org_id, cid, "i-a")
        with env.state.db.transaction() as s:
            other_org = ensure_org(s, "globex").id
        fast = _cloud(env, other_org, dict(moto_server.options), dict(moto_server.credentials))
        slow_run = _script_run(env, env.org_id, slow[0], "i-a", [[cid, "i-a"] for cid in slow[1:]])
        fast_run = _script_run(env, other_org, fast, "i-none")

        listings = Listings(ProviderLimits.of(env.state.config), env.state)
        began = time.monotonic()
        planned = plan_many(env.state, [slow_run, fast_run], T0, Execution(slow_run), listings)
        took = time.monotonic() - began

    # One after another, the slow org's clouds took slow_clouds x timeout (10 s) before the other org's run was
    # planned; now one slow listing runs, the others wait for its slot until the batch's deadline.
    assert took < 2 * timeout + 3, took
    assert planned[fast_run][1] is None, planned[fast_run]
    assert fast in listings.found and fast not in listings.errors
    with env.state.db.session() as s:
        listed = s.scalars(select(Machine).where(Machine.cloud_id == fast)).all()
    assert listed and all(m.machine_id.startswith("i-") for m in listed)
    # The slow org asked its endpoint for one cloud at a time (its one run listing slot), within the batch's
    # deadline once or, should a listing end early, twice; its other clouds used their stored machines.
    assert 1 <= len(listings.errors) <= 2 and set(listings.errors) <= set(slow), listings.errors
    assert hole.accepted < slow_clouds, hole.accepted
    assert all(listings.found[cid].nodes[0]["machine_id"] == "i-a" for cid in slow if cid not in listings.errors)
    assert env.state.listings.runs_in_flight(env.org_id) == 0


def test_an_orgs_several_quick_clouds_in_one_batch_are_all_listed_fresh(env, moto_server):
    env.state.config.provider_timeout = 20
    assert env.state.listings.run_per_org == 1  # so its clouds take turns at the org's one slot
    made = set(moto_server.create_machines(2))
    clouds = [_cloud(env, env.org_id, dict(moto_server.options), dict(moto_server.credentials)) for _ in range(3)]
    for cid in clouds:
        _stored_machine(env, env.org_id, cid, "i-stale")  # what a fresh listing no longer finds
    run = _script_run(env, env.org_id, clouds[0], "i-stale", [[cid, "i-stale"] for cid in clouds[1:]])

    listings = Listings(ProviderLimits.of(env.state.config), env.state)
    plan_many(env.state, [run], T0, Execution(run), listings)

    assert not listings.errors, listings.errors
    for cid in clouds:
        ids = {n["machine_id"] for n in listings.found[cid].nodes}
        assert made <= ids and "i-stale" not in ids, (cid, ids)
    with env.state.db.session() as s:
        stale = s.scalars(select(Machine).where(Machine.machine_id == "i-stale")).all()
    assert len(stale) == 3 and all(m.state == "missing" for m in stale), [m.state for m in stale]


def test_a_stopped_batch_does_not_wait_for_its_listings(env):
    env.state.config.provider_timeout = 20
    with BlackHole() as hole:
        slow = [_cloud(env, env.org_id, hole.options(), {"key": "AKIDSLOW", "secret": "not-a-secret"})
                for _ in range(2)]
        run = _script_run(env, env.org_id, slow[0], "i-a", [[slow[1], "i-a"]])
        execution = Execution(run)
        threading.Timer(1.0, execution.stop, args=("shutdown", "the worker was stopped")).start()
        began = time.monotonic()
        planned = plan_many(env.state, [run], T0, execution, Listings(ProviderLimits.of(env.state.config), env.state))
        took = time.monotonic() - began
        assert planned[run] == (None, "the worker was stopped")
        assert took < 10, took  # a listing alone may take 20 s
        wait_until(lambda: env.state.listings.runs_in_flight(env.org_id) == 0, 30, what="the listing to end")


def test_a_batchs_clouds_are_taken_one_org_after_another_in_turn():
    specs = [CloudSpec(f"{org}{n}", org, "ec2", {}, {}) for org, n in
             [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1), ("c", 1), ("c", 2)]]
    assert [s.id for s in _by_org_in_turn(specs)] == ["a1", "b1", "c1", "a2", "c2", "a3", "a4"]
