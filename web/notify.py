"""Notifications: who hears that a run ended, the outbox row written with the run's final status, and the sender.

The lifecycle, in three steps that never mix database and network:

1. on_event(): when a run reaches a final status (its ending event is added), one Delivery row per
   channel to notify is written in that same transaction, holding the whole event. Nothing is sent:
   a run is never delayed or failed by a notification.
2. Sender.tick(), in worker processes (`serve`'s embedded worker, `python -m web worker`): claims one
   due delivery with a conditional UPDATE (short transaction), decrypts its channel, sends with no
   transaction open, then records the attempt (another short transaction).
3. A failed attempt is tried again after CLOUDCRON_NOTIFY_BACKOFF seconds, doubling up to
   BACKOFF_CAP, until CLOUDCRON_NOTIFY_RETRY_SECONDS after the run ended; an HTTP 4xx other than 408
   and 429, or a channel that was deleted, is permanent and not retried. Every attempt is kept.

Who is notified (a schedule's `notify`, validated by parse_notify()): `on` lists the final statuses
(default DEFAULT_ON), `channels` the org's channel ids or names (stored as ids; omitted: the org's
default channels, `[]`: none). A schedule without `notify` tells the org's default channels about the
DEFAULT_ON statuses. `after_retries` (default true) is about runs with retries (web.retries): true, a run is
notified once, at its final status; false, each failed attempt that will be retried is notified too (on_retry,
written by the worker before it waits), when the status the run would have had were it to end then is in `on`.
"""
from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import case, literal, select, update
from sqlalchemy.orm import Session

from .backoff import Backoff
from .config import DEFAULT_NOTIFY_DENIED_NETWORKS
from .crypto import new_id
from .errors import BadRequest
from .logs import bound
from .models import Channel, Delivery, Run, RunMachine, Schedule
from .timemath import format_instant

log = logging.getLogger(__name__)

STATUSES = ("succeeded", "failed", "partial", "skipped", "missed", "interrupted", "timed_out")
# What a schedule without its own `on` is notified about: the outcomes someone has to act on.
DEFAULT_ON = ("failed", "partial", "missed", "timed_out", "interrupted")
# The event types that mark a run's final status (web.runs adds exactly one of them per run).
ENDING_EVENTS = frozenset({"schedule_finished"} | {"schedule_" + s for s in STATUSES})
BACKOFF_CAP = 600.0  # the longest wait between two attempts (s)
POLL = 1.0  # how often an idle sender looks for due deliveries (s)
FAIR_ORGS = 64  # how many orgs a sender remembers having served, to serve the others first (Sender._claim)
SIGNATURE_HEADER = "X-Cloudcron-Signature"
ERROR_CHARS = 300
_SEVERITY = {"succeeded": "success", "failed": "failure", "timed_out": "failure", "interrupted": "failure"}


# ---------------------------------------------------------------- the schedule's setting

def parse_notify(session: Session, org_id: str, value) -> dict | None:
    """A schedule's `notify` as stored: {"on": [...], "channels": [ids] (absent: org defaults), "after_retries"}.

    None clears it (the org's defaults apply). BadRequest naming the field for anything else that is wrong:
    an unknown key or status, a channel that is not the org's."""
    from .channels import resolve_names

    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest("notify: must be an object such as {\"on\": [\"failed\"], \"channels\": [\"ops-slack\"]}")
    unknown = sorted(set(value) - {"on", "channels", "after_retries"})
    if unknown:
        raise BadRequest(f"notify.{unknown[0]}: is not a known field (on, channels, after_retries)")
    out: dict = {}
    on = value.get("on", list(DEFAULT_ON))
    if not isinstance(on, list):
        raise BadRequest("notify.on: must be a list of run statuses")
    for i, status in enumerate(on):
        if status not in STATUSES:
            raise BadRequest(f"notify.on.{i}: must be one of {', '.join(STATUSES)}")
    out["on"] = list(dict.fromkeys(on))
    if "channels" in value and value["channels"] is not None:
        if not isinstance(value["channels"], list):
            raise BadRequest("notify.channels: must be a list of channel ids or names")
        if len(value["channels"]) > 50:
            raise BadRequest("notify.channels: at most 50 channels")
        out["channels"] = resolve_names(session, org_id, value["channels"])
    after = value.get("after_retries", True)
    if not isinstance(after, bool):
        raise BadRequest("notify.after_retries: must be true or false")
    out["after_retries"] = after
    return out


