"""The worker: takes a run id, claims it with every other ready run (a batch), and executes them together.

A batch is planned run by run (each run's machines resolved, its part of the playbook rendered alone, so a
part that cannot render fails only its own run), then the parts are rendered together: one playbook for
all power runs (a task per cloud and power state over the machines of every run), one for all
executable-script runs (a play whose hosts carry their run id, script and parameters), one per Ansible
script. Those playbooks run side by side; each run keeps its own results, events, status and timeout.
CLOUDCRON_BATCHING=off makes each batch one run."""
from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from .backoff import Backoff
from .crypto import new_id
from .listings import fetch_for_run
from .machines import (ProviderError, ProviderLimits, cloud_spec, clouds_to_list, private_key,
                       resolve, ssh_address, store_nodes)
from .models import Cloud, Machine, Run, RunMachine, Schedule, Script
from .runs import SHUTDOWN, WORKER_LOST, add_event, claim_ready, end_run, interrupt, record_result
from .scrub import everywhere, note_run, run_secrets
from .timemath import format_instant
from .validation import SSH_USER_RULE, is_ssh_user

log = logging.getLogger(__name__)

ACTION_STATE = {"start": "started", "stop": "stopped", "reboot": "restarted", "destroy": "absent"}
HEARTBEAT_EVERY = 10.0
# Runs (or results) written per transaction: on SQLite a writing transaction holds the service's one write
# lock, so a batch of hundreds of runs is written in short transactions that heartbeats, the dispatcher
# and the API can come between (one 500-run transaction took longer than the sweep's 30 s under load).
WRITE_CHUNK = 50
# Clouds a batch lists at once. Each listing waits on the network (at most the provider timeout), not the
# CPU; the org's run listing slots (CLOUDCRON_RUN_LISTINGS_PER_ORG) still bound how many one org's clouds
# use, so the threads mostly let other orgs' clouds be listed while one org's slow clouds wait.
BATCH_LISTING_THREADS = 8


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
    """One batch of runs this process executes; stop() makes its playbooks stop and its runs end `interrupted`."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.run_ids: list[str] = [run_id]  # every run of the batch, once claimed
        # Written on the runs it waits to retry (Run.retry_owner): a run another worker took over meanwhile
        # (web.dispatcher's sweep, then resume_retry) is left alone by this one.
        self.token = new_id()
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


@dataclass
class Part:
    """One run's share of a batch: what it does to which machines, before it is rendered with the others.

    kind is "power" (clouds: CloudTargets with their state), "executable" or "ansible" (targets:
    SshTargets, with the run's script text and parameters). timeout is the run's own, in seconds."""

    run_id: str
    kind: str
    timeout: float | None
    clouds: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    script_id: str | None = None
    script: str = field(default="", repr=False)
    params: str = ""
    retries: dict | None = None  # the schedule's retries setting (web.retries), None: none
    # A run taken over while it waited to retry (resume_retry): the retries already made, and when the next is due.
    done: int = 0
    due: datetime | None = None
    org_id: str | None = None  # the run's org: its retry attempts take a slot in its org's turn (FairSlots)

    @property
    def keys(self) -> set[str]:
        """Our keys of the machines this part acts on."""
        return {k for c in self.clouds for k in c.machines.values()} | {t.key for t in self.targets}

    def only(self, keys: set[str]) -> "Part | None":
        """This part narrowed to the machines whose keys are in `keys` (a retry); None when none is left."""
        clouds = [replace(c, machines={m: k for m, k in c.machines.items() if k in keys}) for c in self.clouds]
        clouds = [c for c in clouds if c.machines]
        targets = [t for t in self.targets if t.key in keys]
        if not clouds and not targets:
            return None
        return replace(self, clouds=clouds, targets=targets)

    @property
    def is_script(self) -> bool:
        return self.kind != "power"


class FairSlots:
    """At most `size` holders at once, and a freed slot goes to the waiting orgs in turn (round robin), each org's
    oldest waiter first: the bound on retry attempts' playbooks (CLOUDCRON_RETRY_SLOTS), which all orgs share.

    First come, first served, one org whose hundred runs retry at once would have every other org's attempts
    wait behind all hundred; in turn, another org's attempt waits for at most one attempt of each org ahead."""

    def __init__(self, size: int):
        self.size = size
        self._cond = threading.Condition()
        self._held = 0
        self._waiters: dict[str, deque] = {}  # org -> its waiters' tickets, oldest first
        self._turns: deque[str] = deque()  # the orgs that have waiters, the next to be served first
        self._granted: set = set()

    @contextmanager
    def take(self, org_id: str | None):
        """Hold a slot for the block, waiting for org_id's turn when none is free."""
        ticket = object()
        with self._cond:
            if self._held < self.size and not self._turns:
                self._held += 1
            else:
                org = org_id or ""
                if org not in self._waiters:
                    self._waiters[org] = deque()
                    self._turns.append(org)
                self._waiters[org].append(ticket)
                self._cond.wait_for(lambda: ticket in self._granted)
                self._granted.discard(ticket)
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._cond:
            if not self._turns:
                self._held -= 1
                return
            org = self._turns.popleft()  # the slot passes straight to the next org's oldest waiter
            queue = self._waiters[org]
            self._granted.add(queue.popleft())
            if queue:
                self._turns.append(org)
            else:
                del self._waiters[org]
            self._cond.notify_all()

    def waiting(self) -> int:
        """How many wait for a slot now."""
        with self._cond:
            return sum(len(q) for q in self._waiters.values())


class Listings:
    """The provider listings of one batch: each cloud is listed at most once and its machines stored once."""

    def __init__(self, limits: ProviderLimits, state):
        self.limits = limits
        self.state = state  # listings count against the org's run listing slots (CLOUDCRON_RUN_LISTINGS_PER_ORG)
        self.found: dict[str, object] = {}  # cloud id -> Listing
        self.errors: dict[str, str] = {}  # cloud id -> why it could not be listed
        self.stored: set[str] = set()

    def fetch_all(self, specs, execution: Execution | None = None) -> None:
        """List every cloud of `specs` not listed yet, side by side, each once; no transaction may be open.

        At most BATCH_LISTING_THREADS at once, the clouds taken one org after another in turn so that one
        org's many clouds do not queue ahead of every other org's. A listing that cannot get one of its org's
        run listing slots because this batch's own listings hold them waits for one until one provider
        timeout (limits.timeout) after the listings began; otherwise, it uses the machines as last listed
        (web.listings.fetch_for_run). So the whole takes at most about
        two provider timeouts however many clouds one org has. Returns early, leaving listings running, once
        `execution` is stopped. Raises what a listing raised other than ProviderError."""
        todo: dict[str, object] = {}
        for spec in specs:
            if spec.id not in self.found and spec.id not in self.errors:
                todo.setdefault(spec.id, spec)
        if not todo:
            return
        cancel = execution.cancel if execution is not None else None
        deadline = time.monotonic() + self.limits.timeout
        pool = ThreadPoolExecutor(max_workers=min(BATCH_LISTING_THREADS, len(todo)), thread_name_prefix="batch-listing")
        try:
            # Each listing runs in a copy of this thread's context: the batch's secrets to mask (web.scrub).
            pending = {pool.submit(contextvars.copy_context().run, self._fetch_one, spec, deadline, cancel)
                       for spec in _by_org_in_turn(list(todo.values()))}
            while pending:
                done, pending = wait_futures(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()
                if cancel is not None and cancel.is_set():
                    return
        finally:
            # Once stopped, listings under way end on their own within the provider timeout; none is waited for.
            pool.shutdown(wait=False, cancel_futures=True)

    def _fetch_one(self, spec, deadline: float, cancel) -> None:
        if cancel is not None and cancel.is_set():
            return
        try:
            self.found[spec.id] = fetch_for_run(self.state, spec, self.limits, self, deadline, cancel)
        except ProviderError as exc:
            self.errors[spec.id] = exc.message


def _by_org_in_turn(specs: list) -> list:
    """`specs` ordered one org's cloud after another's in turn (round robin), each org's in their own order."""
    queues: dict[str, deque] = {}
    for spec in specs:
        queues.setdefault(spec.org_id, deque()).append(spec)
    out = []
    while queues:
        for org_id in list(queues):
            out.append(queues[org_id].popleft())
            if not queues[org_id]:
                del queues[org_id]
    return out


def _read_plan(state, run_id: str, now: datetime):
    """Step one of planning, one short transaction: the run's schedule, and the clouds to list (specs)."""
    with state.db.transaction() as session:
        return _read_plan_in(session, state, run_id, now)


def _read_plan_in(session, state, run_id: str, now: datetime):
    run = session.get(Run, run_id)
    if run is None or run.status != "running":
        return None, "the run is no longer running"
    note_run(run.id, run.org_id)  # its machines' rows are masked of its org's secrets (web/scrub.py)
    schedule = session.get(Schedule, run.schedule_id)
    if schedule is None:
        return None, "the schedule was deleted before its run started"
    add_event(session, run, "schedule_started", now, {"trigger": run.trigger})
    if schedule.script_id and session.get(Script, schedule.script_id) is None:
        return None, f"script '{schedule.script_id}' no longer exists"
    clouds = {c.id: c for c in session.scalars(select(Cloud).where(Cloud.org_id == run.org_id))}
    to_list = clouds_to_list(schedule, clouds, need_addresses=schedule.script_id is not None)
    return [cloud_spec(state.box, clouds[c]) for c in to_list], None


def plan(state, run_id: str, now: datetime, execution: Execution | None = None,
         listings: Listings | None = None):
    """Resolve one run's targets and check that its part renders; machines that cannot be reached fail at once.

    Read -> call -> write: the schedule and its clouds are read in one short transaction, the providers
    whose machines the run needs are listed with no transaction open (once per batch: `listings`), and
    what they said, the targets and the per-machine rows are written in a second short transaction.
    Returns (Part or None when no machine is left to act on, None), or (None, error) when the run cannot
    go on (a script that cannot render fails this run only)."""
    specs, error = _read_plan(state, run_id, now)
    if error is not None:
        return None, error
    if listings is None:
        listings = Listings(ProviderLimits.of(state.config), state)
    listings.fetch_all(specs, execution)
    if execution is not None and execution.stopped:
        return None, execution.error

    with state.db.transaction() as session:
        return _write_plan_in(session, state, run_id, now, specs, listings)


def _write_plan_in(session, state, run_id: str, now: datetime, specs, listings: Listings):
    """Step two of planning, in the caller's transaction: store listings, resolve targets, make the Part."""
    from .playbooks import RenderError

    box = state.box
    limits = listings.limits
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
    for spec in specs:
        listing = listings.found.get(spec.id)
        if listing is None or spec.id in listings.stored:
            continue
        listings.stored.add(spec.id)
        store_nodes(session, spec, listing, now)
        if listing.truncated:
            add_event(session, run, "machines_truncated", now, {
                "error": f"cloud '{spec.id}' listed {listing.listed} machines; only the first "
                         f"{len(listing.nodes)} by id were kept (CLOUDCRON_MAX_MACHINES_PER_CLOUD)",
                "listed": listing.listed, "kept": len(listing.nodes)}, spec.id)
    listing_errors = {spec.id: listings.errors[spec.id] for spec in specs if spec.id in listings.errors}
    targets = resolve(session, schedule, now, need_addresses=script is not None, listing_errors=listing_errors)
    failed: list[tuple[str, str, str, str]] = []  # key, cloud_id, machine_id, error
    for cloud_id, machine_id, why in targets.missing:
        failed.append((f"{cloud_id}:{machine_id}", cloud_id, machine_id, why))
    part = None
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
            part = Part(run.id, "power", schedule.timeout, retries=schedule.retries, org_id=run.org_id,
                        clouds=_cloud_targets(box, run.id, clouds, groups, schedule.action))
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
            ssh.append(_ssh_target(run.id, m, address, key, schedule.timeout))
        if ssh:
            part = Part(run.id, script.exec_type, schedule.timeout, targets=ssh, script_id=script.id,
                        script=script.script, params=schedule.params or "", retries=schedule.retries,
                        org_id=run.org_id)
            try:
                render_parts([part], limits)  # alone: a part that cannot render fails its own run only
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
    return part, None


def _cloud_targets(box, run_id: str, clouds: dict, groups: dict[str, dict[str, str]], action: str) -> list:
    """A power part's CloudTargets: groups {cloud id: {provider machine id: our key}}, clouds {id: Cloud}."""
    from .playbooks import CloudTargets

    return [CloudTargets(run_id=run_id, provider=clouds[cid].provider,
                         credentials=(box.open(clouds[cid].credentials_enc, clouds[cid].org_id)
                                      if clouds[cid].credentials_enc else {}),
                         options=clouds[cid].options or {}, machines=machines, cloud_id=cid, state=ACTION_STATE[action])
            for cid, machines in groups.items()]


def _ssh_target(run_id: str, m, address: str, key: str, timeout):
    """A script part's SshTarget for the Machine row `m`, reached at `address` with the private key `key`."""
    from .playbooks import SshTarget, remote_time_limit

    return SshTarget(run_id=run_id, key=m.id, host=address, port=m.port or 22, user=m.ssh_user or "root",
                     private_key=key, time_limit=remote_time_limit(timeout) if timeout else None, org_id=m.org_id)


def plan_many(state, run_ids: list[str], now: datetime, execution: Execution | None,
              listings: Listings) -> dict[str, tuple]:
    """plan() for every run of a batch, WRITE_CHUNK runs per transaction, not two transactions per run.

    Returns {run_id: (Part or None, error or None)}. The runs are read, every cloud they need is listed
    once with no transaction open (side by side, bounded as a whole: Listings.fetch_all), then they are
    written. Should a chunk's write fail as a whole, each of
    its runs is written alone, so that one run that cannot be planned fails alone."""
    out: dict[str, tuple] = {}
    specs_of: dict[str, list] = {}
    for chunk in _chunks(run_ids):
        with state.db.transaction() as session:
            for rid in chunk:
                specs, error = _read_plan_in(session, state, rid, now)
                if error is not None:
                    out[rid] = (None, error)
                else:
                    specs_of[rid] = specs
    listings.fetch_all([spec for specs in specs_of.values() for spec in specs], execution)
    if execution is not None and execution.stopped:
        out.update({rid: (None, execution.error) for rid in specs_of})
        return out
    for chunk in _chunks(list(specs_of)):
        stored = set(listings.stored)
        try:
            with state.db.transaction() as session:
                written = {rid: _write_plan_in(session, state, rid, now, specs_of[rid], listings) for rid in chunk}
            out.update(written)
        except Exception:
            log.exception("planning %d runs of a batch together failed; planning each alone", len(chunk))
            listings.stored = stored  # what that transaction stored was rolled back with it
            for rid in chunk:
                try:
                    with state.db.transaction() as session:
                        out[rid] = _write_plan_in(session, state, rid, now, specs_of[rid], listings)
                except Exception as exc:
                    log.exception("run %s failed", rid)
                    out[rid] = (None, internal_error(exc))
    return out


def internal_error(exc: BaseException) -> str:
    """What a run records of an unexpected error: its class, and a database driver's first line.

    Never the whole message: a batch holds runs of several orgs, and a database error's text quotes the
    statement's parameters (another run's output, another org's), which would reach every run it is
    recorded for. The worker's log has the traceback."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first = str(exc.orig).strip().splitlines()[:1]
        detail = f"{exc.orig.__class__.__name__}: {first[0][:200]}" if first else exc.orig.__class__.__name__
        return f"internal error: {detail} (see the worker's log)"
    return f"internal error: {exc.__class__.__name__} (see the worker's log)"


def _chunks(items: list, size: int | None = None) -> list[list]:
    size = size or WRITE_CHUNK
    return [items[i:i + size] for i in range(0, len(items), size)]


def render_parts(parts: list[Part], limits: ProviderLimits, concurrency: int | None = None,
                 verify_seconds: float | None = None, output_cap: int | None = None) -> list[tuple]:
    """Render the parts of a batch together: [(Rendered, [Part, ...]), ...], one entry per playbook.

    All power parts share one playbook (a task per cloud and state), all executable-script parts one
    play (a machine several of them reach is one host with a launcher), and Ansible-script parts one
    playbook per script; concurrency: machines the power module acts on at once per cloud
    (CLOUDCRON_PROVIDER_CONCURRENCY); verify_seconds: CLOUDCRON_VERIFY_SECONDS; output_cap: bytes of
    each output stream kept per machine (CLOUDCRON_OUTPUT_CAP; None: the default). Raises RenderError
    (web.playbooks)."""
    from .playbooks import DEFAULT_OUTPUT_CAP, ScriptTarget, render_executables, render_power, render_script

    out: list[tuple] = []
    power = [p for p in parts if p.kind == "power"]
    if power:
        out.append((render_power(None, [c for p in power for c in p.clouds], call_timeout=limits.timeout,
                                 denied_networks=limits.denied_networks, concurrency=concurrency,
                                 verify_seconds=verify_seconds), power))
    executable = [p for p in parts if p.kind == "executable"]
    if executable:
        out.append((render_executables([ScriptTarget(t, p.script, p.params) for p in executable for t in p.targets],
                                       output_cap=output_cap or DEFAULT_OUTPUT_CAP), executable))
    by_script: dict[tuple, list[Part]] = {}
    for p in parts:
        if p.kind == "ansible":
            by_script.setdefault((p.script_id, p.script), []).append(p)
    for (_, text), group in by_script.items():
        out.append((render_script("ansible", text, "", [t for p in group for t in p.targets]), group))
    return out


def _render(state, parts: list[Part], limits: ProviderLimits) -> list[tuple]:
    """render_parts with the server's settings."""
    config = state.config
    return render_parts(parts, limits, config.provider_concurrency, config.verify_seconds, config.output_cap)


def prepare(state, run_id: str, now: datetime, execution: Execution | None = None):
    """One run planned and rendered alone: ((Rendered or None, meta), None) or (None, error); see plan()."""
    from .playbooks import RenderError

    part, error = plan(state, run_id, now, execution)
    if error is not None:
        return None, error
    meta = {"timeout": part.timeout if part else None, "script": bool(part and part.is_script)}
    if part is None:
        return (None, meta), None
    try:
        [(rendered, _)] = _render(state, [part], ProviderLimits.of(state.config))
    except RenderError as exc:
        return None, str(exc)
    return (rendered, meta), None


def record(state, results, script_runs) -> None:
    """Write a group of machine results in one transaction (4 x WRITE_CHUNK at most each): [(run_id, key,
    MachineResult), ...].

    script_runs: the run ids whose results are script results (the others are power actions). A row no
    longer `running` (its run was interrupted) keeps what it has."""
    if not results:
        return
    if len(results) > 4 * WRITE_CHUNK:  # a cloud task's results for hundreds of machines
        for chunk in _chunks(results, 4 * WRITE_CHUNK):
            record(state, chunk, script_runs)
        return
    now = utcnow()
    run_ids = {rid for rid, _, _ in results}
    with state.db.transaction() as session:
        rows = {(r.run_id, r.machine_key): r for r in session.scalars(
            select(RunMachine).where(RunMachine.run_id.in_(run_ids), RunMachine.status == "running"))}
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
        power_keys = {key for rid, key, res in results if rid not in script_runs and getattr(res, "state", None)}
        machines = {m.id: m for m in session.scalars(select(Machine).where(Machine.id.in_(power_keys)))} \
            if power_keys else {}
        for run_id, key, result in results:
            row = rows.pop((run_id, key), None)
            if row is not None:
                record_result(session, runs[run_id], row, result, run_id in script_runs, now, machines.get(key))


def _record(state, run_id: str, key: str, result, is_script: bool) -> None:
    """One machine's result (see record())."""
    record(state, [(run_id, key, result)], {run_id} if is_script else set())


def _heartbeat(state, execution: Execution, stop: threading.Event) -> None:
    """Keep the heartbeat of the batch's runs fresh; when one is no longer `running` (the sweep marked it
    interrupted after missed heartbeats), stop executing the batch rather than carry on."""
    label = execution.run_id
    # A failed beat is tried again sooner (1, 2, 4 ... s, never later than the usual beat), logged in full once.
    errors = Backoff(f"heartbeat of run {label}", log, first=1.0, cap=HEARTBEAT_EVERY)
    wait = HEARTBEAT_EVERY
    while not stop.wait(wait):
        run_ids = list(execution.run_ids)
        try:
            with state.db.transaction() as session:
                beat = session.execute(update(Run).where(Run.id.in_(run_ids), Run.status == "running")
                                       .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))
                lost = None
                if beat.rowcount != len(run_ids):
                    lost = session.execute(select(Run.id, Run.status).where(
                        Run.id.in_(run_ids), Run.status != "running").limit(1)).first()
        except Exception:
            wait = errors.failed()
            continue
        errors.succeeded()
        wait = HEARTBEAT_EVERY
        # A run this execution has just ended itself (a retried run, web.worker._retry_runs) left run_ids first.
        if lost is not None and lost[0] in execution.run_ids and not stop.is_set():
            log.warning("run %s was marked %s while this worker ran it; stopping its batch", lost[0], lost[1])
            execution.stop(WORKER_LOST, f"the run was marked {lost[1]} while a worker still ran it")
            return


def finish(state, run_id: str, exec_status: str | None, error: str | None,
           execution: Execution | None = None) -> str:
    """Set one run's final status from its machines' results; see finish_many()."""
    return finish_many(state, {run_id: (exec_status, error)}, execution)[run_id]


def finish_many(state, outcomes: dict[str, tuple[str | None, str | None]],
                execution: Execution | None = None) -> dict[str, str]:
    """Set each run's final status from its machines' results: {run_id: status}.

    outcomes: {run_id: (how its playbook ended: "finished" | "timed_out" | "cancelled" | "error" | None,
    error)}; 4 x WRITE_CHUNK runs per transaction. A stopped execution ends its runs `interrupted`; a run
    ended elsewhere keeps its status."""
    now = utcnow()
    out: dict[str, str] = {}
    for chunk in _chunks(list(outcomes), 4 * WRITE_CHUNK):
        with state.db.transaction() as session:
            runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(chunk)))}
            all_rows: dict[str, list] = {}
            for row in session.scalars(select(RunMachine).where(RunMachine.run_id.in_(chunk))):
                all_rows.setdefault(row.run_id, []).append(row)
            for run_id in chunk:
                exec_status, error = outcomes[run_id]
                out[run_id] = _finish_one(session, runs[run_id], all_rows.get(run_id, []), exec_status, error,
                                          execution, now)
    return out


