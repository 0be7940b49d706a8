"""Schedule rules: merge a client's fields onto the stored ones, check them as a whole, compute next_run_at,
and decide what a due schedule does (the fire decision the dispatcher applies).

Everything here but build() is pure: the current time is passed in, calendars come compiled.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from sqlalchemy import delete as delete_rows
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit
from . import calendars as calendar_rules
from . import timemath
from .crypto import new_id
from .errors import BadRequest, Conflict
from .models import Calendar, Cloud, Machine, Schedule, ScheduleCalendar, Script
from .notify import parse_notify
from .retries import parse_retries
from .schemas import PauseIn, ScheduleIn
from .timemath import TimeSpecError, Timing, Window, format_instant
from .validation import check_fields, loads, validate

ALIASES = {"cronjob_type": "schedule_type", "cronjob_entry": "schedule_entry", "task_enabled": "enabled"}
# The pause fields change through POST /schedules/<id>/pause and /resume only, so a client sending a
# whole schedule back cannot undo a pause (or restore a used-up skip_next) by accident.
PAUSE_FIELDS = {"paused", "paused_until", "pause_note", "skip_next"}
READ_ONLY = {"id", "active", "next_run_at", "total_run_count", "last_run_at", "last_error", "created_at",
             "updated_at"} | PAUSE_FIELDS
WRITABLE = set(ScheduleIn.model_fields)
DEFAULTS = {
    "description": None,
    "action": None,
    "script_id": None,
    "params": None,
    "machines_per_cloud": [],
    "selectors": [],
    "enabled": True,
    "run_immediately": False,
    "start_after": None,
    "expires": None,
    "max_run_count": None,
    "timezone": "UTC",
    "misfire_grace": 300,
    "concurrency": "forbid",
    "timeout": 3600,
    "exclude_calendars": None,
    "jitter": 0,
    "notify": None,
    "retries": None,
}
# Fields a stored schedule holds as columns, in answer order.
COLUMNS = ("name", "description", "action", "script_id", "params", "machines_per_cloud", "selectors",
           "schedule_type", "schedule_entry", "enabled", "run_immediately", "start_after", "expires",
           "max_run_count", "timezone", "misfire_grace", "concurrency", "timeout", "exclude_calendars", "jitter",
           "notify", "retries")


def parse_fields(body: dict, model=ScheduleIn, writable=WRITABLE) -> dict:
    """Check names and types of the fields a request sends; return them with aliases mapped."""
    fields = check_fields(body, writable, READ_ONLY, ALIASES)
    typed = validate(model, {k: v for k, v in fields.items() if v is not None})
    # Explicit nulls and "" mean "not set": keep them as None so they clear stored values.
    return {k: typed.get(k) for k in fields}


def checked(fn, *args, **kwargs):
    """Call a time-math function; its TimeSpecError becomes a 400 naming the field."""
    try:
        return fn(*args, **kwargs)
    except TimeSpecError as exc:
        raise BadRequest(str(exc)) from None


def _entry_value(raw, schedule_type: str):
    """Undo the JSON.stringify Mist's clients apply to entries; a one_off may be {"entry": date}."""
    if isinstance(raw, str) and schedule_type in ("interval", "crontab"):
        raw = loads(raw, "schedule_entry")  # the body's rules (finite numbers, storable text) hold inside it too
    if schedule_type == "one_off":
        if isinstance(raw, str) and raw.lstrip().startswith("{"):
            raw = loads(raw, "schedule_entry")
        if isinstance(raw, dict):
            if set(raw) != {"entry"}:
                raise BadRequest("schedule_entry: a one_off entry is a date or {\"entry\": <date>}")
            raw = raw["entry"]
    elif not isinstance(raw, dict):
        raise BadRequest(f"schedule_entry: must be an object for a {schedule_type} schedule")
    return raw


def normalize_entry(raw, schedule_type: str, tz: str, min_interval: timedelta, now: datetime, given: bool,
                    stored=None):
    """The stored form of an entry: a dict for interval/crontab, an ISO 8601 UTC string for one_off.

    A one_off date a request gives must be in the future, unless it is the `stored` one sent back unchanged.
    """
    raw = _entry_value(raw, schedule_type)
    if schedule_type == "interval":
        return checked(timemath.normalize_interval, raw, min_interval=min_interval)
    if schedule_type == "crontab":
        return checked(timemath.normalize_crontab, raw)
    when = checked(timemath.parse_instant, raw, tz, field="schedule_entry")
    if given and when <= now and format_instant(when) != stored:
        raise BadRequest(f"schedule_entry: the one_off date {format_instant(when)} is not in the future")
    return format_instant(when)


