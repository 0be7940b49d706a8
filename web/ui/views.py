"""The console's pages. Each view reads and writes through the service functions the REST API uses
(schedules.store, runs.run_now, resources.*, the to_json serialisers) and scopes every lookup to
the signed-in org, so another org's resource is a 404 here exactly as in the API.
"""
from __future__ import annotations

import logging
import re
from itertools import islice
from datetime import timedelta
from urllib.parse import urlencode
from zoneinfo import available_timezones

from flask import current_app, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError
from sqlalchemy import false, func, or_, select
from werkzeug.exceptions import HTTPException

from .. import audit, calendars, channels, db, resources, runs, schedules, state, utcnow
from ..api import get_owned
from ..auth import set_actor
from ..cadence import describe
from ..crypto import hash_token
from ..errors import APIError
from ..models import AuditEntry, Channel, Cloud, Delivery, Event, Key, Machine, Org, Run, Schedule, Script
from ..notify import deliveries_json, delivery_json, send_test
from ..schemas import CloudIn, KeyIn, MachineIn, ScriptIn
from ..timemath import TimeSpecError, format_instant, parse_instant
from ..validation import loads
from . import CONTENT_SECURITY_POLICY, HTMX_VERSION, bp, csrf, forms, sessions

log = logging.getLogger(__name__)

PAGE = 50
CHANGES_SHOWN = 10  # audit entries on a schedule's page (all of them: GET /api/v1/audit?id=...)
MAX_OFFSET = 10**9  # the API's bound on ?offset=
MAX_NAME = 255  # schemas.Name: no schedule name is longer
DUE_COUNTED = 500  # fires due in 24 h are counted up to here ("500+"): one schedule every second is 86,400
PUBLIC = {"ui.signin", "ui.static"}
ACTIVE = ("queued", "running")
EVENT_TYPES = ("schedule_started", "schedule_finished", "machine_action_succeeded", "machine_action_failed",
               "script_finished", "schedule_missed", "schedule_skipped", "schedule_interrupted", "machine_retried")
STATUS_FILTERS = {"enabled": "enabled", "disabled": "disabled", "paused": "paused", "active": "with a next run",
                  "inactive": "without a next run", "failing": "last run did not succeed"}
PAUSE_FORM = ("until", "note", "skip_next")  # the pause form's fields: the API's pause body
CHANNEL_FORM = ("name", "kind", "url", "secret")


# ---------------------------------------------------------------- request plumbing

@bp.before_request
def _before():
    if request.endpoint in PUBLIC:
        if request.method == "POST":
            csrf.protect()
        return None
    org_id = _signed_in_org()
    if org_id is None:
        return redirect(url_for("ui.signin", next=request.full_path.rstrip("?")))
    g.org_id = org_id
    if request.method == "POST":
        csrf.protect()
    return None


def _signed_in_org() -> str | None:
    """The org of the cookie's session, or None (no session, signed out, expired, or the token was revoked)."""
    sid = session.get("sid")
    # A short read of its own: a POST's writing session starts only when the view needs it.
    actor = sessions.actor_of(state().db, sid, utcnow()) if isinstance(sid, str) else None
    if actor is None:
        session.clear()
        return None
    set_actor(actor)  # the audit log records the console's changes as made by the session's token
    return actor.org_id


def _reader():
    """The request's session as a reader, for POSTs that only read (the preview): no write lock taken."""
    if "db" not in g:
        g.db = state().db.session(write=False)
    return g.db


@bp.after_request
def _headers(resp):
    resp.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


@bp.app_template_global()
def instant(dt, tz: str | None = None) -> str:
    """An aware datetime for people: 'YYYY-MM-DD HH:MM:SS' in UTC (or `tz`), '' for None."""
    if dt is None:
        return ""
    from zoneinfo import ZoneInfo

    return dt.astimezone(ZoneInfo(tz or "UTC")).strftime("%Y-%m-%d %H:%M:%S") + ("" if tz else " UTC")


@bp.app_template_global()
def relative(dt) -> str:
    """'in 3 h', '5 min ago' relative to now."""
    if dt is None:
        return ""
    seconds = (dt - utcnow()).total_seconds()
    span = abs(seconds)
    if span < 60:
        text = f"{int(span)} s"
    elif span < 3600:
        text = f"{int(span // 60)} min"
    elif span < 86400 * 2:
        text = f"{span / 3600:.1f} h".replace(".0 h", " h")
    else:
        text = f"{int(span // 86400)} days"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


@bp.app_context_processor
def _globals():
    return {"htmx_version": HTMX_VERSION, "org_name": _org_name()}


def _org_name():
    org_id = g.get("org_id")
    if org_id is None:
        return None
    with state().db.session() as s:
        return s.scalar(select(Org.name).where(Org.id == org_id))


