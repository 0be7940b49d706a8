"""The worker: takes a run id, claims the run, resolves its machines, renders and executes its playbook."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from sqlalchemy import select, update

from .backoff import Backoff
from .machines import ProviderError, private_key, resolve, ssh_address
from .models import Cloud, Machine, Run, RunMachine, Schedule, Script
from .runs import add_event
from .scrub import run_secrets
from .validation import SSH_USER_RULE, is_ssh_user

log = logging.getLogger(__name__)

ACTION_STATE = {"start": "started", "stop": "stopped", "reboot": "restarted", "destroy": "absent"}
HEARTBEAT_EVERY = 10.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def claim(state, run_id: str, now: datetime) -> bool:
    """queued -> running with a conditional UPDATE: a duplicate message finds nothing to claim."""
    with state.db.transaction() as session:
        result = session.execute(
            update(Run).where(Run.id == run_id, Run.status == "queued")
            .values(status="running", started_at=now, heartbeat_at=now)
        )
        return result.rowcount == 1


def prepare(state, run_id: str, now: datetime):
    """Resolve targets and render the playbook; machines that cannot be reached are failed at once."""
    from .playbooks import CloudTargets, RenderError, SshTarget, remote_time_limit, render_power, render_script

    box = state.box
    with state.db.transaction() as session:
        run = session.get(Run, run_id)
        schedule = session.get(Schedule, run.schedule_id)
        if schedule is None:
            return None, "the schedule was deleted before its run started"
        add_event(session, run, "schedule_started", now, {"trigger": run.trigger})
        script = session.get(Script, schedule.script_id) if schedule.script_id else None
        if schedule.script_id and script is None:
            return None, f"script '{schedule.script_id}' no longer exists"
        if script is not None and script.exec_type == "ansible":
            refusal = state.sandbox.ansible_refusal()
            if refusal:
                return None, refusal
        try:
            targets = resolve(session, box, schedule, now, need_addresses=script is not None)
        except ProviderError as exc:
            return None, exc.message
        failed: list[tuple[str, str, str, str]] = []  # key, cloud_id, machine_id, error
        for cloud_id, machine_id, why in targets.missing:
            failed.append((f"{cloud_id}:{machine_id}", cloud_id, machine_id, why))
        rendered = None
        if script is None:
            clouds = {c.id: c for c in session.scalars(select(Cloud).where(Cloud.org_id == run.org_id))}
            groups: dict[str, dict[str, str]] = {}
            for m in targets.machines:
                if clouds[m.cloud_id].provider == "other":
                    failed.append((m.id, m.cloud_id, m.machine_id,
                                   "power actions need a libcloud cloud; this machine is a plain SSH host"))
                else:
                    groups.setdefault(m.cloud_id, {})[m.machine_id] = m.id
            if groups:
                rendered = render_power(ACTION_STATE[schedule.action], [
                    CloudTargets(run_id=run.id, provider=clouds[cid].provider,
                                 credentials=box.open(clouds[cid].credentials_enc) if clouds[cid].credentials_enc else {},
                                 options=clouds[cid].options or {}, machines=machines)
                    for cid, machines in groups.items()
                ])
        else:
            ssh: list = []
            for m in targets.machines:
                address, key = ssh_address(m), private_key(session, box, m)
                if not address or not key or not is_ssh_user(m.ssh_user or "root"):
                    why = ("no address to reach it over SSH" if not address
                           else "no SSH key (set key_id on the machine)" if not key
                           else f"ssh_user {m.ssh_user!r} {SSH_USER_RULE}")
                    failed.append((m.id, m.cloud_id, m.machine_id, why))
                    continue
                ssh.append(SshTarget(run_id=run.id, key=m.id, host=address, port=m.port or 22,
                                     user=m.ssh_user or "root", private_key=key,
                                     time_limit=remote_time_limit(schedule.timeout) if schedule.timeout else None))
            if ssh:
                try:
                    rendered = render_script(script.exec_type, script.script, schedule.params or "", ssh)
                except RenderError as exc:  # a user's Ansible script that is not valid: permanent
                    return None, f"script '{script.id}': {exc}"
        failed_keys = {f[0] for f in failed}
        for m in targets.machines:
            if m.id not in failed_keys:
                session.add(RunMachine(run_id=run.id, machine_key=m.id, cloud_id=m.cloud_id,
                                       machine_id=m.machine_id, status="running"))
        for key, cloud_id, machine_id, why in failed:
            session.add(RunMachine(run_id=run.id, machine_key=key, cloud_id=cloud_id or None, machine_id=machine_id,
                                   status="failed", error=why))
            add_event(session, run, "machine_action_failed", now, {"error": why}, cloud_id or None, machine_id)
        meta = {"timeout": schedule.timeout, "script": script is not None, "action": schedule.action}
    return (rendered, meta), None


def _record(state, run_id: str, key: str, result, is_script: bool) -> None:
    now = utcnow()
    with state.db.transaction() as session:
        row = session.scalar(select(RunMachine).where(RunMachine.run_id == run_id, RunMachine.machine_key == key))
        if row is None:
            return
        row.status, row.rc, row.error, row.duration = result.status, result.rc, result.error, result.duration
        row.stdout, row.stderr = result.stdout, result.stderr
        run = session.get(Run, run_id)
        if is_script:
            type_ = "script_finished"
            data = {"rc": result.rc, "status": result.status, **({"error": result.error} if result.error else {})}
        else:
            type_ = "machine_action_succeeded" if result.status == "succeeded" else "machine_action_failed"
            data = {"status": result.status, **({"error": result.error} if result.error else {})}
            machine = session.get(Machine, key)
            new_state = getattr(result, "state", None)
            if machine is not None and new_state:
                machine.state = new_state
        add_event(session, run, type_, now, data, row.cloud_id, row.machine_id)


def _heartbeat(state, run_id: str, stop: threading.Event) -> None:
    # A failed beat is tried again sooner (1, 2, 4 ... s, never later than the usual beat), logged in full once.
    errors = Backoff(f"heartbeat of run {run_id}", log, first=1.0, cap=HEARTBEAT_EVERY)
    wait = HEARTBEAT_EVERY
    while not stop.wait(wait):
        try:
            with state.db.transaction() as session:
                session.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                                .values(heartbeat_at=utcnow()))
        except Exception:
            wait = errors.failed()
        else:
            errors.succeeded()
            wait = HEARTBEAT_EVERY


def finish(state, run_id: str, exec_status: str | None, error: str | None) -> str:
    """Set the run's final status from its machines' results."""
    now = utcnow()
    with state.db.transaction() as session:
        run = session.get(Run, run_id)
        rows = session.scalars(select(RunMachine).where(RunMachine.run_id == run_id)).all()
        for row in rows:
            if row.status == "running":
                row.status = "timed_out" if exec_status == "timed_out" else "failed"
                row.error = row.error or ("the run timed out" if exec_status == "timed_out" else "no result came back")
        ok = sum(1 for r in rows if r.status == "succeeded")
        if exec_status == "timed_out":
            status = "timed_out"
        elif rows and ok == len(rows):
            status = "succeeded"
        elif ok:
            status = "partial"
        else:
            status = "failed"
        if run.status == "running":
            run.status = status
            run.finished_at = now
            run.error = error or (None if status == "succeeded" else _summary(rows))
            add_event(session, run, "schedule_finished", now, {"status": status, **({"error": run.error} if run.error else {})})
        return run.status


def _summary(rows) -> str | None:
    bad = [r for r in rows if r.status != "succeeded"]
    if not rows:
        return "no machine to act on"
    return f"{len(bad)} of {len(rows)} machine(s) did not succeed" if bad else None


def execute_run(state, run_id: str) -> str | None:
    """Do one run from start to end; returns its final status, or None when another worker has it.

    Secrets decrypted for the run (credentials, SSH keys) never appear in what it stores: see scrub.run_secrets.
    """
    now = utcnow()
    if not claim(state, run_id, now):
        return None
    with run_secrets():
        return _execute_claimed(state, run_id, now)


def _execute_claimed(state, run_id: str, now: datetime) -> str:
    from .runner import execute

    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(state, run_id, stop), daemon=True, name=f"heartbeat-{run_id[:8]}")
    beat.start()
    try:
        prepared, error = prepare(state, run_id, now)
        if prepared is None:
            return finish(state, run_id, "error", error)
        rendered, meta = prepared
        if rendered is None:
            return finish(state, run_id, None, None)
        result = execute(
            rendered, base_dir=state.config.work_dir, timeout=meta["timeout"], output_cap=state.config.output_cap,
            on_result=lambda rid, key, res: _record(state, rid, key, res, meta["script"]),
            sandbox=state.sandbox,
        )
        return finish(state, run_id, result.status, result.error)
    except Exception as exc:
        log.exception("run %s failed", run_id)
        return finish(state, run_id, "error", f"internal error: {exc.__class__.__name__}: {exc}")
    finally:
        stop.set()
