"""Schedule rules: merge a client's fields onto the stored ones, check them as a whole, and compute next_run_at."""
from __future__ import annotations

import heapq
from datetime import datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import timemath
from .crypto import new_id
from .errors import BadRequest, Conflict
from .models import Cloud, Machine, Schedule, Script
from .schemas import ScheduleIn
from .timemath import TimeSpecError, Timing, format_instant
from .validation import check_fields, loads, validate

ALIASES = {"cronjob_type": "schedule_type", "cronjob_entry": "schedule_entry", "task_enabled": "enabled"}
READ_ONLY = {"id", "active", "next_run_at", "total_run_count", "last_run_at", "last_error", "created_at", "updated_at"}
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
}
# Fields a stored schedule holds as columns, in answer order.
COLUMNS = ("name", "description", "action", "script_id", "params", "machines_per_cloud", "selectors",
           "schedule_type", "schedule_entry", "enabled", "run_immediately", "start_after", "expires",
           "max_run_count", "timezone", "misfire_grace", "concurrency", "timeout")


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


def normalize_entry(raw, schedule_type: str, tz: str, min_interval: timedelta, now: datetime, given: bool):
    """The stored form of an entry: a dict for interval/crontab, an ISO 8601 UTC string for one_off."""
    raw = _entry_value(raw, schedule_type)
    if schedule_type == "interval":
        return checked(timemath.normalize_interval, raw, min_interval=min_interval)
    if schedule_type == "crontab":
        return checked(timemath.normalize_crontab, raw)
    when = checked(timemath.parse_instant, raw, tz, field="schedule_entry")
    if given and when <= now:
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
    for field in ("start_after", "expires"):
        if given.get(field) is not None:
            merged[field] = checked(timemath.parse_instant, given[field], tz, field=field)
    if given.get("expires") is not None and merged["expires"] <= now:
        raise BadRequest(f"expires: {format_instant(merged['expires'])} is not in the future")
    if (given.get("start_after") is not None or given.get("expires") is not None) and merged["start_after"] \
            and merged["expires"] and merged["start_after"] >= merged["expires"]:
        raise BadRequest("start_after: must be before expires")

    entry_given = "schedule_entry" in given
    if entry_given or "schedule_type" in given or current is None:
        merged["schedule_entry"] = normalize_entry(
            merged["schedule_entry"], merged["schedule_type"], tz, min_interval, now, given=entry_given
        )
    return merged


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


def _check_name_free(session: Session, org_id: str, name: str, except_id: str | None = None) -> None:
    existing = session.scalar(select(Schedule.id).where(Schedule.org_id == org_id, Schedule.name == name))
    if existing is not None and existing != except_id:
        raise Conflict(f"name: a schedule named '{name}' already exists")


def store(state, session: Session, org_id: str, given: dict, current: Schedule | None, now: datetime) -> Schedule:
    """Create (current=None) or edit a schedule of `org_id` from a client's parsed fields, the one way every writer does.

    `given` is what parse_fields returns (only the fields the client sent; None clears a field).
    The fields are merged onto `current` (or the defaults) and checked as a whole (build), the name
    must be free in the org, next_run_at is recomputed (an edit clears last_error), and a new enabled schedule with
    run_immediately gets its immediate run. Then the session is committed, the dispatcher woken
    (state.schedule_changed) and the immediate run enqueued: queue I/O only after the commit.
    Raises BadRequest (400) naming the field and the rule, Conflict (409) on a duplicate name;
    nothing is written when it raises. Returns the stored schedule.
    """
    from .runs import on_schedule_created

    values = build(session, org_id, given, current, now, state.config.min_interval)
    if current is None or values["name"] != current.name:
        _check_name_free(session, org_id, values["name"], except_id=current.id if current else None)
    run = None
    if current is None:
        schedule = Schedule(id=new_id(), org_id=org_id, total_run_count=0, created_at=now, updated_at=now,
                            **{c: values[c] for c in COLUMNS})
        schedule.next_run_at = first_run_at(schedule, now)  # before add: a 400 leaves the session as it was
        session.add(schedule)
        run = on_schedule_created(session, schedule, now)
    else:
        # Computed on the merged values before the stored row changes, for the same reason.
        fire = first_run_at(SimpleNamespace(**values, created_at=current.created_at,
                                            total_run_count=current.total_run_count), now)
        schedule = current
        for column in COLUMNS:
            setattr(schedule, column, values[column])
        schedule.updated_at = now
        schedule.next_run_at = fire
        schedule.last_error = None  # the edit passed every check and next_run_at was computed again
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"name: a schedule named '{schedule.name}' already exists") from None
    state.schedule_changed(schedule.next_run_at)
    if run is not None:
        state.enqueue([run.id])
    return schedule


def delete(session: Session, schedule: Schedule) -> None:
    """Delete a schedule and commit; its runs and logs stay (a run's record outlives its schedule)."""
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
        self.schedule_type = given["schedule_type"]
        self.timezone = tz
        self.schedule_entry = normalize_entry(given["schedule_entry"], self.schedule_type, tz, min_interval,
                                              created_at, given=False)
        for field in ("start_after", "expires"):
            value = given.get(field)
            setattr(self, field, None if value is None else checked(timemath.parse_instant, value, tz, field=field))
        self.created_at = created_at
        self.enabled = given.get("enabled") is not False
        self.max_run_count = given.get("max_run_count")
        self.total_run_count = 0