@bp.errorhandler(APIError)
def _api_error(exc: APIError):
    return render_template("error.html", status=exc.status, message=exc.message), exc.status, exc.headers


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError):
    message = f"form refused: {exc.description} Reload the page and send the form again."
    return render_template("error.html", status=400, message=message), 400


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    """A refusal werkzeug raises inside a console page (a form over the body limit, 405) as a page, not JSON."""
    if exc.code == 413:
        message = f"request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    else:
        message = exc.description or exc.name
    return render_template("error.html", status=exc.code, message=message), exc.code


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    # As the API's handler: never a traceback in an answer; the log keeps it for the operator.
    log.exception("unhandled error in the console")
    message = "internal error; see the service log"
    try:
        return render_template("error.html", status=500, message=message), 500
    except Exception:  # noqa: BLE001  (the page itself needs the database, which may be what failed)
        return message, 500, {"Content-Type": "text/plain; charset=utf-8"}


def _offset() -> int:
    """The page's ?offset= (0 when absent or not a whole number), at most MAX_OFFSET as in the API.

    Without the bound a long number reaches the database, which cannot hold it (a 500).
    """
    raw = request.args.get("offset") or ""
    return min(int(raw), MAX_OFFSET) if raw.isascii() and raw.isdigit() else 0


def console_path(target: str | None) -> str | None:
    """`target` when it is a path inside the console, else None: what a `next` field may redirect to.

    Only "/ui/..." with no backslash and no control character: browsers read "/\\host" as another
    site and drop tabs and newlines from URLs, and a CR or LF would split the Location header.
    """
    if not target or not target.startswith("/ui/") or "\\" in target:
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return None
    return target


def _back(default: str):
    """Where a form asked to return to (a console path only), else `default`."""
    return redirect(console_path(request.form.get("next")) or default)


# ---------------------------------------------------------------- sign-in

@bp.route("/signin", methods=["GET", "POST"])
def signin():
    error = None
    next_url = console_path(request.values.get("next")) or url_for("ui.dashboard")
    if request.method == "POST":
        token = (request.form.get("token") or "").strip()
        sid = sessions.open_session(state().db, hash_token(token), utcnow(),
                                    state().config.ui_session_lifetime) if token else None
        if sid:
            if isinstance(session.get("sid"), str):  # signing in again: the session it replaces ends
                sessions.close_session(state().db, session["sid"])
            session.clear()  # nothing from before sign-in carries over
            session.permanent = True
            session["sid"] = sid
            return redirect(next_url)
        error = "token: unknown or revoked token" if token else "token: is required"
    return render_template("signin.html", error=error, next=next_url), (401 if error else 200)


@bp.post("/signout")
def signout():
    sessions.close_session(state().db, session["sid"])  # _before checked that it is one
    session.clear()
    return redirect(url_for("ui.signin"))


# ---------------------------------------------------------------- dashboard

def _timing(sch: Schedule, now, count: int, calendars: dict | None = None) -> tuple[str, list, str | None]:
    """(cadence in words, the next `count` fires as {"at", "note"}, None), or ("", [], error) when the stored
    timing cannot be computed. A fire a calendar excludes, a pause holds or skip_next skips carries its
    reason in "note"; `calendars` are the schedule's compiled calendars (schedules.load_calendars).

    A stored row may hold what the API would refuse (an operator's edit, a zone tzdata has
    dropped): that schedule shows its error and every other row of the page still renders, as the
    dispatcher contains such a row rather than stopping.
    """
    try:
        preview = schedules.preview(sch, now, count, True, calendars)
        timeline = sorted([{"at": t, "note": None} for t in preview.times]
                          + [{"at": t, "note": _skip_note(reason)} for t, reason in preview.skipped],
                          key=lambda fire: fire["at"])[:count]
        return describe(sch.schedule_type, sch.schedule_entry, sch.timezone), timeline, None
    except Exception as exc:  # noqa: BLE001  (any stored value can be wrong: contain the row)
        return "", [], _timing_error(exc)


def _timing_error(exc: Exception) -> str:
    detail = str(exc) if isinstance(exc, (TimeSpecError, APIError)) else f"{type(exc).__name__}: {exc}"
    return f"timing cannot be computed ({detail})"