def _finish_one(session, run, rows, exec_status, error, execution, now) -> str:
    if execution is not None and run.retry_owner not in (None, execution.token):
        return run.status  # another worker took it over while this one waited to retry it: it ends it
    stopped = (execution.reason or SHUTDOWN, execution.error) if execution is not None and execution.stopped else None
    status = end_run(session, run, rows, exec_status, error, now, stopped)
    if status not in ("queued", "running"):  # queued: the sweep handed it on; the next worker needs retry_at
        run.retry_at = run.retry_owner = None
    return status


def claim_batch(state, run_id: str, now: datetime) -> tuple[list[str], list[str]]:
    """Claim `run_id` and (with batching) every other ready run up to the configured bounds: (claimed, missed).

    See web.runs.claim_ready; runs that waited past their grace come back in `missed`, already recorded."""
    config = state.config
    with state.db.transaction() as session:
        return claim_ready(session, run_id, now, batching=config.batching, max_runs=config.batch_max_runs,
                           max_machines=config.batch_max_machines, manual_grace=config.manual_grace)


def execute_run(state, run_id: str) -> str | None:
    """Do the run `run_id` and every other run ready with it (one batch); returns run_id's final status,
    or None when another worker has it.

    While this process drains (SIGTERM) no run is started: the message goes back on the queue. Secrets
    decrypted for the runs (credentials, SSH keys) never appear in what they store: see scrub.run_secrets."""
    from .runner import execute

    executions = state.executions
    execution = executions.begin(run_id)
    if execution is None:
        state.enqueue([run_id])
        return None
    try:
        now = utcnow()
        claimed, missed = claim_batch(state, run_id, now)
        if run_id in missed:
            status = "missed"
        elif not claimed:
            return resume_retry(state, execution, run_id, execute)
        execution.run_ids = list(claimed)
        if not claimed:
            return status
        with run_secrets():
            statuses = _execute_batch(state, execution, now, execute)
        return "missed" if run_id in missed else statuses.get(run_id)
    finally:
        executions.end(execution)