def entry_object(schedule_type: str, entry):
    """The entry as the time math takes it."""
    if schedule_type == "one_off":
        return timemath.parse_instant(entry, "UTC", field="schedule_entry")
    return entry


def build(session: Session, org_id: str, given: dict, current: Schedule | None, now: datetime,
          min_interval: timedelta) -> dict:
    """Merge `given` onto `current` (or the defaults) and return every column's checked value."""
    merged = dict(DEFAULTS)
    if current is not None:
        merged.update({c: getattr(current, c) for c in COLUMNS})
    merged.update({k: (DEFAULTS.get(k) if v is None else v) for k, v in given.items()})

    for required in ("name", "schedule_type", "schedule_entry"):
        if not merged.get(required) and merged.get(required) != 0:
            alias = {"schedule_type": " (or cronjob_type)", "schedule_entry": " (or cronjob_entry)"}.get(required, "")
            raise BadRequest(f"{required}{alias}: is required")
    if merged["action"] == "shutdown":
        merged["action"] = "stop"
    if bool(merged["action"]) == bool(merged["script_id"]):
        raise BadRequest("action, script_id: give exactly one of them (an action or a script to run)")
    if merged["script_id"]:
        if "script_id" in given:
            script = session.get(Script, merged["script_id"])
            if script is None or script.org_id != org_id:
                raise BadRequest(f"script_id: no script '{merged['script_id']}' in this org")
    elif merged["params"]:
        raise BadRequest("params: only a script schedule takes params")

    _check_targets(session, org_id, given, merged)

    tz = checked(timemath.check_timezone, merged["timezone"] or "UTC")
    merged["timezone"] = tz
    # The "in the future" rules apply to the values a request changes: a client that sends the whole
    # schedule back (as Mist's UI does) re-sends past dates it did not touch.
    changed = set()
    for name in ("start_after", "expires"):
        if given.get(name) is not None:
            merged[name] = checked(timemath.parse_instant, given[name], tz, field=name)
            if current is None or merged[name] != getattr(current, name):
                changed.add(name)
        elif name in given and current is not None and getattr(current, name) is not None:
            changed.add(name)  # cleared
    if "expires" in changed and merged["expires"] is not None and merged["expires"] <= now:
        raise BadRequest(f"expires: {format_instant(merged['expires'])} is not in the future")
    if changed and merged["start_after"] and merged["expires"] and merged["start_after"] >= merged["expires"]:
        raise BadRequest("start_after: must be before expires")

    entry_given = "schedule_entry" in given
    if entry_given or "schedule_type" in given or current is None:
        stored = current.schedule_entry if current is not None and current.schedule_type == "one_off" else None
        merged["schedule_entry"] = normalize_entry(
            merged["schedule_entry"], merged["schedule_type"], tz, min_interval, now, given=entry_given, stored=stored
        )

    if "exclude_calendars" in given:
        merged["exclude_calendars"] = _check_calendars(session, org_id, given["exclude_calendars"])
    if "notify" in given:
        merged["notify"] = parse_notify(session, org_id, given["notify"])
    if "retries" in given:
        merged["retries"] = parse_retries(given["retries"])
    if given.get("jitter") is not None or (merged["jitter"] and ({"schedule_entry", "schedule_type"} & set(given))):
        _check_jitter(merged)
    if current is None:
        _check_can_fire(session, merged, now)
    return merged


def _check_calendars(session: Session, org_id: str, ids) -> list | None:
    """The org's calendar ids in the order given, without repeats; None when there are none."""
    ids = list(dict.fromkeys(ids or []))
    if not ids:
        return None
    found = set(session.scalars(select(Calendar.id).where(Calendar.org_id == org_id, Calendar.id.in_(ids))))
    missing = [i for i in ids if i not in found]
    if missing:
        raise BadRequest(f"exclude_calendars: '{missing[0]}' is not a calendar of this org")
    return ids


def _check_jitter(merged: dict) -> None:
    """Jitter at most the shortest time between two fires, so a delayed fire never passes the next one."""
    jitter = merged["jitter"] or 0
    if not jitter:
        return
    probe = Timing(merged["schedule_type"], entry_object(merged["schedule_type"], merged["schedule_entry"]),
                   merged.get("start_after") or timemath.EPOCH, merged["timezone"])
    spacing = timemath.min_spacing(probe)
    if spacing is not None and timedelta(seconds=jitter) > spacing:
        raise BadRequest(f"jitter: {jitter} s is longer than the {spacing.total_seconds():g} s between this "
                         f"schedule's fires; use at most {int(spacing.total_seconds())}")