@bp.get("/")
def dashboard():
    s, org, now = db(), g.org_id, utcnow()
    counts = runs.status_counts(s, org, now - timedelta(hours=24))
    horizon = now + timedelta(hours=24)
    active = s.scalars(schedules.query_for_org(org).where(Schedule.next_run_at.is_not(None),
                                                            Schedule.next_run_at < horizon)).all()
    # In time order and lazily: the work is about one fire computation per fire counted, so a
    # thousand schedules firing every minute cost DUE_COUNTED computations, not a thousand times it.
    errors: list = []
    compiled = calendars.compiled(s, {c for sch in active for c in sch.exclude_calendars or []})
    fires = schedules.fires_until(active, now, horizon, errors=errors, calendars=compiled)
    due = list(islice(fires, DUE_COUNTED))
    capped = next(fires, None) is not None
    unreadable = [(sch, _timing_error(exc)) for sch, exc in errors]
    last = runs.last_finished(s, org)
    names = dict(s.execute(select(Schedule.id, Schedule.name).where(Schedule.org_id == org)).all())
    failing = sorted(((names[sid], sid, run) for sid, run in last.items()
                      if sid in names and run.status != "succeeded"), key=lambda t: t[2].created_at, reverse=True)
    backlog, oldest = runs.backlog(s, org)
    return render_template("dashboard.html", counts=counts, total=sum(counts.values()), due=due[:20],
                           due_count=len(due), due_capped=capped,
                           failing=failing, backlog=backlog, oldest=oldest, unreadable=unreadable)


# ---------------------------------------------------------------- schedules

def _machine_names(s, org: str) -> dict:
    return {(m.cloud_id, m.machine_id): m.name or m.machine_id
            for m in s.scalars(select(Machine).where(Machine.org_id == org))}


def _targets_text(sch: Schedule, names: dict) -> list[str]:
    out = [names.get((c, m), m) for c, m in sch.machines_per_cloud or []]
    for sel in sch.selectors or []:
        if sel["type"] == "tags":
            out.append("tags " + ", ".join(f"{k}={v}" for k, v in sel["include"].items()))
        else:
            out.append(f"{len(sel['ids'])} machine(s) by id")
    return out


@bp.get("/schedules")
def schedule_list():
    s, org = db(), g.org_id
    q = (request.args.get("q") or "").strip()
    status = request.args.get("status") or ""
    offset = _offset()
    query = schedules.query_for_org(org)
    if len(q) > MAX_NAME:
        # No name contains a longer text, and SQLite refuses LIKE patterns past 50,000 bytes.
        query = query.where(false())
    elif q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Schedule.name.ilike(f"%{escaped}%", escape="\\"))
    if status == "enabled":
        query = query.where(Schedule.enabled.is_(True))
    elif status == "disabled":
        query = query.where(Schedule.enabled.is_(False))
    elif status == "paused":  # as schedules.is_paused: a pause whose until has passed has ended on its own
        query = query.where(Schedule.paused_at.is_not(None),
                            or_(Schedule.paused_until.is_(None), Schedule.paused_until > utcnow()))
    elif status == "active":
        query = query.where(Schedule.next_run_at.is_not(None))
    elif status == "inactive":
        query = query.where(Schedule.next_run_at.is_(None))
    elif status == "failing":
        failing = [sid for sid, run in runs.last_finished(s, org).items() if run.status != "succeeded"]
        query = query.where(Schedule.id.in_(failing))
    total = s.scalar(select(func.count()).select_from(query.subquery()))
    rows = s.scalars(query.order_by(Schedule.created_at.desc(), Schedule.id.desc()).limit(PAGE).offset(offset)).all()
    strips = runs.recent_outcomes(s, org, [r.id for r in rows], 10)
    names = _machine_names(s, org)
    now = utcnow()
    items = []
    for r in rows:
        cadence, _next, error = _timing(r, now, 1)
        items.append({"s": r, "cadence": cadence, "error": error, "targets": _targets_text(r, names),
                      "strip": strips.get(r.id, []), "paused": schedules.is_paused(r, now)})

    def page(at):
        return url_for("ui.schedule_list") + "?" + urlencode({"q": q, "status": status, "offset": at})

    return render_template("schedules.html", items=items, q=q, status=status, statuses=STATUS_FILTERS, total=total,
                           prev=page(max(offset - PAGE, 0)) if offset else None,
                           next=page(offset + PAGE) if offset + PAGE < total else None,
                           here=request.full_path.rstrip("?"))