def resume_retry(state, execution: Execution, run_id: str, execute) -> str | None:
    """Take over a run whose worker died while it waited to retry (the sweep put it back to `queued` with its
    retry_at kept) and go on with its retries from there: "running" while it waits again, None when the message
    was not for such a run (a duplicate, or one another worker took).

    Claimed with a conditional UPDATE (queued -> running, retry_owner: this execution's token, so the worker
    that waited first, should it still be alive, leaves it alone); its part is rebuilt from what the run
    recorded (its machines, their clouds or SSH addresses) and the schedule as it is now (action, script,
    retries), with no provider listing. The wait goes on under an execution of its own, as _detach_retries."""
    with state.db.session() as read:  # most messages that claim nothing are a batch's others: a read, no write lock
        if read.scalar(select(Run.id).where(Run.id == run_id, Run.status == "queued",
                                            Run.retry_at.is_not(None))) is None:
            return None
    now = utcnow()
    with run_secrets():  # the credentials and keys decrypted for the part are kept out of what the run stores
        with state.db.transaction() as session:
            won = session.execute(update(Run).where(Run.id == run_id, Run.status == "queued",
                                                    Run.retry_at.is_not(None))
                                  .values(status="running", heartbeat_at=now, retry_owner=execution.token)).rowcount
            if won != 1:
                return None
            run = session.get(Run, run_id)
            note_run(run.id, run.org_id)
            late = _too_late(session, state, run, now)
            part, error = (None, None) if late else _resumed_part(session, state, run)
            add_event(session, run, "retry_resumed", now, {"retry_at": format_instant(run.retry_at)})
        if part is None:  # nothing left to try (the schedule's retries were removed, no machine to retry ...)
            return finish(state, run_id, "error" if error else "finished", error or late, execution)
        execution.run_ids = [run_id]
        limits = ProviderLimits.of(state.config)
        outcomes = {run_id: ("finished", None)}
        if not _detach_retries(state, execution, [part], outcomes, execute, limits):
            return _retry_runs(state, execution, [part], outcomes, execute, limits).get(run_id)
    return "running"