def _check_can_fire(session: Session, merged: dict, now: datetime) -> None:
    """A new schedule must be able to fire at least once; the message names the fields that prevent it."""
    kind = merged["schedule_type"]
    entry = entry_object(kind, merged["schedule_entry"])
    start_after, expires = merged["start_after"], merged["expires"]
    bare = Timing(kind, entry, now, merged["timezone"], start_after, expires)
    if kind == "one_off":
        if start_after is not None and entry < start_after:
            raise BadRequest(f"schedule_entry, start_after: the one_off date {format_instant(entry)} is before "
                             f"start_after {format_instant(start_after)}, so it can never fire")
        if expires is not None and entry >= expires:
            raise BadRequest(f"schedule_entry, expires: the one_off date {format_instant(entry)} is not before "
                             f"expires {format_instant(expires)}, so it can never fire")
        return
    # Without expires, only the end of the calendar (year 9999) stops a schedule: first_run_at says so.
    if expires is not None and timemath.next_fire(bare, now) is None:
        since = max(now, start_after) if start_after is not None else now
        fields = "schedule_entry, start_after, expires" if start_after is not None else "schedule_entry, expires"
        raise BadRequest(f"{fields}: no fire time between {format_instant(since)} and expires "
                         f"{format_instant(expires)}, so it can never fire")
    ids = merged["exclude_calendars"] or []
    if ids:
        compiled = checked(calendar_rules.compiled, session, ids)
        blocks = tuple(compiled[i] for i in ids if i in compiled)
        if timemath.next_fire(Timing(kind, entry, now, merged["timezone"], start_after, expires, blocks=blocks),
                              now) is None:
            raise BadRequest("exclude_calendars: the calendars exclude every fire time of this schedule, "
                             "so it can never fire")


def _check_targets(session: Session, org_id: str, given: dict, merged: dict) -> None:
    mpc, selectors = merged["machines_per_cloud"] or [], merged["selectors"] or []
    if not mpc and not selectors:
        raise BadRequest("machines_per_cloud, selectors: give at least one target machine")
    if "machines_per_cloud" in given and mpc:
        cloud_ids = {c for c, _ in mpc}
        found = set(session.scalars(select(Cloud.id).where(Cloud.org_id == org_id, Cloud.id.in_(cloud_ids))))
        missing = sorted(cloud_ids - found)
        if missing:
            raise BadRequest(f"machines_per_cloud: cloud '{missing[0]}' is not a cloud of this org")
    if "selectors" in given:
        for i, sel in enumerate(selectors):
            if sel["type"] == "machines":
                ids = set(sel["ids"])
                found = set(session.scalars(select(Machine.id).where(Machine.org_id == org_id, Machine.id.in_(ids))))
                missing = sorted(ids - found)
                if missing:
                    raise BadRequest(f"selectors.{i}.ids: machine '{missing[0]}' is not a machine of this org")


def resolve_references(session: Session, org_id: str, given: dict) -> dict:
    """`given` with references by name made ids: script_id by script name, the cloud of each
    machines_per_cloud pair by title, exclude_calendars by calendar name (declarative apply takes both).

    An id of the org's own row wins over a name; a value that is neither is left as given, so the
    usual check refuses it with its message (`script_id: no script 'x' in this org`)."""
    out = dict(given)

    def ids_of(model, column, values):
        values = [v for v in values if isinstance(v, str)]
        if not values:
            return {}
        own = set(session.scalars(select(model.id).where(model.org_id == org_id, model.id.in_(values))))
        named = dict(session.execute(select(column, model.id).where(model.org_id == org_id, column.in_(
            [v for v in values if v not in own]))).all())
        return {v: (v if v in own else named.get(v, v)) for v in values}

    if out.get("script_id"):
        out["script_id"] = ids_of(Script, Script.name, [out["script_id"]])[out["script_id"]]
    if out.get("machines_per_cloud"):
        clouds = ids_of(Cloud, Cloud.title, list({pair[0] for pair in out["machines_per_cloud"]}))
        out["machines_per_cloud"] = [[clouds.get(c, c), m] for c, m in out["machines_per_cloud"]]
    if out.get("exclude_calendars"):
        calendars = ids_of(Calendar, Calendar.name, out["exclude_calendars"])
        out["exclude_calendars"] = [calendars.get(c, c) for c in out["exclude_calendars"]]
    return out


def _check_name_free(session: Session, org_id: str, name: str, except_id: str | None = None) -> None:
    existing = session.scalar(select(Schedule.id).where(Schedule.org_id == org_id, Schedule.name == name))
    if existing is not None and existing != except_id:
        raise Conflict(f"name: a schedule named '{name}' already exists")


