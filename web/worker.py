"""The worker: takes a run id, claims the run, resolves its machines, renders and executes its playbook."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from sqlalchemy import select, update

from . import metrics
from .backoff import Backoff
from .listings import fetch_for_run
from .machines import (ProviderError, ProviderLimits, cloud_spec, clouds_to_list, private_key,
                       resolve, ssh_address, store_nodes)
from .models import Cloud, Machine, Run, RunMachine, Schedule, Script
from .runs import SHUTDOWN, WORKER_LOST, add_event, interrupt
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


class Execution:
    """One run this process executes; stop() makes its playbook stop and the run end `interrupted`."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.cancel = threading.Event()
        self.reason: str | None = None
        self.error: str | None = None

    @property
    def stopped(self) -> bool:
        return self.cancel.is_set()

    def stop(self, reason: str, error: str) -> None:
        if not self.cancel.is_set():
            self.reason, self.error = reason, error
            self.cancel.set()


class Executions:
    """The runs a process is executing, so that a SIGTERM can drain them: no new ones, wait, then stop the rest."""

    def __init__(self):
        self._lock = threading.Condition()
        self._active: dict[int, Execution] = {}  # by id(): a duplicate message may carry the same run id
        self.draining = threading.Event()

    def begin(self, run_id: str) -> Execution | None:
        """Register a run about to be claimed; None once draining (the run is left for another worker)."""
        with self._lock:
            if self.draining.is_set():
                return None
            execution = Execution(run_id)
            self._active[id(execution)] = execution
            return execution

    def end(self, execution: Execution) -> None:
        with self._lock:
            self._active.pop(id(execution), None)
            self._lock.notify_all()

    def active(self) -> list[Execution]:
        with self._lock:
            return list(self._active.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no run is executing, at most `timeout` seconds; True when none is."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True


def _read_plan(state, run_id: str, now: datetime):
    """Step one of prepare, one short transaction: the run's schedule, and the clouds to list (specs)."""
    with state.db.transaction() as session:
        run = session.get(Run, run_id)
        if run is None or run.status != "running":
            return None, "the run is no longer running"
        schedule = session.get(Schedule, run.schedule_id)
        if schedule is None:
            return None, "the schedule was deleted before its run started"
        add_event(session, run, "schedule_started", now, {"trigger": run.trigger})
        if schedule.script_id and session.get(Script, schedule.script_id) is None:
            return None, f"script '{schedule.script_id}' no longer exists"
        clouds = {c.id: c for c in session.scalars(select(Cloud).where(Cloud.org_id == run.org_id))}
        to_list = clouds_to_list(schedule, clouds, need_addresses=schedule.script_id is not None)
        return [cloud_spec(state.box, clouds[c]) for c in to_list], None


def prepare(state, run_id: str, now: datetime, execution: Execution | None = None):
    """Resolve targets and render the playbook; machines that cannot be reached are failed at once.

    Read -> call -> write: the schedule and its clouds are read in one short transaction, the providers
    whose machines the run needs are listed with no transaction open, and what they said, the targets
    and the per-machine rows are written in a second short transaction. Returns ((rendered or None, meta),
    None), or (None, error) when the run cannot go on."""
    from .playbooks import CloudTargets, RenderError, SshTarget, remote_time_limit, render_power, render_script

    box = state.box
    specs, error = _read_plan(state, run_id, now)
    if error is not None:
        return None, error
    limits = ProviderLimits.of(state.config)
    listings, listing_errors = [], {}
    for spec in specs:
        if execution is not None and execution.stopped:
            return None, execution.error
        try:
            listings.append((spec, fetch_for_run(state, spec, limits)))  # within the org's run listing slots
        except ProviderError as exc:
            listing_errors[spec.id] = exc.message
    if execution is not None and execution.stopped:
        return None, execution.error

    with state.db.transaction() as session:
        run = session.get(Run, run_id)
        if run.status != "running":  # interrupted meanwhile: nothing more is written for it
            return None, "the run is no longer running"
        schedule = session.get(Schedule, run.schedule_id)
        if schedule is None:
            return None, "the schedule was deleted before its run started"
        script = session.get(Script, schedule.script_id) if schedule.script_id else None
        if schedule.script_id and script is None:
            return None, f"script '{schedule.script_id}' no longer exists"
        if script is not None and script.exec_type == "ansible":
            refusal = state.sandbox.ansible_refusal()
            if refusal:
                return None, refusal
        for spec, listing in listings:
            store_nodes(session, spec, listing, now)
            if listing.truncated:
                add_event(session, run, "machines_truncated", now, {
                    "error": f"cloud '{spec.id}' listed {listing.listed} machines; only the first "
                             f"{len(listing.nodes)} by id were kept (CLOUDCRON_MAX_MACHINES_PER_CLOUD)",
                    "listed": listing.listed, "kept": len(listing.nodes)}, spec.id)
        targets = resolve(session, schedule, now, need_addresses=script is not None, listing_errors=listing_errors)
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
                ], call_timeout=limits.timeout, denied_networks=limits.denied_networks)
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
        if row is None or row.status != "running":  # ended already (the run was interrupted): keep that
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


