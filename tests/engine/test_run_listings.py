"""Listings a worker does for its runs stay within the org's run listing slots (CLOUDCRON_RUN_LISTINGS_PER_ORG).

One org's cloud here is a real endpoint that accepts and never answers; the other org's is a real moto EC2 server.
Runs are prepared by the worker's own prepare(), each on its own thread as a worker slot would."""
from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from tests.harness.endpoints import BlackHole
from tests.harness.service import wait_until
from web.auth import ensure_org
from web.crypto import new_id
from web.dispatcher import Dispatcher
from web.models import Cloud, Machine, RunMachine, Schedule, Script
from web.schedules import build, next_run_at
from web.worker import claim, prepare

from .conftest import T0


def _cloud(env, org_id, options, credentials) -> str:
    cid = new_id()
    with env.state.db.transaction() as s:
        s.add(Cloud(id=cid, org_id=org_id, title=f"c-{cid[:6]}", provider="ec2", options=options,
                    credentials_enc=env.state.box.seal(credentials), created_at=T0, updated_at=T0))
    return cid


def _script_run(env, org_id, cloud_id, machine_id) -> str:
    """A due script schedule of `org_id` on one machine of `cloud_id`, claimed by the dispatcher; its run id."""
    now = T0 - timedelta(minutes=1)
    with env.state.db.transaction() as s:
        script = Script(id=new_id(), org_id=org_id, name=new_id(), script="#!/bin/sh\ntrue\n",
                        exec_type="executable", created_at=now, updated_at=now)
        s.add(script)
        s.flush()
        values = build(s, org_id, {"name": new_id(), "script_id": script.id, "machines_per_cloud": [[cloud_id, machine_id]],
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