def _choices(s, org: str, current: Schedule | None = None) -> dict:
    """What the form offers: the org's scripts and machines (plus targets the schedule names but no row knows)."""
    scripts = s.scalars(select(Script).where(Script.org_id == org).order_by(Script.name)).all()
    clouds = {c.id: c for c in s.scalars(select(Cloud).where(Cloud.org_id == org).order_by(Cloud.title))}
    machines = s.scalars(select(Machine).where(Machine.org_id == org)
                         .order_by(Machine.cloud_id, Machine.name, Machine.machine_id)).all()
    targets = [{"value": f"{m.cloud_id} {m.machine_id}", "label": m.name or m.machine_id,
                "cloud": clouds[m.cloud_id].title if m.cloud_id in clouds else m.cloud_id,
                "detail": m.host or ", ".join(m.public_ips or []) or m.state or "",
                # A plain SSH host has no provider to start or stop it: a power action fails at every run.
                "ssh_only": m.cloud_id in clouds and clouds[m.cloud_id].provider == "other"} for m in machines]
    known = {t["value"] for t in targets}
    for c, m in (current.machines_per_cloud if current else []) or []:
        if f"{c} {m}" not in known:
            targets.append({"value": f"{c} {m}", "label": m, "cloud": clouds[c].title if c in clouds else c,
                            "detail": "not listed yet"})
    return {"scripts": scripts, "targets": targets, "actions": forms.ACTIONS, "periods": forms.PERIODS,
            "types": forms.TYPES, "concurrency": forms.CONCURRENCY, "timezones": sorted(available_timezones())}


def _no_date(values: dict) -> bool:
    """A one_off whose date is still empty: the preview asks for the date rather than showing an error."""
    return values.get("schedule_type") == "one_off" and not values.get("one_off")


def _preview(values: dict, current: Schedule | None, count: int = 10):
    """(fire times, error) for the form's timing fields, from the API's preview function.

    A one_off whose date is still empty has neither: the preview asks for the date (the API's
    "schedule_type, schedule_entry: are required" reads as a fault in the type just chosen).
    """
    if _no_date(values):
        return [], None
    body = forms.to_fields(values)  # the whole timing, as a new body
    # Enabled or not, the preview answers "when would it fire": the form shows the enabled box beside it.
    timing = {k: body.get(k) for k in ("schedule_type", "schedule_entry", "timezone", "start_after", "expires",
                                       "max_run_count")}
    try:
        forms.check_text(values)
        given = schedules.parse_fields(timing)
        times = schedules.preview_times(given, None, count, utcnow(), state().config.min_interval,
                                        created_at=current.created_at if current else None)
    except APIError as exc:
        return [], exc.message
    return times, None


def _form_page(values: dict, current: Schedule | None, error: str | None = None, status: int = 200):
    s, org = db(), g.org_id
    field = forms.error_field(error, values) if error else None
    # The preview is part of the page, so it is there without JavaScript too (the Preview button).
    times, preview_error = _preview(values, current)
    return render_template("schedule_form.html", values=values, current=current, error=error, error_field=field,
                           times=times, preview_error=preview_error, tz=values.get("timezone") or "UTC",
                           no_date=_no_date(values),
                           **_choices(s, org, current)), status


def _previewing() -> bool:
    """A no-JavaScript Preview press: render, store nothing, and take no write lock."""
    if request.method == "POST" and "preview" in request.form:
        _reader()
        return True
    return False


@bp.route("/schedules/new", methods=["GET", "POST"])
def schedule_new():
    previewing = _previewing()
    if request.method == "GET":
        return _form_page(forms.initial(), None)
    values = forms.posted(request.form)
    if previewing:
        return _form_page(values, None)
    try:
        forms.check_text(values)
        given = schedules.parse_fields(forms.to_fields(values))
        sch = schedules.store(state(), db(), g.org_id, given, None, utcnow())
    except APIError as exc:
        db().rollback()
        return _form_page(values, None, exc.message, exc.status)
    return redirect(url_for("ui.schedule_page", id_=sch.id))


@bp.route("/schedules/<id_>/edit", methods=["GET", "POST"])
def schedule_edit(id_):
    previewing = _previewing()
    sch = get_owned(Schedule, id_, "schedule")
    before = forms.initial(sch)
    if request.method == "GET":
        # A stored timing the time math cannot read is said at the top of the form, to be corrected here.
        return _form_page(before, sch, _timing(sch, utcnow(), 1)[2])
    values = forms.posted(request.form)
    if previewing:
        return _form_page(values, sch)
    try:
        forms.check_text(values)
        given = schedules.parse_fields(forms.to_fields(values, before))
        schedules.store(state(), db(), g.org_id, given, sch, utcnow())
    except APIError as exc:
        db().rollback()
        return _form_page(values, get_owned(Schedule, id_, "schedule"), exc.message, exc.status)
    return redirect(url_for("ui.schedule_page", id_=sch.id))


@bp.post("/schedules/preview")
def schedule_preview():
    """The live preview (an htmx fragment): the next fires of the form's timing fields, or the API's error."""
    current = None
    _reader()
    if request.form.get("schedule_id"):
        forms.check_text({"schedule_id": request.form["schedule_id"]})
        current = get_owned(Schedule, request.form["schedule_id"], "schedule")
    values = forms.posted(request.form)
    times, error = _preview(values, current)
    return render_template("_preview.html", times=times, preview_error=error, tz=values["timezone"] or "UTC",
                           no_date=_no_date(values))