def _heartbeat(state, execution: Execution, stop: threading.Event) -> None:
    """Keep the run's heartbeat fresh; when the run is no longer `running` (the sweep marked it interrupted
    after missed heartbeats), stop executing it rather than carry on."""
    run_id = execution.run_id
    # A failed beat is tried again sooner (1, 2, 4 ... s, never later than the usual beat), logged in full once.
    errors = Backoff(f"heartbeat of run {run_id}", log, first=1.0, cap=HEARTBEAT_EVERY)
    wait = HEARTBEAT_EVERY
    while not stop.wait(wait):
        try:
            with state.db.transaction() as session:
                beat = session.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                                       .values(heartbeat_at=utcnow()))
                status = "running" if beat.rowcount == 1 else session.scalar(select(Run.status).where(Run.id == run_id))
        except Exception:
            wait = errors.failed()
            continue
        errors.succeeded()
        wait = HEARTBEAT_EVERY
        if status != "running" and not stop.is_set():
            log.warning("run %s was marked %s while this worker ran it; stopping it", run_id, status)
            execution.stop(WORKER_LOST, f"the run was marked {status} while a worker still ran it")
            return


def finish(state, run_id: str, exec_status: str | None, error: str | None,
           execution: Execution | None = None) -> str:
    """Set the run's final status from its machines' results; a stopped execution ends `interrupted`."""
    now = utcnow()
    with state.db.transaction() as session:
        run = session.get(Run, run_id)
        if run.status != "running":
            # Ended elsewhere (the sweep interrupted it): only machines still marked running are closed.
            session.execute(update(RunMachine).where(RunMachine.run_id == run_id, RunMachine.status == "running")
                            .values(status="interrupted", error=run.error or "the run ended before this machine"))
            return run.status
        stopped = execution is not None and execution.stopped and exec_status not in ("finished", "timed_out")
        if exec_status == "cancelled" or stopped:
            reason = execution.reason if execution is not None and execution.reason else SHUTDOWN
            interrupt(session, run, now, reason, (execution.error if execution is not None else None) or error
                      or "the run was stopped before it finished")
            return run.status
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
        run.status = status
        run.finished_at = now
        run.error = error or (None if status == "succeeded" else _summary(rows))
        add_event(session, run, "schedule_finished", now, {"status": status, **({"error": run.error} if run.error else {})})
        metrics.run_ended(run)
        return run.status


def _summary(rows) -> str | None:
    bad = [r for r in rows if r.status != "succeeded"]
    if not rows:
        return "no machine to act on"
    return f"{len(bad)} of {len(rows)} machine(s) did not succeed" if bad else None


def execute_run(state, run_id: str) -> str | None:
    """Do one run from start to end; returns its final status, or None when another worker has it.

    While this process drains (SIGTERM) no run is started: the message goes back on the queue. Secrets
    decrypted for the run (credentials, SSH keys) never appear in what it stores: see scrub.run_secrets."""
    from .runner import execute

    executions = state.executions
    execution = executions.begin(run_id)
    if execution is None:
        state.enqueue([run_id])
        return None
    try:
        now = utcnow()
        if not claim(state, run_id, now):
            return None
        with run_secrets():
            return _execute_claimed(state, execution, now, execute)
    finally:
        executions.end(execution)


def _execute_claimed(state, execution: Execution, now: datetime, execute) -> str:
    run_id = execution.run_id
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(state, execution, stop), daemon=True,
                            name=f"heartbeat-{run_id[:8]}")
    beat.start()
    try:
        prepared, error = prepare(state, run_id, now, execution)
        if prepared is None:
            return finish(state, run_id, "error", error, execution)
        rendered, meta = prepared
        if rendered is None:
            return finish(state, run_id, None, None, execution)
        result = execute(
            rendered, base_dir=state.config.work_dir, timeout=meta["timeout"], output_cap=state.config.output_cap,
            on_result=lambda rid, key, res: _record(state, rid, key, res, meta["script"]), cancel=execution.cancel,
            sandbox=state.sandbox,
        )
        return finish(state, run_id, result.status, result.error, execution)
    except Exception as exc:
        log.exception("run %s failed", run_id)
        return finish(state, run_id, "error", f"internal error: {exc.__class__.__name__}: {exc}", execution)
    finally:
        stop.set()


def drain(state, grace: float, stop_taking=None, settle: float = 15.0) -> int:
    """Stop taking runs, let the ones in progress finish for `grace` seconds, then stop the rest.

    stop_taking() is called first (the queue consumer stops pulling messages). Runs still executing
    after the grace period are stopped (their playbooks end, their private directories go) and
    recorded `interrupted` with the reason `shutdown`; any not ended `settle` seconds later are
    marked so directly. Returns how many runs were interrupted."""
    executions = state.executions
    executions.draining.set()
    if stop_taking is not None:
        stop_taking()
    if executions.wait_idle(grace):
        return 0
    left = executions.active()
    error = f"shutdown: the worker was stopped and the run did not finish within {grace:g} s (CLOUDCRON_DRAIN_SECONDS)"
    log.warning("stopping %d run(s) still in progress after %g s", len(left), grace)
    for execution in left:
        execution.stop(SHUTDOWN, error)
    executions.wait_idle(settle)
    stuck = [e.run_id for e in executions.active()]
    if stuck:
        now = utcnow()
        with state.db.transaction() as session:
            for run in session.scalars(select(Run).where(Run.id.in_(stuck), Run.status == "running")):
                interrupt(session, run, now, SHUTDOWN, error)
    return len(left)
