"""The audit log: who changed which resource of an org, when, and each field's value before and after.

Service functions (schedules.store / delete / set_pause, runs.run_now, the resources functions)
call record() in the session that makes the change, before they commit, so an entry exists exactly
when the change does: a change refused with a 4xx, or rolled back, leaves none. The actor is the
token that authenticated the request or the console session (web.auth.current_actor).

Secrets never reach the log: a column stored encrypted (`*_enc`: cloud credentials, a key's private
half, a channel's URL or secret) or hashed (`*_hash`: tokens) appears under its name without the
suffix, its value replaced by MASK, so an entry says that it was set or changed and nothing more.
"""
from __future__ import annotations

import copy
import logging
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, inspect, or_, select

from .auth import current_actor
from .models import AuditEntry
from .timemath import format_instant

log = logging.getLogger(__name__)

MASK = "***"
# Actions an entry may carry; skip_next is a pause that skips a number of fires.
ACTIONS = ("create", "update", "delete", "run_now", "pause", "resume", "skip_next")
# Table -> the resource kind the API names (and accepts in ?resource=).
RESOURCES = {"schedules": "schedule", "clouds": "cloud", "machines": "machine", "keys": "key",
             "scripts": "script", "calendars": "calendar", "channels": "channel"}
SECRET_SUFFIXES = ("_enc", "_hash")
# Columns that are not a client's choice: identity, stamps, a version counter, and what the service
# derives (a schedule's next fire and counters, a machine's power state as the provider last said).
IGNORED = {"id", "org_id", "created_at", "updated_at", "version"}
DERIVED = {
    "schedules": {"next_run_at", "total_run_count", "last_run_at", "last_error"},
    "machines": {"state"},
}
PRUNE_BATCH = 500        # rows deleted per transaction, so the write lock is held briefly
PRUNE_MAX_BATCHES = 20   # per call; the dispatcher's sweep calls again a few seconds later
# Seconds one call may spend: it runs in the dispatcher's loop, whose claims wait meanwhile. 20 batches took
# 0.15-0.6 s on SQLite (2 shared cores); one batch per 5 s sweep still deletes 360,000 entries an hour.
PRUNE_BUDGET = 0.05


def resource_of(row) -> str:
    """The resource kind of a model row ("schedule", "cloud", ...)."""
    return RESOURCES.get(row.__tablename__, row.__tablename__)


# Columns whose name is not the API's field: an entry speaks the API's names.
FIELD_NAMES = {"is_default": "default", "url_shown": "url", "target_enc": "url_and_secret_enc"}


def _field(column: str) -> tuple[str, bool]:
    """(the field name an entry shows, whether it is a secret) for a column."""
    column = FIELD_NAMES.get(column, column)
    for suffix in SECRET_SUFFIXES:
        if column.endswith(suffix):
            return column[: -len(suffix)], True
    return column, False


def _value(value):
    if isinstance(value, datetime):
        return format_instant(value)
    return copy.deepcopy(value)  # JSON columns: a later in-place edit must not change the snapshot


def snapshot(row) -> dict:
    """The audited fields of a model row: {field: JSON value}; secrets keep their stored (sealed) form
    here, only to be compared, and are masked by diff()."""
    skip = IGNORED | DERIVED.get(row.__tablename__, set())
    state = inspect(row)
    out = {}
    for attr in state.mapper.column_attrs:
        if attr.key in skip:
            continue
        name, _ = _field(attr.key)
        out[name] = _value(getattr(row, attr.key))
    return out


def secrets_of(row) -> set[str]:
    """The field names of a row whose values are secrets."""
    return {name for name, secret in (_field(a.key) for a in inspect(row).mapper.column_attrs) if secret}


def diff(before: dict, after: dict, secrets=frozenset()) -> dict:
    """{field: {"before": value, "after": value}} for each field whose value differs; None stands for absent.

    A field in `secrets` shows MASK in place of each value that is set, so a change of credentials
    reads {"before": "***", "after": "***"} and setting them {"before": null, "after": "***"}.
    """
    out = {}
    for name in list(before) + [k for k in after if k not in before]:
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name in secrets:
            old, new = (None if old is None else MASK), (None if new is None else MASK)
        out[name] = {"before": old, "after": new}
    return out