def preview_times(given: dict, after_raw, count: int, now: datetime, min_interval: timedelta,
                  created_at: datetime | None = None) -> list[datetime]:
    """The next `count` fire times of a schedule body after `after_raw` (default now), as next_run_at would go.

    An interval without start_after is anchored at `created_at`: a stored schedule's creation time
    when it is being edited, else the start of the preview (a schedule created now).
    """
    if not given.get("schedule_type") or given.get("schedule_entry") is None:
        raise BadRequest("schedule_type, schedule_entry: are required for a preview")
    tz = given.get("timezone") or "UTC"
    after = now if after_raw is None else checked(timemath.parse_instant, after_raw, tz, field="after")
    probe = Unsaved(given, created_at or after, min_interval)
    if is_exhausted(probe):
        return []
    if after_raw is None:
        first_run_at(probe, after)  # from now, a preview refuses what a create would refuse
    times = timemath.preview(timing(probe), after, count)
    return times if probe.max_run_count is None else times[: probe.max_run_count]


def upcoming(s, after: datetime, count: int) -> list[datetime]:
    """A stored schedule's next `count` fire times after `after`, as next_run_at goes (none when inactive).

    Bounded by what is left of max_run_count. The same time math as next_run_at and the preview.
    """
    if is_exhausted(s):
        return []
    times = timemath.preview(timing(s), after, count)
    if s.max_run_count is not None:
        times = times[: max(s.max_run_count - (s.total_run_count or 0), 0)]
    return times


def fires_until(rows, after: datetime, until: datetime, errors: list | None = None):
    """Yield (instant, schedule) for each fire of `rows` strictly after `after` and before `until`, in time order.

    Lazy: starting costs one next-fire computation per row, and each fire taken one more, so a caller
    that takes n fires pays about n + len(rows) however often the schedules fire (the dashboard
    counts the next 24 hours' fires of every schedule up to a cap). The same time math and
    max_run_count bound as upcoming(); inactive rows yield nothing. A row whose stored timing cannot
    be computed is left out and appended to `errors` as (row, exception) when a list is given,
    else its exception propagates.
    """
    heap: list = []
    for index, s in enumerate(rows):
        try:
            if is_exhausted(s):
                continue
            left = None if s.max_run_count is None else s.max_run_count - (s.total_run_count or 0)
            plan = timing(s)
            fire = timemath.next_fire(plan, after)
        except Exception as exc:  # noqa: BLE001  (a stored row may hold anything: contain it)
            if errors is None:
                raise
            errors.append((s, exc))
            continue
        if fire is not None and fire < until and (left is None or left > 0):
            heapq.heappush(heap, (fire, index, plan, left))
    while heap:
        fire, index, plan, left = heapq.heappop(heap)  # index breaks ties, so plans are never compared
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
            heapq.heappush(heap, (following, index, plan, left))


def timing(s) -> Timing:
    """The time math's view of a schedule (a model or any object with the same attributes)."""
    return Timing(
        schedule_type=s.schedule_type,
        entry=entry_object(s.schedule_type, s.schedule_entry),
        anchor=s.created_at,
        timezone=s.timezone or "UTC",
        start_after=s.start_after,
        expires=s.expires,
    )


def is_exhausted(s) -> bool:
    """Whether a schedule can never fire again, whatever the time (disabled, used up, one_off done)."""
    if not s.enabled:
        return True
    if s.max_run_count is not None and (s.total_run_count or 0) >= s.max_run_count:
        return True
    return s.schedule_type == "one_off" and (s.total_run_count or 0) > 0


def next_run_at(s, after: datetime) -> datetime | None:
    """When a schedule fires next after `after`, or None when it is inactive."""
    if is_exhausted(s):
        return None
    return timemath.next_fire(timing(s), after)


def first_run_at(s, now: datetime) -> datetime | None:
    """next_run_at of a schedule a request creates or edits; 400 when its next fire would be after year 9999.

    With no expiry, an enabled interval or crontab schedule that is not used up always fires again, unless
    its next fire falls past the last instant a date can hold (the time math then finds none).
    """
    fire = next_run_at(s, now)
    if fire is None and not is_exhausted(s) and s.expires is None and s.schedule_type != "one_off":
        raise BadRequest("schedule_entry: its next fire time would be after 9999-12-31T23:59:59Z, "
                         "the last instant cloudcron supports")
    return fire


def to_json(s) -> dict:
    """A schedule as the API answers it."""
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
        "active": s.next_run_at is not None,
        "next_run_at": format_instant(s.next_run_at),
        "total_run_count": s.total_run_count,
        "last_run_at": format_instant(s.last_run_at),
        "last_error": s.last_error,
        "created_at": format_instant(s.created_at),
        "updated_at": format_instant(s.updated_at),
    }