def store(state, session: Session, org_id: str, given: dict, current: Schedule | None, now: datetime,
          dry_run: bool = False) -> Schedule:
    """Create (current=None) or edit a schedule of `org_id` from a client's parsed fields, the one way every writer does.

    `given` is what parse_fields returns (only the fields the client sent; None clears a field).
    The fields are merged onto `current` (or the defaults) and checked as a whole (build), the name
    must be free in the org, next_run_at is recomputed (an edit clears last_error), and a new enabled schedule with
    run_immediately gets its immediate run. Then the session is committed, the dispatcher woken
    (state.schedule_changed) and the immediate run enqueued: queue I/O only after the commit.
    Raises BadRequest (400) naming the field and the rule, Conflict (409) on a duplicate name;
    nothing is written when it raises. Returns the stored schedule.
    dry_run: the session is flushed, not committed, and neither the dispatcher nor the queue is told,
    so the caller can answer what would be stored and roll back (web.apply does).
    """
    from .runs import on_schedule_created

    values = build(session, org_id, given, current, now, state.config.min_interval)
    if current is None or values["name"] != current.name:
        _check_name_free(session, org_id, values["name"], except_id=current.id if current else None)
    # next_run_at is computed on the merged values before the session changes: a 400 leaves it as it was.
    compiled = calendar_rules.compiled(session, values["exclude_calendars"] or [])
    pause_state = {f: getattr(current, f) for f in ("paused_at", "paused_until", "pause_note", "skip_next")} \
        if current is not None else {"paused_at": None, "paused_until": None, "pause_note": None, "skip_next": 0}
    new_id_ = new_id() if current is None else current.id
    fire = first_run_at(SimpleNamespace(**values, **pause_state, id=new_id_,
                                        created_at=current.created_at if current is not None else now,
                                        total_run_count=current.total_run_count if current is not None else 0),
                        now, compiled)
    run = None
    before = audit.snapshot(current) if current is not None else None
    try:
        if current is None:
            schedule = Schedule(id=new_id_, org_id=org_id, total_run_count=0, skip_next=0, created_at=now,
                                updated_at=now, next_run_at=fire, version=1, **{c: values[c] for c in COLUMNS})
            session.add(schedule)
            _link_calendars(session, schedule)
            run = on_schedule_created(session, schedule, now)
        else:
            schedule = current
            for column in COLUMNS:
                setattr(schedule, column, values[column])
            if "exclude_calendars" in given:
                _link_calendars(session, schedule)
            schedule.updated_at = now
            schedule.next_run_at = fire
            schedule.last_error = None  # the edit passed every check and next_run_at was computed again
            schedule.version = (schedule.version or 1) + 1
        audit.record(session, schedule, "create" if current is None else "update", before, now)
        if dry_run:
            session.flush()  # the caller rolls back: the audit entry goes with the rest
            return schedule
        session.commit()
    except IntegrityError:  # a schedule of the same name written meanwhile (at a flush or at the commit)
        session.rollback()
        raise Conflict(f"name: a schedule named '{values['name']}' already exists") from None
    state.schedule_changed(schedule.next_run_at)
    if run is not None:
        state.enqueue([run.id])
    return schedule


def _link_calendars(session: Session, schedule: Schedule) -> None:
    """Keep schedule_calendars (the foreign keys that protect calendars in use) in step with exclude_calendars."""
    session.flush()
    session.execute(delete_rows(ScheduleCalendar).where(ScheduleCalendar.schedule_id == schedule.id))
    session.add_all(ScheduleCalendar(schedule_id=schedule.id, calendar_id=c) for c in schedule.exclude_calendars or [])


def recompute(session: Session, rows: list, now: datetime) -> None:
    """next_run_at of schedules as of `now` (after a pause or a calendar edit), their calendars compiled once for all."""
    compiled = calendar_rules.compiled(session, {c for s in rows for c in s.exclude_calendars or []})
    for schedule in rows:
        schedule.next_run_at = next_run_at(schedule, now, compiled)


def set_pause(state, session: Session, rows: list, now: datetime, until=None, note: str | None = None,
              skip_next: int | None = None, resume_them: bool = False) -> list:
    """Pause (or with resume_them, resume) schedules, recompute their next_run_at and commit; returns `rows`.

    A pause holds fires from `now` until `until` (None: until resumed; or a function of the schedule
    giving its instant), or skip_next skips the next fires. The dispatcher is woken after the commit.
    Each schedule gets an audit entry (resume, pause or skip_next) in the same transaction.
    """
    before = [audit.snapshot(s) for s in rows]
    for schedule in rows:
        if resume_them:
            resume(schedule)
        else:
            pause(schedule, now, until(schedule) if callable(until) else until, note, skip_next)
        schedule.updated_at = now
        schedule.version = (schedule.version or 1) + 1  # a pause changes what GET answers: a new ETag
    recompute(session, rows, now)
    action = "resume" if resume_them else "skip_next" if skip_next else "pause"
    for schedule, was in zip(rows, before):
        audit.record(session, schedule, action, was, now)
    session.commit()
    state.schedule_changed(min((s.next_run_at for s in rows if s.next_run_at is not None), default=None))
    return rows