def record(session, row, action: str, before: dict | None = None, now: datetime | None = None,
           extra: dict | None = None) -> AuditEntry | None:
    """Add the audit entry of `action` on `row` to `session` (the caller commits it with the change).

    before: snapshot(row) taken before the change. A create has no before; a delete, called before the
    row is deleted, takes the row as it is; any other action without one records no field change.
    The row as it is now is the after (nothing after a delete). extra: more {field: {"before", "after"}}
    (a run-now's run_id). An update that changed no field records nothing (a client sending a resource
    back unchanged); every other action is recorded even without changes. Returns the entry, or None.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    current = snapshot(row)
    if action == "create":
        before, after = {}, current
    elif action == "delete":
        before, after = (current if before is None else before), {}
    else:
        before, after = (current if before is None else before), current
    changes = diff(before, after, secrets_of(row))
    changes.update(extra or {})
    if action == "update" and not changes:
        return None
    actor = current_actor()
    entry = AuditEntry(org_id=row.org_id, time=now or datetime.now(timezone.utc),
                       token_id=actor.token_id if actor else None, token_label=actor.label if actor else None,
                       action=action, resource=resource_of(row), resource_id=row.id,
                       name=getattr(row, "name", None) or getattr(row, "title", None), changes=changes)
    session.add(entry)
    return entry


def query(org_id: str, resource: str | None = None, resource_id: str | None = None, token: str | None = None,
          action: str | None = None, since: datetime | None = None, until: datetime | None = None):
    """The select of an org's entries with the API's filters: `token` matches a token id or label;
    since <= time < until (aware UTC). Order it newest first (time, id descending)."""
    stmt = select(AuditEntry).where(AuditEntry.org_id == org_id)
    if resource:
        stmt = stmt.where(AuditEntry.resource == resource)
    if resource_id:
        stmt = stmt.where(AuditEntry.resource_id == resource_id)
    if token:
        stmt = stmt.where(or_(AuditEntry.token_id == token, AuditEntry.token_label == token))
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if since is not None:
        stmt = stmt.where(AuditEntry.time >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.time < until)
    return stmt


def entry_json(e: AuditEntry) -> dict:
    """An entry as the API answers it."""
    return {"id": e.id, "time": format_instant(e.time), "token_id": e.token_id, "token_label": e.token_label,
            "action": e.action, "resource": e.resource, "resource_id": e.resource_id, "name": e.name,
            "changes": e.changes or {}}


def prune(state, now: datetime, clock=time.monotonic, budget: float = PRUNE_BUDGET) -> int:
    """Delete entries older than CLOUDCRON_AUDIT_RETENTION_DAYS; returns how many.

    A read (no lock) says whether any is due; then transactions of PRUNE_BATCH rows each, oldest first,
    so no write transaction is long, until none is left, `budget` seconds of `clock` have passed (at least
    one batch is deleted), or PRUNE_MAX_BATCHES; the next call goes on where this one stopped. Called from
    the dispatcher's sweep every few seconds, between its claims, hence the budget.
    """
    started = clock()
    cutoff = now - timedelta(days=state.config.audit_retention_days)
    oldest = select(AuditEntry.id).where(AuditEntry.time < cutoff).order_by(AuditEntry.time, AuditEntry.id)
    with state.db.session() as session:
        if session.scalar(oldest.limit(1)) is None:
            return 0
    removed = 0
    for _ in range(PRUNE_MAX_BATCHES):
        with state.db.transaction() as session:
            ids = list(session.scalars(oldest.limit(PRUNE_BATCH)))
            if ids:
                session.execute(delete(AuditEntry).where(AuditEntry.id.in_(ids)))
        removed += len(ids)
        if len(ids) < PRUNE_BATCH or clock() - started >= budget:
            break
    if removed:
        log.info("pruned %d audit entries older than %s", removed, format_instant(cutoff))
    return removed