def _skip_note(reason: dict) -> str:
    """Why a fire will not run, in a few words."""
    if reason["reason"] == "calendar":
        return f"excluded by {reason['calendar']}: {reason['entry']}"
    note = f": {reason['note']}" if reason.get("note") else ""
    return ("paused" if reason["reason"] == "paused" else "skipped (skip_next)") + note


def _schedule_page(sch: Schedule, pause_error: str | None = None, pause_values: dict | None = None,
                   status: int = 200):
    """A schedule's page; a refused pause form comes back filled in, with the API's error by its field."""
    s, org, id_ = db(), g.org_id, sch.id
    offset = _offset()
    query = runs.runs_query(org, id_)
    total = s.scalar(select(func.count()).select_from(query.subquery()))
    run_rows = s.scalars(query.order_by(Run.created_at.desc(), Run.id.desc()).limit(PAGE).offset(offset)).all()
    now = utcnow()
    # Each fire as {"at", "note"}: a fire a calendar excludes, a pause holds or skip_next skips has its reason.
    cadence, timeline, timing_error = _timing(sch, now, 10, schedules.load_calendars(s, sch))
    script = s.get(Script, sch.script_id) if sch.script_id else None
    # Who changed it lately (the audit log, newest first): the page answers "who changed this, and when".
    changes = s.scalars(audit.query(org, resource="schedule", resource_id=id_)
                        .order_by(AuditEntry.time.desc(), AuditEntry.id.desc()).limit(CHANGES_SHOWN)).all()
    return render_template("schedule.html", s=sch, data=schedules.to_json(sch, now), script=script,
                           cadence=cadence, timing_error=timing_error,
                           targets=_targets_text(sch, _machine_names(s, org)), timeline=timeline, runs=run_rows,
                           total=total, offset=offset, page=PAGE, changes=changes,
                           paused=schedules.is_paused(sch, now), pause_error=pause_error,
                           pause_field=_pause_field(pause_error), pause_values=pause_values or {}), status


def _pause_field(error: str | None) -> str | None:
    """The pause form's field an API error names ("until: ... is not in the future"), or None."""
    first = (error or "").split(":", 1)[0].split(",")[0].strip()
    return first if first in PAUSE_FORM else None


@bp.get("/schedules/<id_>")
def schedule_page(id_):
    return _schedule_page(get_owned(Schedule, id_, "schedule"))


@bp.post("/schedules/<id_>/pause")
def schedule_pause(id_):
    """Pause a schedule until an instant (its own timezone's local time) or until resumed, or skip its next
    fires: the API's pause body, read and stored by the same functions (audit entry included)."""
    sch = get_owned(Schedule, id_, "schedule")
    values = {k: (request.form.get(k) or "").strip() for k in PAUSE_FORM}
    try:
        forms.check_text(values)
        now = utcnow()
        body = {**values, "skip_next": forms._number(values["skip_next"]) if values["skip_next"] else None}
        schedules.set_pause(state(), db(), [sch], now, **schedules.pause_values(body, sch.timezone, now))
    except APIError as exc:
        db().rollback()
        return _schedule_page(get_owned(Schedule, id_, "schedule"), exc.message, values, exc.status)
    return _back(url_for("ui.schedule_page", id_=id_))


@bp.post("/schedules/<id_>/resume")
def schedule_resume(id_):
    """End a schedule's pause and forget the fires it had left to skip (as POST /schedules/<id>/resume)."""
    sch = get_owned(Schedule, id_, "schedule")
    schedules.set_pause(state(), db(), [sch], utcnow(), resume_them=True)
    return _back(url_for("ui.schedule_page", id_=id_))


@bp.post("/schedules/<id_>/run")
def schedule_run(id_):
    run = runs.run_now(state(), db(), get_owned(Schedule, id_, "schedule"), utcnow())
    return redirect(url_for("ui.run_page", id_=run.id))


@bp.post("/schedules/<id_>/enabled")
def schedule_enabled(id_):
    sch = get_owned(Schedule, id_, "schedule")
    given = schedules.parse_fields({"enabled": request.form.get("enabled") == "true"})
    schedules.store(state(), db(), g.org_id, given, sch, utcnow())
    return _back(url_for("ui.schedule_page", id_=id_))


@bp.route("/schedules/<id_>/delete", methods=["GET", "POST"])
def schedule_delete(id_):
    sch = get_owned(Schedule, id_, "schedule")
    if request.method == "GET":
        return render_template("confirm_delete.html", what="schedule", name=sch.name,
                               note="Its runs and logs stay readable; it will not fire again.",
                               action=url_for("ui.schedule_delete", id_=id_),
                               cancel=url_for("ui.schedule_page", id_=id_))
    schedules.delete(db(), sch)
    return redirect(url_for("ui.schedule_list"))