def _too_late(session, state, run: Run, now: datetime) -> str | None:
    """Why a taken-over run's next attempt is not made, or None: it is due longer ago than the grace a run waiting
    in the queue has (its schedule's misfire_grace for a scheduled run, CLOUDCRON_MANUAL_GRACE for another), the
    rule of web.runs.claim_ready, as cloudcron never acts late (every worker down for hours: a nightly stop is
    not retried at noon)."""
    schedule = session.get(Schedule, run.schedule_id)
    if run.trigger == "scheduled":
        grace = float(schedule.misfire_grace if schedule is not None and schedule.misfire_grace is not None else 300)
        setting = "the schedule's misfire_grace"
    else:
        grace, setting = float(state.config.manual_grace), "CLOUDCRON_MANUAL_GRACE"
    late = (now - run.retry_at).total_seconds()
    if late <= grace:
        return None
    return (f"the retry due at {format_instant(run.retry_at)} was taken over {late:.0f} s late, longer than "
            f"{setting} ({grace:g} s): it was not made")


def _resumed_part(session, state, run: Run):
    """(Part of the machines a taken-over run still has to retry, or None; error or None), in the caller's
    transaction: see resume_retry."""
    schedule = session.get(Schedule, run.schedule_id)
    if schedule is None:
        return None, "the schedule was deleted while the run waited to retry"
    if not schedule.retries:
        return None, None
    keys = _retryable_in(session, run.id)
    rows = session.scalars(select(RunMachine).where(RunMachine.run_id == run.id,
                                                    RunMachine.machine_key.in_(keys))).all() if keys else []
    done = max((len(r.attempts or []) for r in rows), default=0)  # retries already made
    if not rows or done >= schedule.retries["max"]:
        return None, None
    script = session.get(Script, schedule.script_id) if schedule.script_id else None
    if schedule.script_id and script is None:
        return None, f"script '{schedule.script_id}' no longer exists"
    common = {"retries": schedule.retries, "done": done, "due": run.retry_at, "org_id": run.org_id}
    if script is None:
        clouds = {c.id: c for c in session.scalars(select(Cloud).where(Cloud.org_id == run.org_id))}
        groups: dict[str, dict[str, str]] = {}
        for r in rows:
            if r.cloud_id in clouds and clouds[r.cloud_id].provider != "other":
                groups.setdefault(r.cloud_id, {})[r.machine_id] = r.machine_key
        if not groups:
            return None, None
        return Part(run.id, "power", schedule.timeout, clouds=_cloud_targets(state.box, run.id, clouds, groups,
                                                                              schedule.action), **common), None
    if script.exec_type == "ansible":
        refusal = state.sandbox.ansible_refusal()
        if refusal:
            return None, refusal
    machines = session.scalars(select(Machine).where(Machine.id.in_([r.machine_key for r in rows]))).all()
    targets = []
    for m in machines:
        address, key = ssh_address(m), private_key(session, state.box, m)
        if address and key and is_ssh_user(m.ssh_user or "root"):
            targets.append(_ssh_target(run.id, m, address, key, schedule.timeout))
    if not targets:
        return None, None
    return Part(run.id, script.exec_type, schedule.timeout, targets=targets, script_id=script.id,
                script=script.script, params=schedule.params or "", **common), None