# ---------------------------------------------------------------- step 1: the outbox row

def on_event(session: Session, run: Run, type_: str, now: datetime) -> None:
    """Called for every run event (web.runs.add_event); for the one that ends a run, queue its notifications.

    Runs in the transaction that finishes the run: reads the schedule's setting and the channels, writes
    one Delivery per channel to notify. No network I/O."""
    if type_ not in ENDING_EVENTS or run.status not in STATUSES:
        return
    found = _recipients(session, run, run.status)
    if found is None:
        return
    schedule_name, channels = found
    _queue(session, run, "run", run_event(session, run, schedule_name, now), channels, now)


def on_retry(session: Session, run: Run, attempt: int, attempts: int, retry_at: datetime, retrying: set[str],
             now: datetime) -> int:
    """Queue the notifications of a failed attempt that will be retried; returns how many deliveries were written.

    Called by the worker (web.worker._attempt_failed) in a short transaction of its own, after attempt `attempt`
    (1-based) of at most `attempts` (retries.max + 1) of a running run, before it waits until `retry_at` (UTC) to
    try the machines whose keys are in `retrying` again. Only schedules whose notify.after_retries is false hear
    of it, and only when the status the run would end with now (failed, or partial when a machine succeeded) is
    in their `on`. Deliveries are of kind "retry" and carry a "run.retrying" event (retrying_event). No network
    I/O."""
    rows = session.scalars(select(RunMachine).where(RunMachine.run_id == run.id).order_by(RunMachine.id)).all()
    so_far = "partial" if any(r.status == "succeeded" for r in rows) else "failed"
    found = _recipients(session, run, so_far, retry=True)
    if found is None:
        return 0
    schedule_name, channels = found
    event = retrying_event(run, schedule_name, rows, so_far, attempt, attempts, retry_at, retrying, now)
    _queue(session, run, "retry", event, channels, now)
    return len(channels)


def _recipients(session: Session, run: Run, status: str, retry: bool = False):
    """(schedule name, channels [(id, name)]) to tell that `run` came to `status`; None when nobody is.

    retry: the status is a failed attempt's (on_retry), heard only by schedules with after_retries false."""
    row = session.execute(select(Schedule.name, Schedule.notify).where(Schedule.id == run.schedule_id)).first()
    if row is None:  # the schedule was deleted: nobody asked to hear about it any more
        return None
    setting = row.notify or {}
    if retry and setting.get("after_retries", True):
        return None
    if status not in setting.get("on", DEFAULT_ON):
        return None
    query = select(Channel.id, Channel.name).where(Channel.org_id == run.org_id)
    if "channels" in setting:
        if not setting["channels"]:
            return None
        query = query.where(Channel.id.in_(setting["channels"]))
    else:
        query = query.where(Channel.is_default.is_(True))
    channels = session.execute(query).all()
    if not channels:
        return None
    return row.name, channels


def _queue(session: Session, run: Run, kind: str, event: dict, channels, now: datetime) -> None:
    """One pending Delivery per channel, due now, each event carrying its own delivery id."""
    for channel in channels:
        delivery_id = new_id()
        session.add(Delivery(id=delivery_id, org_id=run.org_id, run_id=run.id, channel_id=channel.id,
                             channel_name=channel.name, kind=kind, event={**event, "delivery_id": delivery_id},
                             status="pending", attempts=[], next_attempt_at=now, created_at=now))


def run_event(session: Session, run: Run, schedule_name: str, now: datetime) -> dict:
    """The JSON event for a run that ended: schedule, run, and each machine that did not succeed with its error.

    run.url is filled in when it is sent (CLOUDCRON_PUBLIC_URL, or the address `serve` listens on)."""
    machines = session.scalars(select(RunMachine).where(RunMachine.run_id == run.id).order_by(RunMachine.id)).all()
    return _event("run.finished", run, schedule_name, machines, now, finished_at=run.finished_at or now,
                  error=run.error)