# ---------------------------------------------------------------- runs

# The marker runner.cap_text puts where it cut a machine's output.
CAP_MARKER = re.compile(r"\n?\[cloudcron: \d+ bytes of output truncated\]\n?")


@bp.get("/runs/<id_>")
def run_page(id_):
    s = db()
    run = get_owned(Run, id_, "run")
    data = runs.run_json(run, runs.machines_of(s, id_))
    sch = s.get(Schedule, run.schedule_id)
    names = {m.id: m.name for m in s.scalars(select(Machine).where(Machine.org_id == g.org_id))}
    for m in data["machines"]:
        m["name"] = names.get(m["machine_key"]) or m["machine_id"] or m["machine_key"]
    # While the run goes on the page refreshes itself every second. A machine's output is written
    # once, with its final status, so each refresh names the rows whose output the page already
    # holds (?shown=1.3) and gets back empty elements that htmx swaps for the ones it has
    # (hx-preserve), not up to 512 KiB per machine again.
    done = [i for i, m in enumerate(data["machines"], 1) if m["status"] != "running"]
    return render_template("run.html", run=run, data=data, schedule=sch, running=run.status in ACTIVE,
                           shown=_shown_rows(request.args.get("shown")), done=".".join(map(str, done)),
                           deliveries=deliveries_json(s, id_))


def _shown_rows(raw: str | None) -> set[int]:
    """The rows ?shown= names ("1.3.4"); nothing when it is not such a list."""
    parts = (raw or "").split(".")
    return {int(p) for p in parts} if all(p.isascii() and p.isdigit() and len(p) < 7 for p in parts) else set()


@bp.app_template_filter("output_parts")
def output_parts(text):
    """Split captured output around the truncation marker the worker inserts, so the page can mark it."""
    parts = re.split(f"({CAP_MARKER.pattern})", text or "")
    return [(p, bool(CAP_MARKER.fullmatch(p))) for p in parts if p]


# ---------------------------------------------------------------- clouds and machines

@bp.route("/clouds", methods=["GET", "POST"])
def cloud_list():
    s, org = db(), g.org_id
    error, values = None, {}
    if request.method == "POST":
        values = {k: (request.form.get(k) or "").strip() for k in ("title", "provider", "credentials", "options")}
        try:
            forms.check_text(values)
            body = {"title": values["title"] or None, "provider": values["provider"] or None,
                    "credentials": _json_field("credentials", values["credentials"]),
                    "options": _json_field("options", values["options"])}
            cloud = resources.create_cloud(s, state().box, org, resources.fields(CloudIn, body, resources.STAMPS),
                                           utcnow(), denied_networks=state().config.denied_networks)
            return redirect(url_for("ui.cloud_page", id_=cloud.id))
        except APIError as exc:
            s.rollback()
            error = exc.message
    clouds = s.scalars(select(Cloud).where(Cloud.org_id == org).order_by(Cloud.title)).all()
    counts = dict(s.execute(select(Machine.cloud_id, func.count()).where(Machine.org_id == org)
                            .group_by(Machine.cloud_id)).all())
    return render_template("clouds.html", clouds=[resources.cloud_json(c) for c in clouds], counts=counts,
                           # "credentials.secret: ..." belongs to the credentials field
                           error=error, error_field=error.split(":", 1)[0].split(".")[0] if error else None,
                           values=values), (400 if error else 200)


def _json_field(name: str, text: str):
    if not text:
        return None
    return loads(text, name)  # the API body's rules: finite numbers, storable strings


def _cloud_page(cloud: Cloud, error=None, values=None, status=200):
    s = db()
    machines = s.scalars(resources.machines_query(cloud.id).order_by(Machine.name, Machine.machine_id)).all()
    keys = s.scalars(select(Key).where(Key.org_id == g.org_id).order_by(Key.name)).all()
    return render_template("cloud.html", cloud=resources.cloud_json(cloud),
                           machines=[resources.machine_json(m) for m in machines],
                           keys={k.id: k.name for k in keys}, error=error,
                           error_field=error.split(":", 1)[0] if error else None, values=values or {}), status


@bp.get("/clouds/<id_>")
def cloud_page(id_):
    return _cloud_page(get_owned(Cloud, id_, "cloud"))


@bp.post("/clouds/<id_>/refresh")
def cloud_refresh(id_):
    # No request session is opened first: refresh_cloud reads, calls the provider, then writes.
    resources.refresh_cloud(state(), g.org_id, id_, utcnow())
    return redirect(url_for("ui.cloud_page", id_=id_))