def _execute_batch(state, execution: Execution, now: datetime, execute) -> dict[str, str]:
    from .playbooks import RenderError

    run_ids = list(execution.run_ids)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(state, execution, stop), daemon=True,
                            name=f"heartbeat-{execution.run_id[:8]}")
    beat.start()
    outcomes: dict[str, tuple[str | None, str | None]] = {}
    try:
        limits = ProviderLimits.of(state.config)
        listings = Listings(limits, state)
        parts: list[Part] = []
        planned = plan_many(state, run_ids, now, execution, listings)
        for rid in run_ids:
            part, error = planned[rid]
            if error is not None:
                outcomes[rid] = ("error", error)
            elif part is None:
                outcomes[rid] = (None, None)  # every machine failed already: nothing to execute
            else:
                parts.append(part)
        if parts and not execution.stopped:
            try:
                playbooks = _render(state, parts, limits)
            except RenderError as exc:  # each part rendered alone; together they must too
                playbooks = []
                log.warning("the batch of run %s could not be rendered: %s", execution.run_id, exc)
                for p in parts:
                    # The reason may name another run's machine, of another org: it stays in the log.
                    outcomes[p.run_id] = ("error", "the batch could not be rendered together; see the worker's log")
            # Each thread runs in a copy of this context: the batch's secrets (scrub.run_secrets) are
            # masked in what its playbook's results store, as in this thread.
            threads = [threading.Thread(target=contextvars.copy_context().run, daemon=True, name=f"playbook-{i}",
                                        args=(_execute_playbook, state, execution, rendered, group, execute, outcomes))
                       for i, (rendered, group) in enumerate(playbooks)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for p in parts:
            outcomes.setdefault(p.run_id, ("cancelled", execution.error))
        retrying = [p for p in parts if p.retries and outcomes[p.run_id][0] == "finished" and not execution.stopped]
        # The heartbeat ends first: runs ended by the first chunks must not read as taken away from the rest.
        stop.set()
        if not retrying:
            return finish_many(state, outcomes, execution)
        beat.join()
        retry_ids = {p.run_id for p in retrying}
        execution.run_ids = [rid for rid in run_ids if rid in retry_ids]  # the heartbeat keeps only these alive
        statuses = finish_many(state, {rid: o for rid, o in outcomes.items() if rid not in retry_ids}, execution)
        if retrying and not _detach_retries(state, execution, retrying, outcomes, execute, limits):
            statuses.update(_retry_runs(state, execution, retrying, outcomes, execute, limits))
        return statuses
    except Exception as exc:
        log.exception("batch of run %s failed", execution.run_id)
        error = internal_error(exc)
        stop.set()
        return finish_many(state, {rid: ("error", error) for rid in run_ids}, execution)
    finally:
        stop.set()


# _retry_run's outcome for a run another worker took over while this one waited: nothing more is written for it.
TAKEN = "taken"


def _detach_retries(state, execution: Execution, parts: list, outcomes: dict, execute, limits) -> bool:
    """Hand the runs that wait to retry to a thread of their own, under an Execution of their own; True when done.

    The queue's worker slot that ran their batch is free again at once: a run waiting delay * backoff^n
    seconds before its next attempt must not keep other runs (another org's included) from starting. Drain
    and heartbeats see the new Execution as any other. False while this process drains (the caller then
    retries in place, where the drain ends the waits and the runs end interrupted)."""
    detached = state.executions.begin(parts[0].run_id)
    if detached is None:
        return False
    detached.run_ids = [p.run_id for p in parts]
    detached.token = execution.token  # a run taken over by resume_retry is owned under the claim's token
    moved = set(detached.run_ids)
    execution.run_ids = [rid for rid in execution.run_ids if rid not in moved]

    def body() -> None:
        try:
            _retry_runs(state, detached, parts, outcomes, execute, limits)
        except Exception:  # noqa: BLE001 - each run's own errors end that run; this is the thread's last guard
            log.exception("retrying runs of batch %s failed", execution.run_id)
        finally:
            state.executions.end(detached)

    # The copied context keeps the batch's redactor (scrub.run_secrets): retried output is redacted too.
    threading.Thread(target=contextvars.copy_context().run, args=(body,), daemon=True,
                     name=f"retries-{parts[0].run_id[:8]}").start()
    return True


def _retry_runs(state, execution: Execution, parts: list[Part], outcomes: dict, execute,
                limits: ProviderLimits) -> dict[str, str]:
    """Retry the transient failures of each run in `parts` (the rest of their batch has ended), then end them.

    Each run has a thread of its own that waits, tries again only its machines that failed for a transient
    reason (web.retries.is_transient) and repeats up to its schedule's retries.max: a run never waits for
    another's delays. The runs keep their heartbeat meanwhile; a stop (drain, lost heartbeat) ends the waits."""
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(state, execution, stop), daemon=True,
                            name=f"heartbeat-retry-{execution.run_id[:8]}")
    beat.start()
    statuses: dict[str, str] = {}
    ids_lock = threading.Lock()

    def one(part: Part) -> None:
        try:
            outcome = _retry_run(state, execution, part, outcomes[part.run_id], execute, limits)
        except Exception as exc:
            log.exception("retrying run %s failed", part.run_id)
            outcome = ("error", internal_error(exc))
        with ids_lock:  # out of the heartbeat's runs before it ends, so it does not read as taken away
            execution.run_ids = [rid for rid in execution.run_ids if rid != part.run_id]
        if outcome[0] == TAKEN:  # another worker has the run now: this one writes nothing more for it
            log.info("run %s waiting to retry is left to another worker", part.run_id)
            return
        statuses[part.run_id] = finish(state, part.run_id, *outcome, execution=execution)

    try:
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(one, p), daemon=True,
                                    name=f"retry-{p.run_id[:8]}") for p in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
    return statuses