def pause_values(body: dict, tz: str, now: datetime) -> dict:
    """{"until", "note", "skip_next"} of a pause request (the API's JSON body or the console's form), for set_pause.

    `until` is read in `tz` (a date without an offset is the schedule's local time) and must be after `now`;
    it and skip_next exclude each other. BadRequest naming the field and the rule (PauseIn's types and bounds).
    """
    values = validate(PauseIn, {k: v for k, v in body.items() if k in PauseIn.model_fields and v not in (None, "")})
    until = values.get("until")
    if until is not None:
        until = checked(timemath.parse_instant, until, tz, field="until")
        if until <= now:
            raise BadRequest(f"until: {format_instant(until)} is not in the future")
        if values.get("skip_next"):
            raise BadRequest("until, skip_next: give one of them (a pause until an instant, or a number of fires to skip)")
    return {"until": until, "note": values.get("note"), "skip_next": values.get("skip_next")}


def matching(session: Session, org_id: str, name_prefix: str | None, tags: dict | None) -> list:
    """The org's schedules whose name starts with `name_prefix` and/or one of whose targets has all `tags`.

    A target has the tags when a machine it names (machines_per_cloud, a machines selector) carries them,
    or a tags selector asks for them, or a machine a tags selector picks carries them.
    """
    query = query_for_org(org_id)
    if name_prefix:
        query = query.where(Schedule.name.startswith(name_prefix, autoescape=True))
    rows = session.scalars(query.order_by(Schedule.name)).all()
    if not tags:
        return rows
    tagged = [m for m in session.execute(select(Machine.id, Machine.cloud_id, Machine.machine_id, Machine.tags)
                                         .where(Machine.org_id == org_id))
              if all((m.tags or {}).get(k) == v for k, v in tags.items())]
    ids = {m.id for m in tagged}
    pairs = {(m.cloud_id, m.machine_id) for m in tagged}

    def targets_tagged(s: Schedule) -> bool:
        if any(tuple(pair) in pairs for pair in s.machines_per_cloud or []):
            return True
        for sel in s.selectors or []:
            if sel["type"] == "machines" and ids & set(sel["ids"]):
                return True
            if sel["type"] == "tags":
                include = sel["include"]
                if all(include.get(k) == v for k, v in tags.items()):
                    return True
                if any(all((m.tags or {}).get(k) == v for k, v in include.items()) for m in tagged):
                    return True
        return False

    return [s for s in rows if targets_tagged(s)]


def delete(session: Session, schedule: Schedule) -> None:
    """Delete a schedule and commit, with its audit entry; its runs and logs stay (a run's record outlives it)."""
    audit.record(session, schedule, "delete")
    session.delete(schedule)
    session.commit()


def query_for_org(org_id: str, name: str | None = None):
    """The select of an org's schedules, optionally the one with exactly this name (the API's ?name=)."""
    query = select(Schedule).where(Schedule.org_id == org_id)
    if name is not None:
        query = query.where(Schedule.name == name)
    return query


class Unsaved:
    """A schedule body that is not stored (a preview): the attributes the time math reads."""

    def __init__(self, given: dict, created_at: datetime, min_interval: timedelta):
        tz = checked(timemath.check_timezone, given.get("timezone") or "UTC")
        self.id = ""  # no id yet: jitter offsets of a body preview are those of a schedule with an empty id
        self.schedule_type = given["schedule_type"]
        self.timezone = tz
        self.schedule_entry = normalize_entry(given["schedule_entry"], self.schedule_type, tz, min_interval,
                                              created_at, given=False)
        for name in ("start_after", "expires"):
            value = given.get(name)
            setattr(self, name, None if value is None else checked(timemath.parse_instant, value, tz, field=name))
        self.created_at = created_at
        self.enabled = given.get("enabled") is not False
        self.max_run_count = given.get("max_run_count")
        self.total_run_count = 0
        self.exclude_calendars = given.get("exclude_calendars") or None
        self.jitter = given.get("jitter") or 0
        self.paused_at = self.paused_until = self.pause_note = None
        self.skip_next = 0


@dataclass
class Preview:
    """Fire times that will run, and (when asked) the ones that will not, each with its reason."""

    times: list
    skipped: list | None = None

    def to_json(self) -> dict:
        out = {"next_run_times": [format_instant(t) for t in self.times]}
        if self.skipped is not None:
            out["skipped"] = [{"at": format_instant(t), **reason} for t, reason in self.skipped]
        return out