@bp.post("/clouds/<id_>/machines")
def machine_declare(id_):
    s = db()
    cloud = get_owned(Cloud, id_, "cloud")
    values = {k: (request.form.get(k) or "").strip() for k in ("name", "host", "port", "ssh_user", "key_id")}
    try:
        forms.check_text(values)
        body = {k: (forms._number(v) if k == "port" else v) or None for k, v in values.items()}
        resources.check_declarable(cloud)
        resources.declare_machine(s, g.org_id, cloud, resources.fields(MachineIn, body, resources.MACHINE_READ_ONLY),
                                  utcnow())
    except APIError as exc:
        s.rollback()
        return _cloud_page(get_owned(Cloud, id_, "cloud"), exc.message, values, exc.status)
    return redirect(url_for("ui.cloud_page", id_=id_))


# ---------------------------------------------------------------- scripts

@bp.get("/scripts")
def script_list():
    rows = db().scalars(select(Script).where(Script.org_id == g.org_id).order_by(Script.name)).all()
    return render_template("scripts.html", scripts=[resources.script_json(r) for r in rows])


@bp.get("/scripts/<id_>")
def script_page(id_):
    script = get_owned(Script, id_, "script")
    used = db().scalars(select(Schedule).where(Schedule.script_id == id_).order_by(Schedule.name)).all()
    return render_template("script.html", script=resources.script_json(script), used=used)


def _script_form(current: Script | None):
    s = db()
    values = resources.script_json(current) if current else {"name": "", "description": "", "script": "",
                                                               "exec_type": "executable"}
    values = {k: v or "" for k, v in values.items()}
    if request.method == "POST":
        values = {k: request.form.get(k, "") for k in ("name", "description", "script", "exec_type")}
        # Blanks around a name are not part of it (as in the other forms); a script keeps its own.
        values.update(name=values["name"].strip(), description=values["description"].strip())
        # Browsers send textarea lines with CRLF; a script keeps the newlines it would have as a file.
        values["script"] = values["script"].replace("\r\n", "\n")
        body = {k: (v if v != "" else None) for k, v in values.items()}
        try:
            forms.check_text(values)
            script = resources.store_script(s, g.org_id, resources.fields(ScriptIn, body, resources.STAMPS),
                                            current, utcnow(), lambda: state().sandbox.ansible_refusal())
            return redirect(url_for("ui.script_page", id_=script.id))
        except APIError as exc:
            s.rollback()
            return render_template("script_form.html", values=values, current=current, error=exc.message,
                                   error_field=exc.message.split(":", 1)[0]), exc.status
    return render_template("script_form.html", values=values, current=current, error=None, error_field=None)


@bp.route("/scripts/new", methods=["GET", "POST"])
def script_new():
    return _script_form(None)


@bp.route("/scripts/<id_>/edit", methods=["GET", "POST"])
def script_edit(id_):
    return _script_form(get_owned(Script, id_, "script"))


# ---------------------------------------------------------------- keys

@bp.route("/keys", methods=["GET", "POST"])
def key_list():
    s, org = db(), g.org_id
    error, values = None, {}
    if request.method == "POST":
        values = {"name": (request.form.get("name") or "").strip()}
        body = {"name": values["name"] or None, "private": (request.form.get("private") or "").strip() or None,
                "generate": bool(request.form.get("generate")) or None}
        try:
            forms.check_text({**values, "private": body["private"] or ""})
            resources.create_key(s, state().box, org, resources.fields(KeyIn, body, resources.STAMPS | {"public"}),
                                 utcnow())
            return redirect(url_for("ui.key_list"))
        except APIError as exc:
            s.rollback()
            error = exc.message
    rows = s.scalars(select(Key).where(Key.org_id == org).order_by(Key.name)).all()
    return render_template("keys.html", keys=[resources.key_json(k) for k in rows], error=error,
                           error_field=error.split(":", 1)[0].split(",")[0] if error else None,
                           values=values), (400 if error else 200)


# ---------------------------------------------------------------- notification channels

def _channel_page(error: str | None = None, values: dict | None = None, status: int = 200, tested=None):
    """The org's channels (URLs masked as the API masks them, secrets never), the add form, a test's outcome."""
    rows = db().scalars(channels.channels_query(g.org_id).order_by(Channel.created_at.desc(), Channel.id.desc())).all()
    field = error.split(":", 1)[0].split(",")[0].strip() if error else None
    return render_template("channels.html", channels=[channels.channel_json(c) for c in rows], error=error,
                           error_field=field if field in (*CHANNEL_FORM, "default") else None,
                           values=values or {"kind": "webhook"}, kinds=channels.KINDS, tested=tested), status