def retrying_event(run: Run, schedule_name: str, rows: list, so_far: str, attempt: int, attempts: int,
                   retry_at: datetime, retrying: set[str], now: datetime) -> dict:
    """The JSON event for a failed attempt that will be retried: as run_event's, with the run still `running`
    (no finished_at), and `attempt` {"number", "of", "status" (failed | partial), "retry_at"}; each machine
    that did not succeed says whether it is tried again (`retry`)."""
    event = _event("run.retrying", run, schedule_name, rows, now, retrying=retrying)
    event["attempt"] = {"number": attempt, "of": attempts, "status": so_far, "retry_at": format_instant(retry_at)}
    return event


def _event(kind: str, run: Run, schedule_name: str, machines: list, now: datetime, finished_at=None,
           error: str | None = None, retrying: set[str] | None = None) -> dict:
    """What run_event and retrying_event share; with `retrying`, each machine not succeeded says `retry`."""
    bad = []
    for m in machines:
        if m.status != "succeeded":
            entry = {"machine_key": m.machine_key, "cloud_id": m.cloud_id, "machine_id": m.machine_id,
                     "status": m.status, "error": m.error}
            if retrying is not None:
                entry["retry"] = m.machine_key in retrying
            bad.append(entry)
    return {
        "type": kind,
        "time": format_instant(now),
        "schedule": {"id": run.schedule_id, "name": schedule_name},
        "run": {"id": run.id, "status": run.status, "trigger": run.trigger,
                "scheduled_for": format_instant(run.scheduled_for), "started_at": format_instant(run.started_at),
                "finished_at": format_instant(finished_at), "error": error, "url": None},
        "machines_total": len(machines),
        "machines_not_succeeded": bad,
    }


def test_event(channel: Channel, now: datetime) -> dict:
    """The event POST /channels/<id>/test sends."""
    return {"type": "test", "time": format_instant(now), "channel": {"id": channel.id, "name": channel.name},
            "message": "a test notification from cloudcron"}


def deliveries_json(session: Session, run_id: str) -> list[dict]:
    """A run's deliveries, oldest first, as GET /runs/<id> shows them."""
    rows = session.scalars(select(Delivery).where(Delivery.run_id == run_id)
                           .order_by(Delivery.created_at, Delivery.id)).all()
    return [delivery_json(d) for d in rows]


def delivery_json(d: Delivery) -> dict:
    """One delivery: its channel, status (pending, delivered, failed) and every attempt."""
    return {"id": d.id, "channel_id": d.channel_id, "channel": d.channel_name, "kind": d.kind, "status": d.status,
            "attempts": d.attempts or [], "next_attempt_at": format_instant(d.next_attempt_at),
            "created_at": format_instant(d.created_at), "finished_at": format_instant(d.finished_at)}


# ---------------------------------------------------------------- step 2: sending