def preview_times(given: dict, after_raw, count: int, now: datetime, min_interval: timedelta,
                  created_at: datetime | None = None) -> list[datetime]:
    """The next `count` fire times of a schedule body's timing fields (no calendars), as next_run_at would go."""
    return preview_body(None, None, given, after_raw, count, now, min_interval, created_at=created_at).times


def preview_body(session: Session | None, org_id: str | None, given: dict, after_raw, count: int, now: datetime,
                 min_interval: timedelta, show_skipped: bool = False, created_at: datetime | None = None) -> Preview:
    """The next `count` fires of a schedule body after `after_raw` (default now), as next_run_at would go.

    An interval without start_after is anchored at `created_at`: a stored schedule's creation time
    when it is being edited, else the start of the preview (a schedule created now). The body's
    exclude_calendars are the org's calendars, read on `session`; show_skipped also lists the fires
    they exclude, with the calendar.
    """
    if not given.get("schedule_type") or given.get("schedule_entry") is None:
        raise BadRequest("schedule_type, schedule_entry: are required for a preview")
    tz = given.get("timezone") or "UTC"
    after = now if after_raw is None else checked(timemath.parse_instant, after_raw, tz, field="after")
    probe = Unsaved(given, created_at or after, min_interval)
    if probe.exclude_calendars and session is not None:
        probe.exclude_calendars = _check_calendars(session, org_id, probe.exclude_calendars)
    if probe.jitter:
        _check_jitter({"schedule_type": probe.schedule_type, "schedule_entry": probe.schedule_entry,
                       "start_after": probe.start_after, "timezone": probe.timezone, "jitter": probe.jitter})
    calendars = load_calendars(session, probe) if session is not None else {}
    if after_raw is None and not is_exhausted(probe):
        first_run_at(probe, after, calendars)  # from now, a preview refuses what a create would refuse
    return preview(probe, after, count, show_skipped, calendars)


def preview(s, after: datetime, count: int, show_skipped: bool, calendars: dict | None = None) -> Preview:
    """The next `count` fires of a schedule (stored or not) after `after`: blocked ones (calendars, pause) and
    the next skip_next ones are not fires; with show_skipped they are listed, with why."""
    if is_exhausted(s):
        return Preview([], [] if show_skipped else None)
    skipped: list | None = [] if show_skipped else None
    skip = s.skip_next or 0
    times = timemath.preview(timing(s, calendars), after, count + skip, skipped)
    if skip:
        reason = {"reason": "skip_next", "note": s.pause_note}
        if skipped is not None:
            skipped.extend((t, reason) for t in times[:skip])
            skipped.sort(key=lambda item: item[0])
        times = times[skip:]
    if s.max_run_count is not None:
        times = times[: max(0, s.max_run_count - (s.total_run_count or 0))]
    return Preview(times[:count], skipped[:count] if skipped is not None else None)


def upcoming(s, after: datetime, count: int, calendars: dict | None = None) -> list[datetime]:
    """A stored schedule's next `count` fire times after `after`, as next_run_at goes (none when inactive).

    Bounded by what is left of max_run_count; calendars (see load_calendars), pause and skip_next
    honoured. The same time math as next_run_at and the preview.
    """
    return preview(s, after, count, False, calendars).times


def fires_until(rows, after: datetime, until: datetime, errors: list | None = None,
                calendars: dict | None = None):
    """Yield (instant, schedule) for each fire of `rows` strictly after `after` and before `until`, in time order.

    Lazy: starting costs one next-fire computation per row, and each fire taken one more, so a caller
    that takes n fires pays about n + len(rows) however often the schedules fire (the dashboard
    counts the next 24 hours' fires of every schedule up to a cap). The same time math and
    max_run_count bound as upcoming(), with `calendars` (compiled, by id), pause and skip_next honoured;
    inactive rows yield nothing. A row whose stored timing cannot
    be computed is left out and appended to `errors` as (row, exception) when a list is given,
    else its exception propagates.
    """
    heap: list = []
    for index, s in enumerate(rows):
        try:
            if is_exhausted(s):
                continue
            left = None if s.max_run_count is None else s.max_run_count - (s.total_run_count or 0)
            plan = timing(s, calendars)
            fire = timemath.next_fire(plan, after)
        except Exception as exc:  # noqa: BLE001  (a stored row may hold anything: contain it)
            if errors is None:
                raise
            errors.append((s, exc))
            continue
        if fire is not None and fire < until and (left is None or left > 0):
            heapq.heappush(heap, (fire, index, plan, left, getattr(s, "skip_next", 0) or 0))
    while heap:
        fire, index, plan, left, skip = heapq.heappop(heap)  # index breaks ties, so plans are never compared
        if skip:
            skip -= 1  # skip_next: not a fire, and not counted toward max_run_count
        else:
            yield fire, rows[index]
            left = None if left is None else left - 1
            if left == 0:
                continue
        try:
            following = timemath.next_fire(plan, fire)
        except Exception as exc:  # noqa: BLE001
            if errors is None:
                raise
            errors.append((rows[index], exc))
            continue
        if following is not None and following < until:
            heapq.heappush(heap, (following, index, plan, left, skip))