@bp.route("/channels", methods=["GET", "POST"])
def channel_list():
    """List the org's channels; POST adds one through channels.store (the API's rules, audit entry included).

    The URL and the secret a refused form carried are not sent back: either may hold credentials."""
    if request.method == "GET":
        return _channel_page(tested=_tested(request.args.get("tested")))
    s = db()
    values = {k: (request.form.get(k) or "").strip() for k in CHANNEL_FORM}
    values["secret"] = request.form.get("secret") or ""  # a secret is what was typed, blanks included (as the API's)
    values["default"] = "on" if request.form.get("default") else ""
    shown = {"name": values["name"], "kind": values["kind"], "default": values["default"]}
    try:
        forms.check_text(values)
        body = {k: values[k] or None for k in CHANNEL_FORM}
        body["default"] = values["default"] == "on"
        channels.store(s, state().box, g.org_id, resources.fields(channels.ChannelIn, body, resources.STAMPS),
                       None, utcnow(), state().config.notify_denied_networks)
    except APIError as exc:
        s.rollback()
        return _channel_page(exc.message, shown, exc.status)
    return redirect(url_for("ui.channel_list"))


def _tested(delivery_id: str | None):
    """The org's test delivery `delivery_id` (delivery_json), or None for anything else."""
    if not delivery_id:  # a NUL in the query string was refused before any view (check_request_text)
        return None
    row = db().scalar(select(Delivery).where(Delivery.id == delivery_id, Delivery.org_id == g.org_id,
                                             Delivery.kind == "test"))
    return None if row is None else delivery_json(row)


@bp.post("/channels/<id_>/test")
def channel_test(id_):
    """Send a channel a test event now, as POST /channels/<id>/test (one test at a time per org in a
    process; another while one is under way is refused with Retry-After), and show the delivery."""
    channel = get_owned(Channel, id_, "channel")
    try:
        with channels.one_test_at_a_time(channel.org_id, state().config.notify_timeout):
            # send_test commits the delivery before it sends: no transaction is open while it waits.
            delivery = send_test(state(), db(), channel, utcnow())
    except APIError as exc:
        page, status = _channel_page(exc.message, status=exc.status)
        return page, status, exc.headers
    return redirect(url_for("ui.channel_list", tested=delivery["id"]))


@bp.route("/channels/<id_>/delete", methods=["GET", "POST"])
def channel_delete(id_):
    """Confirm (GET), then delete a channel through channels.delete (POST): a 409 while a schedule's notify names it."""
    channel = get_owned(Channel, id_, "channel")
    if request.method == "GET":
        return render_template("confirm_delete.html", what="channel", name=channel.name,
                               note="Deliveries already recorded stay on their runs' pages.",
                               action=url_for("ui.channel_delete", id_=id_), cancel=url_for("ui.channel_list"))
    try:
        channels.delete(db(), channel)
    except APIError as exc:  # a schedule's notify names it: the API's 409, on the list
        db().rollback()
        return _channel_page(exc.message, status=exc.status)
    return redirect(url_for("ui.channel_list"))


# ---------------------------------------------------------------- logs

@bp.get("/logs")
def log_list():
    s, org = db(), g.org_id
    args = {k: (request.args.get(k) or "").strip() for k in ("schedule_id", "run_id", "event_type", "start", "stop")}
    offset = _offset()
    error = None
    bounds = {}
    for name in ("start", "stop"):
        try:
            bounds[name] = parse_instant(args[name], "UTC", field=name) if args[name] else None
        except TimeSpecError as exc:
            error, bounds[name] = str(exc), None
    query = runs.events_query(org, args["schedule_id"] or None, args["run_id"] or None, args["event_type"] or None,
                              bounds["start"], bounds["stop"])
    rows = [] if error else s.scalars(query.order_by(Event.time.desc(), Event.id.desc()).limit(PAGE + 1)
                                      .offset(offset)).all()
    names = dict(s.execute(select(Schedule.id, Schedule.name).where(Schedule.org_id == org)
                           .order_by(Schedule.name)).all())

    def page(at):
        return url_for("ui.log_list") + "?" + urlencode({**args, "offset": at})

    events = [runs.event_json(e) for e in rows[:PAGE]]
    return render_template("logs.html", events=events, args=args, names=names, types=EVENT_TYPES, error=error,
                           prev=page(max(offset - PAGE, 0)) if offset else None,
                           next=page(offset + PAGE) if len(rows) > PAGE else None, format_instant=format_instant)


@bp.app_template_filter("details")
def details(event: dict) -> str:
    """An event's data beyond the columns the logs table shows, as 'key=value' pairs."""
    skip = {"id", "time", "type", "schedule_id", "run_id", "cloud_id", "machine_id"}
    return ", ".join(f"{k}={v}" for k, v in event.items() if k not in skip and v not in (None, ""))