def _retry_run(state, execution: Execution, part: Part, outcome: tuple, execute, limits: ProviderLimits) -> tuple:
    """Attempts 2, 3 ... of one run: (how its last playbook ended, error) for end_run.

    Before retry n the run waits delay * backoff^(n-1) seconds (web.retries.delay_before) with no transaction
    open; when it is due is on the run (Run.retry_at, with this execution's token in Run.retry_owner), so a
    worker that dies meanwhile leaves a run the sweep hands to another (resume_retry: part.done retries made,
    the next due at part.due). Each attempt's rows keep the earlier attempts' outcomes (RunMachine.attempts).
    A stop (drain, lost heartbeat) with an attempt still to make ends the wait and gives the run back to the
    queue for another worker (_hand_on): (TAKEN, None), as when another worker took it over meanwhile; only a
    run no longer this execution's to give ends interrupted: ("cancelled", why)."""
    from .playbooks import RenderError
    from .retries import delay_before

    n, due = part.done, part.due
    while n < part.retries["max"]:
        if due is not None:  # taken over: the failed attempt was recorded, and notified, by the worker that died
            wait = max(0.0, (due - utcnow()).total_seconds())
            keys, due = _retryable(state, part.run_id) & part.keys, None
        else:
            wait = delay_before(part.retries, n + 1)
            keys = _attempt_failed(state, part, n + 1, wait, execution.token)
        narrowed = part.only(keys) if keys else None
        if narrowed is None:
            break
        n += 1
        if execution.cancel.wait(wait):  # stopped (a drain) with attempts still to make: another worker goes on
            if _hand_on(state, part.run_id, execution):
                return TAKEN, None
            return "cancelled", execution.error
        began = _begin_attempt(state, part.run_id, keys, n + 1, wait, execution.token)
        if began is None:
            return TAKEN, None
        if not began:
            break
        try:
            [(rendered, group)] = _render(state, [narrowed], limits)
        except RenderError as exc:  # it rendered for attempt 1; a subset renders too, but never crash
            return "error", f"attempt {n + 1} could not be rendered: {exc}"
        out: dict = {}
        # Retries happen outside the queue's worker slots (their waits must not hold one), so their playbooks
        # have a bound of their own: CLOUDCRON_RETRY_SLOTS at once per process, all orgs together, given to the
        # waiting orgs in turn (FairSlots).
        with state.retry_slots.take(part.org_id):
            _execute_playbook(state, execution, rendered, group, execute, out)
        outcome = out.get(part.run_id, ("cancelled", execution.error))
        if outcome[0] != "finished":
            break
    return outcome