class _Pause:
    """A pause as a block of the time math: no fire from paused_at until paused_until (None: for ever)."""

    def __init__(self, start: datetime, end: datetime | None, note: str | None):
        self._window = Window(start, end, {"reason": "paused", "until": format_instant(end), "note": note})

    def window(self, t: datetime) -> Window | None:
        w = self._window
        return w if w.start <= t and (w.end is None or t < w.end) else None


def load_calendars(session_or_conn, s) -> dict:
    """The compiled calendars a schedule excludes (an empty dict when it names none)."""
    ids = s.exclude_calendars or []
    return calendar_rules.compiled(session_or_conn, ids) if ids else {}


def timing(s, calendars: dict | None = None) -> Timing:
    """The time math's view of a schedule (a model or any object with the same attributes).

    `calendars`: compiled calendars by id, at least those the schedule names (see load_calendars).
    """
    blocks: tuple = ()
    if s.exclude_calendars and calendars:
        blocks = tuple(calendars[c] for c in s.exclude_calendars if c in calendars)
    if s.paused_at is not None:
        blocks += (_Pause(s.paused_at, s.paused_until, s.pause_note),)
    return Timing(
        schedule_type=s.schedule_type,
        entry=entry_object(s.schedule_type, s.schedule_entry),
        anchor=s.created_at,
        timezone=s.timezone or "UTC",
        start_after=s.start_after,
        expires=s.expires,
        jitter=s.jitter or 0,
        key=s.id or "",
        blocks=blocks,
    )


def is_exhausted(s) -> bool:
    """Whether a schedule can never fire again, whatever the time (disabled, used up, one_off done)."""
    if not s.enabled:
        return True
    if s.max_run_count is not None and (s.total_run_count or 0) >= s.max_run_count:
        return True
    return s.schedule_type == "one_off" and (s.total_run_count or 0) > 0


def next_run_at(s, after: datetime, calendars: dict | None = None) -> datetime | None:
    """When a schedule fires next after `after` (calendars and pause honoured, jitter added), or None when inactive.

    A fire that skip_next will skip is still next_run_at: the dispatcher records it as skipped then.
    """
    if is_exhausted(s):
        return None
    return timemath.next_fire(timing(s, calendars), after)


def is_paused(s, now: datetime) -> bool:
    """Whether a pause holds the schedule at `now` (a pause whose until has passed has ended on its own)."""
    return s.paused_at is not None and (s.paused_until is None or s.paused_until > now)


def pause(s, now: datetime, until: datetime | None, note: str | None, skip_next: int | None) -> None:
    """Pause `s` from now until `until` (None: until resumed), or have it skip its next `skip_next` fires."""
    if skip_next:
        s.skip_next = skip_next
        s.pause_note = note
        if not is_paused(s, now):
            s.paused_at = s.paused_until = None
        return
    s.paused_at, s.paused_until, s.pause_note = now, until, note


def resume(s) -> None:
    """End a pause and forget fires left to skip."""
    s.paused_at = s.paused_until = s.pause_note = None
    s.skip_next = 0


# --- the fire decision ------------------------------------------------------------------------

MISSED_COUNT_CAP = 10_000


@dataclass
class FireDecision:
    """What a due schedule does at `now`: at most one run to queue, runs that end at once, and its new counters.

    ended: (status, scheduled_for, error, event data) of runs recorded without running (missed, skipped).
    """

    run_for: datetime | None = None
    ended: list = field(default_factory=list)
    next_run_at: datetime | None = None
    total_run_count: int = 0
    last_run_at: datetime | None = None
    skip_next: int = 0


