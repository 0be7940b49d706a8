"""Batches, on SQLite and PostgreSQL: the claim of many runs, fair share by org, runs too late to act on,
and a batch whose runs end three different ways. Real ansible-playbook, real sshd, a real moto EC2 server."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from web.auth import ensure_org
from web.crypto import new_id
from web.models import Cloud, Event, Key, Machine, Run, RunMachine, Schedule, Script
from web.runs import claim_ready, create_run, start_now
from web.worker import execute_run, utcnow

from .conftest import T0

pytestmark = pytest.mark.timeout(400)


def _queued_runs(env, n: int, org_id: str | None = None, at=None, **fields) -> list[str]:
    """n schedules (of org_id, default the env's org), each with one queued run due at `at` (default now)."""
    at = at or utcnow()
    org_id = org_id or env.org_id
    ids = []
    for i in range(n):
        sid = env.add(now=at - timedelta(seconds=1), **fields) if org_id == env.org_id else None
        with env.state.db.transaction() as s:
            if sid is None:  # another org: a copy of a schedule of its own
                sid = _schedule_of(s, org_id, at)
            schedule = s.get(Schedule, sid)
            if schedule.org_id != org_id:
                schedule.org_id = org_id
            run = create_run(s, schedule, "scheduled", at, at + timedelta(microseconds=i))
            ids.append(run.id)
    return ids


def _schedule_of(session, org_id: str, at) -> str:
    sid = new_id()
    session.add(Schedule(id=sid, org_id=org_id, name=sid, enabled=True, action="stop", machines_per_cloud=[],
                         selectors=[], schedule_type="interval", schedule_entry={"every": 1, "period": "days"},
                         total_run_count=0, created_at=at, updated_at=at, misfire_grace=300, timeout=60))
    return sid


def _claim(env, first_id, max_runs=50, max_machines=10_000, batching=True, manual_grace=600.0, now=None):
    with env.state.db.transaction() as s:
        return claim_ready(s, first_id, now or utcnow(), batching=batching, max_runs=max_runs,
                           max_machines=max_machines, manual_grace=manual_grace)


def _status(env, run_id) -> str:
    with env.state.db.session() as s:
        return s.get(Run, run_id).status


# ---------------------------------------------------------------- the claim

def test_a_claim_takes_every_ready_run_up_to_the_bound_and_the_message_run_first(env):
    ids = _queued_runs(env, 5)
    claimed, missed = _claim(env, ids[3], max_runs=3)
    assert missed == [] and claimed[0] == ids[3] and len(claimed) == 3
    assert {_status(env, r) for r in claimed} == {"running"}
    assert Counter(_status(env, r) for r in ids) == {"running": 3, "queued": 2}


def test_the_machine_bound_stops_a_batch_but_never_leaves_it_empty(env):
    ids = _queued_runs(env, 4, machines_per_cloud=[[env.cloud_id, "i-1"], [env.cloud_id, "i-2"]])
    claimed, _ = _claim(env, ids[0], max_machines=1)
    assert claimed == [ids[0]]  # alone it is over the bound, yet it is taken
    claimed, _ = _claim(env, ids[1], max_machines=4)
    assert len(claimed) == 2


def test_batching_off_claims_only_the_run_of_the_message(env):
    ids = _queued_runs(env, 3)
    assert _claim(env, ids[1], batching=False) == ([ids[1]], [])
    assert [_status(env, r) for r in ids] == ["queued", "running", "queued"]


def test_another_orgs_single_run_is_not_stalled_by_one_orgs_backlog(env):
    busy = _queued_runs(env, 30)
    with env.state.db.transaction() as s:
        other_org = ensure_org(s, "globex").id
    [lonely] = _queued_runs(env, 1, org_id=other_org, at=utcnow() + timedelta(seconds=1))  # queued last
    claimed, _ = _claim(env, busy[0], max_runs=4)
    assert lonely in claimed and len(claimed) == 4


def test_claims_racing_from_many_threads_take_each_run_exactly_once(env):
    ids = _queued_runs(env, 40)
    taken: list[str] = []
    lock = threading.Lock()
    go = threading.Barrier(4)

    def claimer(first):
        go.wait()
        for run_id in [first, *ids]:  # every message, as every worker would see them
            claimed, _ = _claim(env, run_id, max_runs=7)
            with lock:
                taken.extend(claimed)

    threads = [threading.Thread(target=claimer, args=(ids[i],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(taken) == sorted(ids)  # none twice, none left


# ---------------------------------------------------------------- nothing acts late

def test_a_scheduled_run_older_than_its_grace_is_missed_when_claimed(env):
    now = utcnow()
    [late] = _queued_runs(env, 1, at=now - timedelta(seconds=130), misfire_grace=120)
    [fresh] = _queued_runs(env, 1, at=now - timedelta(seconds=100), misfire_grace=120)
    claimed, missed = _claim(env, late, now=now)
    assert missed == [late] and claimed == [fresh]
    with env.state.db.session() as s:
        run = s.get(Run, late)
        assert run.status == "missed" and run.finished_at is not None
        assert run.error.startswith("waited 130 s in the queue") and "misfire_grace (120 s)" in run.error
        [event] = s.scalars(select(Event).where(Event.run_id == late)).all()
        assert event.type == "schedule_missed" and event.data["waited"] == 130


def test_a_manual_run_has_its_own_grace(env):
    sid = env.add(now=utcnow())
    now = utcnow()
    with env.state.db.transaction() as s:
        old = start_now(s, s.get(Schedule, sid), "manual", now - timedelta(seconds=61)).id
    with env.state.db.transaction() as s:
        young = start_now(s, s.get(Schedule, sid), "manual", now - timedelta(seconds=59)).id
    claimed, missed = _claim(env, old, manual_grace=60, now=now)
    assert (claimed, missed) == ([young], [old])
    with env.state.db.session() as s:
        assert "CLOUDCRON_MANUAL_GRACE (60 s)" in s.get(Run, old).error


def _moto_cloud(env, moto_server) -> str:
    cid = new_id()
    with env.state.db.transaction() as s:
        s.add(Cloud(id=cid, org_id=env.org_id, title=f"moto-{cid[:6]}", provider="ec2",
                    options=dict(moto_server.options), credentials_enc=env.state.box.seal(dict(moto_server.credentials)),
                    created_at=T0, updated_at=T0))
    return cid


def test_a_run_that_waited_past_its_grace_leaves_its_machine_alone(env, moto_server):
    cloud = _moto_cloud(env, moto_server)
    late_machine, fresh_machine = moto_server.create_machines(2)
    now = utcnow()
    [late] = _queued_runs(env, 1, at=now - timedelta(seconds=200), misfire_grace=120,
                          machines_per_cloud=[[cloud, late_machine]])
    # Within its grace, the same kind of run does stop its machine: the worker is not idle by accident.
    [fresh] = _queued_runs(env, 1, at=now - timedelta(seconds=60), misfire_grace=120,
                           machines_per_cloud=[[cloud, fresh_machine]])
    env.state.config.batching = False
    assert execute_run(env.state, late) == "missed"
    assert execute_run(env.state, fresh) == "succeeded"
    assert moto_server.state(late_machine) == "running"
    assert moto_server.state(fresh_machine) == "stopped"
    with env.state.db.session() as s:
        assert s.scalars(select(RunMachine).where(RunMachine.run_id == late)).all() == []
        assert [e.type for e in s.scalars(select(Event).where(Event.run_id == late))] == ["schedule_missed"]


# ---------------------------------------------------------------- one batch, several outcomes

def _ssh_machine(env, host) -> str:
    kid, cid, mid = new_id(), new_id(), new_id()
    with env.state.db.transaction() as s:
        s.add(Key(id=kid, org_id=env.org_id, name=kid, public="", private_enc=env.state.box.seal(host.private_key),
                  created_at=T0, updated_at=T0))
        s.add(Cloud(id=cid, org_id=env.org_id, title=f"lab-{cid[:6]}", provider="other", options={},
                    credentials_enc=None, created_at=T0, updated_at=T0))
        s.add(Machine(id=mid, org_id=env.org_id, cloud_id=cid, machine_id=f"m-{mid[:6]}", name="m", host=host.host,
                      port=host.port, ssh_user=host.user, key_id=kid, state="unknown", public_ips=[], private_ips=[],
                      tags={}, created_at=T0, updated_at=T0))
    return mid


def _script_row(env, text: str, exec_type: str = "executable") -> str:
    sid = new_id()
    with env.state.db.transaction() as s:
        s.add(Script(id=sid, org_id=env.org_id, name=sid, script=text, exec_type=exec_type,
                     created_at=T0, updated_at=T0))
    return sid


def test_a_batch_ends_each_run_its_own_way(env, sshd_hosts, moto_server):
    """An Ansible script that cannot render, a script past its timeout, a script and a stop that succeed."""
    machine = _ssh_machine(env, sshd_hosts[0])
    other = _ssh_machine(env, sshd_hosts[1])
    cloud = _moto_cloud(env, moto_server)
    [instance] = moto_server.create_machines(1)
    mixed = "- hosts: all\n  tasks: []\n- name: a task among plays\n  ansible.builtin.ping:\n"
    on = {"action": None, "machines_per_cloud": [], "selectors": [{"type": "machines", "ids": [machine]}],
          "misfire_grace": 3600}
    [bad] = _queued_runs(env, 1, **on, script_id=_script_row(env, mixed, "ansible"))
    [slow] = _queued_runs(env, 1, **{**on, "selectors": [{"type": "machines", "ids": [other]}]},
                          script_id=_script_row(env, "#!/bin/sh\nsleep 120\n"), timeout=4)
    [good] = _queued_runs(env, 1, **on, script_id=_script_row(env, "#!/bin/sh\necho fine \"$1\"\n"), params="ok")
    [stop] = _queued_runs(env, 1, machines_per_cloud=[[cloud, instance]], misfire_grace=3600)

    assert execute_run(env.state, good) == "succeeded"
    statuses = {r: _status(env, r) for r in (bad, slow, good, stop)}
    if env.state.sandbox.ansible_refusal():  # no sandbox here: the Ansible script is refused, also alone
        assert statuses[bad] == "failed"
    assert statuses == {bad: "failed", slow: "timed_out", good: "succeeded", stop: "succeeded"}
    assert moto_server.state(instance) == "stopped"
    with env.state.db.session() as s:
        runs = {r: s.get(Run, r) for r in statuses}
        rows = {r: s.scalars(select(RunMachine).where(RunMachine.run_id == r)).all() for r in statuses}
    assert rows[bad] == [] or {m.status for m in rows[bad]} <= {"failed"}
    if not env.state.sandbox.ansible_refusal():
        assert "mixes plays and tasks" in runs[bad].error
    [slow_row] = rows[slow]
    assert slow_row.status == "timed_out" and "timed out" in runs[slow].error
    [good_row] = rows[good]
    assert (good_row.status, good_row.rc, good_row.stdout.strip()) == ("succeeded", 0, "fine ok")
    [stop_row] = rows[stop]
    assert stop_row.status == "succeeded"


def test_script_runs_sharing_a_machine_end_each_their_own_way(env, sshd_hosts):
    """Three script runs on one machine: a success and a failure sharing a launcher host, a script past its time limit."""
    machine = _ssh_machine(env, sshd_hosts[0])
    on = {"action": None, "machines_per_cloud": [], "selectors": [{"type": "machines", "ids": [machine]}],
          "misfire_grace": 3600}
    [good] = _queued_runs(env, 1, **on, script_id=_script_row(env, "#!/bin/sh\necho fine \"$1\"\n"), params="ok")
    [bad] = _queued_runs(env, 1, **on, script_id=_script_row(env, "#!/bin/sh\necho broke >&2\nexit 7\n"))
    [slow] = _queued_runs(env, 1, **on, script_id=_script_row(env, "#!/bin/sh\nsleep 120\n"), timeout=20)
    assert execute_run(env.state, good) == "succeeded"
    assert {r: _status(env, r) for r in (good, bad, slow)} == {good: "succeeded", bad: "failed", slow: "timed_out"}
    with env.state.db.session() as s:
        rows = {r: s.scalars(select(RunMachine).where(RunMachine.run_id == r)).one() for r in (good, bad, slow)}
    assert (rows[good].status, rows[good].stdout) == ("succeeded", "fine ok\n")
    assert (rows[bad].status, rows[bad].rc, rows[bad].stderr) == ("failed", 7, "broke\n")
    assert rows[slow].status == "timed_out" and "time limit" in rows[slow].error


def test_a_batch_written_in_small_transactions_plans_records_and_ends_each_run_once(env, monkeypatch):
    from web import worker

    monkeypatch.setattr(worker, "WRITE_CHUNK", 2)
    lab = Cloud(id=new_id(), org_id=env.org_id, title="lab", provider="other", options={}, credentials_enc=None,
                created_at=T0, updated_at=T0)
    with env.state.db.transaction() as s:
        s.add(lab)
        mid = new_id()
        s.add(Machine(id=mid, org_id=env.org_id, cloud_id=lab.id, machine_id="web1", name="web1", host="127.0.0.1",
                      port=22, state="unknown", public_ips=[], private_ips=[], tags={}, created_at=T0, updated_at=T0))
    script = _script_row(env, "#!/bin/sh\ntrue\n")
    ids = _queued_runs(env, 7, action=None, machines_per_cloud=[], script_id=script,
                       selectors=[{"type": "machines", "ids": [mid]}])
    assert execute_run(env.state, ids[0]) == "failed"  # no SSH key: every run ends without ansible
    with env.state.db.session() as s:
        runs = s.scalars(select(Run).where(Run.id.in_(ids))).all()
        rows = s.scalars(select(RunMachine).where(RunMachine.run_id.in_(ids))).all()
        started = s.scalars(select(Event.run_id).where(Event.type == "schedule_started")).all()
    assert {r.status for r in runs} == {"failed"} and len(runs) == 7
    assert sorted(r.run_id for r in rows) == sorted(ids) and {r.error for r in rows} == {
        "no SSH key (set key_id on the machine)"}
    assert sorted(started) == sorted(ids)