def _retryable(state, run_id: str) -> set[str]:
    """The keys of a run's machines whose last attempt failed for a transient reason."""
    with state.db.transaction() as session:
        return _retryable_in(session, run_id)


def _retryable_in(session, run_id: str) -> set[str]:
    from .retries import is_transient

    rows = session.scalars(select(RunMachine).where(RunMachine.run_id == run_id,
                                                    RunMachine.status.in_(("failed", "unreachable"))))
    return {r.machine_key for r in rows if is_transient(r.status, r.error)}


def _attempt_failed(state, part: Part, attempt: int, wait: float, owner: str | None = None) -> set[str]:
    """After attempt `attempt` of a run: the keys of its machines to try again (failed for a transient reason, and
    not at planning). When there are some, in the same short transaction: the run records that its next attempt
    is due `wait` seconds from now and that `owner` (an Execution's token) waits for it, and the failed attempt's
    notifications are queued (web.notify.on_retry, for schedules with notify.after_retries false)."""
    from .notify import on_retry

    now = utcnow()
    with state.db.transaction() as session:
        keys = _retryable_in(session, part.run_id) & part.keys  # machines failed at planning are not retried
        run = session.get(Run, part.run_id) if keys else None
        if run is not None and run.status == "running":
            run.retry_at, run.retry_owner = now + timedelta(seconds=wait), owner
            on_retry(session, run, attempt, part.retries["max"] + 1, run.retry_at, keys, now)
        return keys