def decide(s, now: datetime, busy: bool, calendars: dict | None = None) -> FireDecision:
    """The fire decision for a schedule whose next_run_at is due at `now`.

    - Fires older than misfire_grace are missed: one record carries their count and first and last instant.
    - Fires within the grace coalesce into one run, labelled with the newest of them.
    - skip_next > 0: that run is recorded skipped with the pause note as the reason, and one fewer is left.
    - concurrency forbid while a run is going (`busy`): recorded skipped.
    - Calendar exclusions and a pause are part of the fire times (timemath), so they never reach here as fires.
    Then next_run_at is the first fire after `now` (None once max_run_count is reached).
    """
    plan = timing(s, calendars)
    grace = timedelta(seconds=s.misfire_grace)
    edge = now - grace  # fires before this instant are missed
    out = FireDecision(total_run_count=s.total_run_count or 0, last_run_at=s.last_run_at, skip_next=s.skip_next or 0)
    due = s.next_run_at
    # next_run_at was computed by the same function, unless a calendar or pause changed since: ask again.
    first = due if not plan.blocks or timemath.blocked(plan, due) is None else timemath.next_fire(plan, due)
    newest = following = None
    if first is not None and first <= now:
        recent = first
        if first < edge:
            last = timemath.last_fire_at_or_before(plan, edge - timemath._ONE_US, first)
            count, capped = timemath.count_fires(plan, first, edge, MISSED_COUNT_CAP)
            many = f"{'at least ' if capped else ''}{count} fires"
            error = (f"missed by {(now - first).total_seconds():.0f} s (misfire_grace is {s.misfire_grace} s)"
                     if count == 1 else
                     f"{many} missed, from {format_instant(first)} to {format_instant(last)} "
                     f"(older than misfire_grace, {s.misfire_grace} s)")
            out.ended.append(("missed", first, error, {"missed_count": count, "count_capped": capped,
                                                       "first_missed": format_instant(first),
                                                       "last_missed": format_instant(last)}))
            recent = timemath.next_fire(plan, last)
        if recent is not None and recent <= now:
            following = timemath.next_fire(plan, recent)
            if following is None or following > now:
                newest = recent
            else:  # several fires within the grace: one run, for the newest
                newest = timemath.last_fire_at_or_before(plan, now, following)
                following = None
    if newest is not None:
        if out.skip_next > 0:
            out.skip_next -= 1
            note = s.pause_note or "skip_next was set"
            out.ended.append(("skipped", newest, f"skip_next: {note} ({out.skip_next} more to skip)", {}))
        elif busy:
            out.ended.append(("skipped", newest, "the previous run of this schedule is still going "
                                                 "(concurrency: forbid)", {}))
        else:
            out.run_for = newest
            out.total_run_count += 1
            out.last_run_at = now
    if s.max_run_count is not None and out.total_run_count >= s.max_run_count:
        out.next_run_at = None
    elif s.schedule_type == "one_off" and out.total_run_count > 0:
        out.next_run_at = None
    elif following is not None and following > now:
        out.next_run_at = following
    elif first is not None and first > now:
        out.next_run_at = first
    else:
        out.next_run_at = timemath.next_fire(plan, now) if s.enabled else None
    return out


def first_run_at(s, now: datetime, calendars: dict | None = None) -> datetime | None:
    """next_run_at of a schedule a request creates or edits; 400 when its next fire would be after year 9999.

    With no expiry, calendar or pause, an enabled interval or crontab schedule that is not used up always
    fires again, unless its next fire falls past the last instant a date can hold (the time math then finds none).
    """
    fire = next_run_at(s, now, calendars)
    if fire is None and not is_exhausted(s) and s.expires is None and s.schedule_type != "one_off" \
            and not s.exclude_calendars and s.paused_at is None:
        raise BadRequest("schedule_entry: its next fire time would be after 9999-12-31T23:59:59Z, "
                         "the last instant cloudcron supports")
    return fire


def to_json(s, now: datetime | None = None) -> dict:
    """A schedule as the API answers it; `now` (default: the clock) tells whether a pause still holds."""
    paused = is_paused(s, now or datetime.now(timezone.utc))
    return {
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "action": s.action,
        "script_id": s.script_id,
        "params": s.params,
        "machines_per_cloud": s.machines_per_cloud,
        "selectors": s.selectors,
        "schedule_type": s.schedule_type,
        "schedule_entry": s.schedule_entry,
        "enabled": s.enabled,
        "run_immediately": s.run_immediately,
        "start_after": format_instant(s.start_after),
        "expires": format_instant(s.expires),
        "max_run_count": s.max_run_count,
        "timezone": s.timezone,
        "misfire_grace": s.misfire_grace,
        "concurrency": s.concurrency,
        "timeout": s.timeout,
        "exclude_calendars": s.exclude_calendars or [],
        "jitter": s.jitter or 0,
        "notify": getattr(s, "notify", None),
        "retries": s.retries,
        "paused": paused,
        "paused_until": format_instant(s.paused_until) if paused else None,
        "pause_note": s.pause_note if paused or s.skip_next else None,
        "skip_next": s.skip_next or 0,
        "active": s.next_run_at is not None,
        "next_run_at": format_instant(s.next_run_at),
        "total_run_count": s.total_run_count,
        "last_run_at": format_instant(s.last_run_at),
        "last_error": s.last_error,
        "created_at": format_instant(s.created_at),
        "updated_at": format_instant(s.updated_at),
    }