class SendError(Exception):
    """An attempt failed; `permanent` says whether trying again can help. The message holds no URL or secret."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Cloudcron-Signature value: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the secret>."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def send_webhook(url: str, secret: str, event: dict, timeout: float, denied_networks, delivery_id: str) -> None:
    """POST the event as JSON, signed; returns on a 2xx, raises SendError otherwise (redirects are not followed).

    The connection goes through the provider address guard: a host resolving into denied_networks (CIDR strings,
    CLOUDCRON_NOTIFY_DENIED_NETWORKS) is refused, permanently.
    The whole attempt, answer included, ends after `timeout` seconds however slowly the receiver answers.
    A proxy from the environment (HTTPS_PROXY) is honoured; its own address is the one checked then."""
    import requests

    from plugins.module_utils._libcloud import DeniedAddressError, _deadline, guarded_adapter, guarding

    from . import __version__

    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": f"cloudcron/{__version__}",
               SIGNATURE_HEADER: sign(secret, int(time.time()), body), "X-Cloudcron-Event": event.get("type", ""),
               "X-Cloudcron-Delivery": delivery_id}
    with requests.Session() as http:
        adapter = guarded_adapter()
        http.mount("http://", adapter)
        http.mount("https://", adapter)
        try:
            # requests' timeout bounds each read, not the attempt: a receiver sending a byte a second would hold
            # the sender (one thread, every org's deliveries) for ever. The deadline ends the whole attempt.
            with guarding(denied_networks), _deadline(timeout) as watch:
                resp = http.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
                resp.close()
            if watch.expired:  # cut off: what was read of the answer (a status line, part of the headers) says nothing
                raise requests.exceptions.ConnectionError("cut off at the deadline")
        except DeniedAddressError:
            raise SendError("the receiver's address is in a network cloudcron does not contact "
                            "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)", permanent=True) from None
        except requests.exceptions.Timeout:
            raise SendError(f"no answer within {timeout:g} s (CLOUDCRON_NOTIFY_TIMEOUT)") from None
        except requests.exceptions.RequestException as exc:
            if watch.expired:
                raise SendError(f"no whole answer within {timeout:g} s (CLOUDCRON_NOTIFY_TIMEOUT)") from None
            raise SendError(_network_reason(exc)) from None
        status = resp.status_code
    if 200 <= status < 300:
        return
    from http.client import responses

    raise SendError(f"HTTP {status} {responses.get(status, '')}".strip(),
                    permanent=400 <= status < 500 and status not in (408, 425, 429))


def _network_reason(exc: BaseException) -> str:
    """Why a connection failed, in words that hold no URL (requests' messages repeat the whole URL)."""
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        name = type(cause).__name__
        if "NameResolution" in name or "gaierror" in name:
            return "the receiver's host name does not resolve"
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return "connection refused"
        if "SSL" in name or "Certificate" in name:
            return "TLS error (certificate or handshake)"
        cause = cause.__cause__ or cause.__context__ or (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)
    return "the receiver could not be reached"


# The guarded adapter of the Apprise attempt under way in this context. A context variable rather than a
# thread-local: Apprise may run a service on its own worker thread, which it starts with the caller's context.
_APPRISE_ADAPTER: contextvars.ContextVar = contextvars.ContextVar("cloudcron_apprise_adapter", default=None)
_APPRISE_PATCH = threading.Lock()


def _route_apprise_requests() -> None:
    """Make `requests` use the guarded adapter of the Apprise attempt under way (installed once).

    Apprise's plugins call requests.request() and friends, which build their own Session: there is no adapter
    to mount. Session.get_adapter is wrapped instead; outside an attempt it is unchanged."""
    import requests

    with _APPRISE_PATCH:
        if getattr(requests.Session.get_adapter, "_cloudcron_guarded", False):
            return
        original = requests.Session.get_adapter

        def get_adapter(self, url):
            adapter = _APPRISE_ADAPTER.get()
            if adapter is not None and url.lower().startswith(("http://", "https://")):
                return adapter
            return original(self, url)

        get_adapter._cloudcron_guarded = True
        requests.Session.get_adapter = get_adapter


def _apprise_send(notifier, title: str, body: str, severity: str, timeout: float, denied_networks) -> tuple[bool, bool]:
    """notifier.notify() with every HTTP connection guarded (denied networks, redirects included) and the whole
    attempt bounded by `timeout` seconds however slowly a receiver answers; (ok, refused a denied address)."""
    from plugins.module_utils import _libcloud

    _route_apprise_requests()
    adapter = _libcloud.guarded_adapter()
    send = adapter.send
    refused: list[bool] = []
    watch = _libcloud._Deadline(timeout)  # noqa: SLF001 - shared by whichever thread Apprise sends on

    def guarded_send(*args, **kwargs):
        # The guard's policy and deadline are read from the sending thread: set them on it.
        previous = getattr(_libcloud._CURRENT, "deadline", None)  # noqa: SLF001
        _libcloud._CURRENT.deadline = watch  # noqa: SLF001
        try:
            with _libcloud.guarding(denied_networks):
                return send(*args, **kwargs)
        except _libcloud.DeniedAddressError:
            refused.append(True)
            raise
        finally:
            _libcloud._CURRENT.deadline = previous  # noqa: SLF001

    adapter.send = guarded_send
    token = _APPRISE_ADAPTER.set(adapter)
    try:
        ok = notifier.notify(title=title, body=body, notify_type=severity)
    finally:
        _APPRISE_ADAPTER.reset(token)
        watch.close()
        adapter.close()
    if watch.expired:  # cut off: an answer read in part (a status line) says nothing
        raise SendError(f"no whole answer within {timeout:g} s (CLOUDCRON_NOTIFY_TIMEOUT)")
    return ok, bool(refused)


def send_apprise(url: str, event: dict, timeout: float, denied_networks=DEFAULT_NOTIFY_DENIED_NETWORKS) -> None:
    """Send the event as a title and a text body through Apprise; raises SendError when Apprise reports failure.

    Only services that send through `requests` are sent to (web.channels.sends_over_http); their connections go
    through the address guard, so a host name resolving into denied_networks (CIDR strings,
    CLOUDCRON_NOTIFY_DENIED_NETWORKS), or a redirect there, is refused. Apprise's own warnings become the error,
    with every part of the URL (tokens live there) blotted out."""
    import apprise

    from plugins.module_utils._redact import Redactor

    from .channels import quiet_apprise, sends_over_http

    if not sends_over_http(url.split("://", 1)[0].lower()):
        raise SendError("cloudcron sends Apprise notifications only over HTTP(S) services", permanent=True)

    # Apprise's own log lines may quote parts of a URL (a host, a token): they go only into this attempt's
    # error, redacted below, never into the service's log.
    quiet_apprise()
    title, body = _text(event)
    severity = _SEVERITY.get((event.get("run") or {}).get("status"), "warning" if event.get("run") else "info")
    # Sequential (async_mode off): the attempt stays on this thread, where the guard and the deadline are set.
    notifier = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
    if not notifier.add(url):
        raise SendError("Apprise no longer reads the channel's URL", permanent=True)
    for server in notifier:  # each plugin's socket timeouts (the URL's cto/rto) at most the attempt's bound
        server.socket_connect_timeout = min(server.socket_connect_timeout or timeout, timeout)
        server.socket_read_timeout = min(server.socket_read_timeout or timeout, timeout)
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        ok, refused = _apprise_send(notifier, title, body, severity, timeout, denied_networks)
    if ok:
        return
    if refused:
        raise SendError("the receiver's address is in a network cloudcron does not contact "
                        "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)", permanent=True)
    redactor = Redactor([p for p in _url_parts(url) if len(p) >= 3])
    text = " ".join(redactor.redact(captured.getvalue()).split()) or "Apprise reported a failure"
    raise SendError(text[:ERROR_CHARS])


def _url_parts(url: str) -> list[str]:
    import re

    rest = url.split("://", 1)[-1]
    return [url, rest] + [p for p in re.split(r"[/:@?&=#,]+", rest) if p]


def _text(event: dict) -> tuple[str, str]:
    """A human title and body for chat and mail services."""
    if event.get("type") == "test":
        return "cloudcron: test notification", f"A test notification for channel '{event['channel']['name']}'."
    run, schedule, attempt = event["run"], event["schedule"], event.get("attempt")
    if attempt:  # run.retrying: a failed attempt, another to come
        title = f"cloudcron: {schedule['name']} attempt {attempt['number']} of {attempt['of']} {attempt['status']}"
        lines = [f"Schedule '{schedule['name']}': run {run['id']}, attempt {attempt['number']} of {attempt['of']} "
                 f"{attempt['status']}; the next attempt is due at {attempt['retry_at']}."]
    else:
        title = f"cloudcron: {schedule['name']} {run['status']}"
        lines = [f"Schedule '{schedule['name']}': run {run['id']} ended {run['status']} at {run['finished_at']}."]
    if run.get("error"):
        lines.append(run["error"])
    for m in event.get("machines_not_succeeded", [])[:20]:
        lines.append(f"- {m['machine_id'] or m['machine_key']}: {m['status']}" + (f": {m['error']}" if m.get("error") else "")
                     + (" (to be tried again)" if m.get("retry") else ""))
    more = len(event.get("machines_not_succeeded", [])) - 20
    if more > 0:
        lines.append(f"... and {more} more")
    if run.get("url"):
        lines.append(run["url"])
    return title, "\n".join(lines)


def send(target: dict, event: dict, config, delivery_id: str) -> None:
    """One attempt to a channel's sealed target {"kind", "url", "secret"?}; SendError when it fails."""
    if target["kind"] == "webhook":
        send_webhook(target["url"], target["secret"], event, config.notify_timeout, config.notify_denied_networks,
                     delivery_id)
    else:
        send_apprise(target["url"], event, config.notify_timeout, config.notify_denied_networks)


def with_link(event: dict, public_url: str) -> dict:
    """The event with run.url set: public_url + the console's page of the run (a path when no address is known)."""
    if not event.get("run"):
        return event
    return {**event, "run": {**event["run"], "url": f"{public_url}/ui/runs/{event['run']['id']}"}}


def next_wait(attempt: int, first: float) -> float:
    """Seconds before attempt `attempt` + 1 after `attempt` attempts failed: first, 2 × first, ... at most BACKOFF_CAP."""
    return min(BACKOFF_CAP, first * (2 ** (attempt - 1)))


class Sender:
    """Sends due deliveries for one process; tick() does one and says whether it found one."""

    def __init__(self, state, clock=None):
        self.state = state
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.wake = threading.Event()
        # The orgs this sender served last, least recent first (at most FAIR_ORGS): see _claim.
        self.served: list[str] = []

    @property
    def lease(self) -> timedelta:
        """How long a claim holds a delivery: an attempt's timeout and a margin; a crashed sender's claim lapses then."""
        return timedelta(seconds=self.state.config.notify_timeout + 30)

    def tick(self) -> bool:
        """Claim the most overdue delivery, send it, record the attempt. True when one was due."""
        now = self.clock()
        claimed = self._claim(now)
        if claimed is None:
            return False
        if claimed is False:  # another sender took it first
            return True
        delivery_id, run_id, target, event = claimed
        config = self.state.config
        started = time.monotonic()
        error: SendError | None = None
        with bound(delivery_id=delivery_id, run_id=run_id):
            if target is None:
                error = SendError("the channel was deleted", permanent=True)
            else:
                try:
                    send(target, with_link(event, config.public_url), config, delivery_id)
                except SendError as exc:
                    error = exc
                except Exception as exc:  # noqa: BLE001 - a sender's bug fails this attempt, not the loop
                    log.exception("sending delivery %s failed", delivery_id)
                    error = SendError(f"internal error: {type(exc).__name__}")
            self._record(delivery_id, self.clock(), time.monotonic() - started, error)
        return True

    def _claim(self, now: datetime):
        """(id, run id, channel target or None, event) of the delivery claimed; None when none is due; False when
        another sender claimed it first. The look is a read: an idle sender never takes the write lock.

        Fair between orgs: a due delivery of an org this sender served least recently (or not among its last
        FAIR_ORGS) goes first, the most overdue within an org. One org's backlog, a thousand deliveries to a
        receiver that answers each only at CLOUDCRON_NOTIFY_TIMEOUT, then delays another org's by one attempt
        per org that has some due, not by the whole backlog."""
        recency = case({org: rank for rank, org in enumerate(self.served, 1)}, value=Delivery.org_id, else_=0) \
            if self.served else literal(0)
        due_query = (select(Delivery.id, Delivery.next_attempt_at)
                     .where(Delivery.next_attempt_at.is_not(None), Delivery.next_attempt_at <= now)
                     .order_by(recency, Delivery.next_attempt_at).limit(1))
        with self.state.db.session() as read:
            if read.execute(due_query).first() is None:
                return None
        with self.state.db.transaction() as session:
            due = session.execute(due_query).first()
            if due is None:
                return False
            held = now + self.lease
            won = session.execute(update(Delivery).where(Delivery.id == due.id,
                                                         Delivery.next_attempt_at == due.next_attempt_at)
                                  .values(next_attempt_at=held)).rowcount == 1
            if not won:
                return False
            delivery = session.get(Delivery, due.id)
            self.served = [org for org in self.served if org != delivery.org_id][-(FAIR_ORGS - 1):] + [delivery.org_id]
            channel = session.get(Channel, delivery.channel_id)
            target = None
            if channel is not None and channel.org_id == delivery.org_id:
                target = self.state.box.open(channel.target_enc)
            return delivery.id, delivery.run_id, target, dict(delivery.event)

    def _record(self, delivery_id: str, now: datetime, took: float, error: SendError | None) -> None:
        outcome = self._write_attempt(delivery_id, now, took, error)
        if outcome is not None:
            count_delivery(outcome)

    def _write_attempt(self, delivery_id: str, now: datetime, took: float, error: SendError | None) -> str | None:
        """Append the attempt and set what follows; returns the outcome (delivered, retrying, failed) or None."""
        config = self.state.config
        with self.state.db.transaction() as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:  # pruned meanwhile
                return None
            attempts = list(delivery.attempts or [])
            attempts.append({"at": format_instant(now), "ok": error is None,
                             "error": None if error is None else str(error), "duration": round(took, 3)})
            delivery.attempts = attempts
            if error is None:
                delivery.status, delivery.next_attempt_at, delivery.finished_at = "delivered", None, now
                return "delivered"
            retry_at = now + timedelta(seconds=next_wait(len(attempts), config.notify_backoff))
            give_up = delivery.created_at + timedelta(seconds=config.notify_retry_for)
            if error.permanent or delivery.kind == "test" or retry_at > give_up:
                delivery.status, delivery.next_attempt_at, delivery.finished_at = "failed", None, now
                log.warning("delivery %s to channel '%s' failed after %d attempt(s): %s", delivery_id,
                            delivery.channel_name, len(attempts), error)
                return "failed"
            delivery.next_attempt_at = retry_at
            log.info("delivery %s to channel '%s' failed (%s); trying again at %s", delivery_id,
                     delivery.channel_name, error, format_instant(retry_at))
            return "retrying"

    def run(self, stop: threading.Event) -> None:
        """Send until `stop` is set: as fast as deliveries are due, otherwise a look every POLL seconds."""
        errors = Backoff("sending notifications", log, first=1.0, cap=30.0)
        while not stop.is_set():
            try:
                worked = self.tick()
            except Exception:  # noqa: BLE001 - the database went away: back off, then try again
                stop.wait(errors.failed())
                continue
            errors.succeeded()
            if not worked:
                self.wake.wait(POLL)
                self.wake.clear()


def count_delivery(outcome: str) -> None:
    """Count an attempt's outcome in the service's metrics (web.metrics), where this build has them."""
    try:
        from .metrics import delivery
    except ImportError:  # a build without the metrics module counts nothing
        return
    delivery(outcome)


def send_test(state, session: Session, channel: Channel, now: datetime) -> dict:
    """POST /channels/<id>/test: one attempt now, recorded as a delivery of kind `test`; returns that delivery.

    Read, commit, send, write: the request's transaction ends before the network is used."""
    delivery = Delivery(id=new_id(), org_id=channel.org_id, run_id=None, channel_id=channel.id,
                        channel_name=channel.name, kind="test", event=test_event(channel, now), status="pending",
                        attempts=[], next_attempt_at=now + timedelta(seconds=state.config.notify_timeout + 30),
                        created_at=now)
    session.add(delivery)
    session.commit()
    target = state.box.open(channel.target_enc)
    started, error = time.monotonic(), None
    try:
        send(target, delivery.event, state.config, delivery.id)
    except SendError as exc:
        error = exc
    Sender(state)._record(delivery.id, datetime.now(timezone.utc), time.monotonic() - started, error)
    with state.db.session() as read:
        return delivery_json(read.get(Delivery, delivery.id))


def start_sender(state, stop: threading.Event) -> threading.Thread:
    """The sender's thread for a worker process (daemon: a drain does not wait for notifications)."""
    sender = Sender(state)
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True, name="notify-sender")
    thread.start()
    return thread