def _hand_on(state, run_id: str, execution: Execution) -> bool:
    """Give a run this execution waits to retry back to the queue (web.runs.hand_on) when it is stopped; True when
    it did. False when the run is not, or no longer, this execution's to give (the caller ends it interrupted, or
    leaves it to the worker that has it). The message is sent after the commit; should that fail, the sweep
    re-enqueues the queued run (web.dispatcher, REQUEUE_AFTER)."""
    from .runs import hand_on

    with state.db.transaction() as session:
        run = session.get(Run, run_id, with_for_update=True)  # as in _begin_attempt: the owner as it is now
        if run is None or run.status != "running" or run.retry_at is None or run.retry_owner != execution.token:
            return False
        hand_on(session, run, utcnow(), execution.reason or SHUTDOWN)
    try:
        state.enqueue([run_id])
    except Exception:  # noqa: BLE001 - the run is queued: the sweep sends it again
        log.exception("enqueueing run %s, handed on while it waited to retry, failed", run_id)
    return True


def _begin_attempt(state, run_id: str, keys: set[str], attempt: int, waited: float,
                   owner: str | None = None) -> bool | None:
    """Put the machines `keys` of a run back to running for attempt `attempt`, keeping what the last one came to.

    False when the run is no longer running (interrupted meanwhile): nothing is tried again. None when `owner`
    no longer waits for it (the sweep handed it to another worker): that one makes the attempt. The run is no
    longer waiting once the attempt begins (retry_at cleared): should this worker die during it, it is
    interrupted like any run in progress."""
    now = utcnow()
    with state.db.transaction() as session:
        # Locked (PostgreSQL): the owner checked is the owner when retry_at is cleared, not one the sweep is
        # replacing at this moment (web.dispatcher.sweep locks the run too).
        run = session.get(Run, run_id, with_for_update=True)
        if run is not None and owner is not None and run.retry_owner != owner:
            return None
        if run is None or run.status != "running":
            return False
        run.retry_at = None
        rows = session.scalars(select(RunMachine).where(RunMachine.run_id == run_id,
                                                        RunMachine.machine_key.in_(keys))).all()
        for row in rows:
            row.attempts = [*(row.attempts or []), {"attempt": attempt - 1, "status": row.status,
                                                    "error": row.error, "duration": row.duration}]
            add_event(session, run, "machine_retried", now,
                      {"attempt": attempt, "waited": round(waited, 3), "previous_error": row.error},
                      row.cloud_id, row.machine_id)
            row.status, row.error, row.rc, row.stdout, row.stderr, row.duration = "running", None, None, None, None, None
        return True


def _execute_playbook(state, execution: Execution, rendered, group: list[Part], execute, outcomes: dict) -> None:
    """Execute one playbook of a batch and put each of its runs' outcome in `outcomes` (run id -> (status, error))."""
    script_runs = {p.run_id for p in group if p.is_script}
    timeouts = {p.run_id: p.timeout for p in group if p.timeout}
    single = len(group) == 1
    try:
        result = execute(
            rendered, base_dir=state.config.work_dir,
            # One run: its timeout is the playbook's. Several: each run has its own (run_timeouts).
            timeout=group[0].timeout if single else None, output_cap=state.config.output_cap,
            on_results=lambda results: record(state, results, script_runs), cancel=execution.cancel,
            sandbox=state.sandbox, run_timeouts=None if single else timeouts,
        )
    except Exception as exc:
        log.exception("a playbook of the batch of run %s failed", execution.run_id)
        for p in group:
            outcomes[p.run_id] = ("error", internal_error(exc))
        return
    for p in group:
        if p.run_id in result.run_timeouts and result.status in ("finished", "timed_out"):
            outcomes[p.run_id] = ("timed_out", result.run_timeouts[p.run_id])
        else:
            outcomes[p.run_id] = (result.status, result.error)


def drain(state, grace: float, stop_taking=None, settle: float = 15.0) -> int:
    """Stop taking runs, let the ones in progress finish for `grace` seconds, then stop the rest.

    stop_taking() is called first (the queue consumer stops pulling messages). Runs still executing
    after the grace period are stopped (their playbooks end, their private directories go) and
    recorded `interrupted` with the reason `shutdown`, except runs waiting to retry, which go back on
    the queue (_hand_on); any not ended `settle` seconds later are marked so directly. Returns how many
    executions were stopped."""
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
    stuck = [rid for e in executions.active() for rid in e.run_ids]  # every run of each batch
    if stuck:
        now = utcnow()
        with state.db.transaction() as session:
            for run in session.scalars(select(Run).where(Run.id.in_(stuck), Run.status == "running")):
                interrupt(session, run, now, SHUTDOWN, error)
    return len(left)
