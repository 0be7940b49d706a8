"""The console's views under hostile and odd input: where a form may send a person back to, text the
database cannot store, paging and filter values out of range, and schedules whose stored timing
cannot be computed. Each answer is a page with the field's error or the page itself, never a 500."""
from __future__ import annotations

import pytest

from .conftest import Console, text


@pytest.mark.parametrize("next_url", ["/ui/\r\nSet-Cookie: x=1", "/ui/\nX-Injected: 1", "/ui/\x00",
                                      "/ui/\\evil.example", "//evil.example/ui/", "https://evil.example/ui/",
                                      "/ui/\t/evil.example"])
def test_sign_in_sends_a_hostile_next_to_the_dashboard(app, api, next_url):
    c = Console(app.test_client())
    resp = c.flask.post("/ui/signin", data={"token": api.token, "csrf_token": c.csrf(), "next": next_url})
    assert resp.status_code == 302 and resp.headers["Location"] == "/ui/"
    assert "X-Injected" not in resp.headers and "x=1" not in str(resp.headers)


def test_sign_in_keeps_a_console_path_with_its_query(app, api):
    c = Console(app.test_client())
    resp = c.flask.post("/ui/signin", data={"token": api.token, "csrf_token": c.csrf(),
                                            "next": "/ui/schedules?q=night&status=enabled"})
    assert resp.headers["Location"] == "/ui/schedules?q=night&status=enabled"


@pytest.mark.parametrize("next_url", ["/ui/\r\nX-Injected: 1", "/ui/\\\\evil.example", "//evil.example",
                                      "javascript:alert(1)"])
def test_enable_disable_returns_to_the_schedule_for_a_hostile_next(console, api, schedule, next_url):
    resp = console.post(f"/ui/schedules/{schedule['id']}/enabled", {"enabled": "false", "next": next_url})
    assert resp.status_code == 302, text(resp)
    assert resp.headers["Location"] == f"/ui/schedules/{schedule['id']}" and "X-Injected" not in resp.headers
    assert api.get(f"schedules/{schedule['id']}")[1]["enabled"] is False


def test_enable_disable_returns_to_the_filtered_list_it_came_from(console, schedule):
    resp = console.post(f"/ui/schedules/{schedule['id']}/enabled", {"enabled": "false", "next": "/ui/schedules?q=ni"})
    assert resp.headers["Location"] == "/ui/schedules?q=ni"


@pytest.mark.parametrize("offset", ["99999999999999999999999", "-5", "1e5", "٣", ""])
def test_a_paging_offset_out_of_range_shows_a_page(console, schedule, offset):
    for path in ("/ui/schedules", f"/ui/schedules/{schedule['id']}", "/ui/logs"):
        resp = console.get(f"{path}?offset={offset}")
        assert resp.status_code == 200, (path, text(resp)[:200])


def test_a_name_filter_longer_than_any_name_matches_nothing(console, schedule):
    resp = console.get("/ui/schedules?q=" + "n" * 100_000)
    assert resp.status_code == 200 and "No schedules match these filters" in text(resp)
    assert "nightly" in text(console.get("/ui/schedules?q=NIGHT"))


def test_the_preview_reads_a_timezone_with_blanks_around_it(console):
    resp = console.post("/ui/schedules/preview", {"schedule_type": "crontab", "minute": "0", "hour": "2",
                                                  "day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
                                                  "timezone": " Europe/Athens "}, csrf_from="/ui/schedules/new")
    assert resp.status_code == 200 and text(resp).count("02:00:00 Europe/Athens") == 10


# ------------------------------------------------------------------ text no database can store

NUL = "a\x00b"
NUL_RULE = "must not contain NUL (\\u0000) characters"


def _stored(api) -> dict:
    return {kind: api.get(kind)[1] for kind in ("schedules", "scripts", "keys", "clouds")}


def _schedule_form(cloud_id, **fields):
    body = {"name": "nightly", "description": "", "kind": "action", "action": "stop", "script_id": "", "params": "",
            "targets": f"{cloud_id} i-1", "schedule_type": "interval", "every": "2", "period": "hours",
            "minute": "0", "hour": "2", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
            "one_off": "", "timezone": "UTC", "start_after": "", "expires": "", "max_run_count": "",
            "misfire_grace": "300", "concurrency": "forbid", "timeout": "3600", "enabled": "on"}
    return {**body, **fields}


@pytest.mark.parametrize("field", ["name", "description", "targets", "every", "timezone", "expires", "one_off",
                                   "minute", "script_id", "params"])
def test_a_nul_in_any_schedule_field_is_refused_by_that_field(backend, field):
    console, api = backend
    cloud = api.post("clouds", {"title": "lab", "provider": "other"})[1]
    fields = {field: NUL}
    if field == "one_off":
        fields["schedule_type"] = "one_off"
    elif field == "minute":
        fields["schedule_type"] = "crontab"
    elif field in ("script_id", "params"):
        fields["kind"] = "script"
    elif field == "targets":
        fields["targets"] = f"{cloud['id']} {NUL}"
    before = _stored(api)
    resp = console.post("/ui/schedules/new", _schedule_form(cloud["id"], **fields), csrf_from="/ui/schedules/new")
    assert resp.status_code == 400, text(resp)[:300]
    assert f'id="{field}-error"' in text(resp) and NUL_RULE in text(resp)
    assert _stored(api) == before


def test_a_nul_in_an_edit_or_a_preview_is_refused(backend):
    console, api = backend
    cloud = api.post("clouds", {"title": "lab", "provider": "other"})[1]
    resp = console.post("/ui/schedules/new", _schedule_form(cloud["id"]), csrf_from="/ui/schedules/new")
    assert resp.status_code == 302, text(resp)
    edit = resp.headers["Location"] + "/edit"
    stored = api.get("schedules")[1]
    resp = console.post(edit, _schedule_form(cloud["id"], description=NUL), csrf_from=edit)
    assert resp.status_code == 400 and 'id="description-error"' in text(resp) and NUL_RULE in text(resp)
    assert api.get("schedules")[1] == stored
    resp = console.post("/ui/schedules/preview", _schedule_form(cloud["id"], timezone=NUL), csrf_from=edit)
    assert resp.status_code == 200 and f"timezone: {NUL_RULE}" in text(resp)
    resp = console.post("/ui/schedules/preview", {**_schedule_form(cloud["id"]), "schedule_id": NUL}, csrf_from=edit)
    assert resp.status_code == 400 and f"schedule_id: {NUL_RULE}" in text(resp)


@pytest.mark.parametrize("path, form, field", [
    ("/ui/scripts/new", {"name": NUL, "description": "", "script": "true", "exec_type": "executable"}, "name"),
    ("/ui/scripts/new", {"name": "s", "description": "", "script": "echo " + NUL, "exec_type": "executable"}, "script"),
    ("/ui/keys", {"name": NUL, "generate": "on"}, "name"),
    ("/ui/clouds", {"title": NUL, "provider": "other"}, "title"),
    ("/ui/clouds", {"title": "c", "provider": "other", "options": '{"region": "a\\u0000b"}'}, "options"),
    ("/ui/clouds", {"title": "c", "provider": "other", "options": '{"region": "caf\\udce9"}'}, "options"),
    ("/ui/clouds", {"title": "c", "provider": "other", "options": '{"caf\\udce9": "x"}'}, "options"),
    ("/ui/clouds", {"title": "c", "provider": "other", "options": '{"region": NaN}'}, "options"),
    ("/ui/clouds", {"title": "c", "provider": "other", "options": '{"size": 1e999}'}, "options"),
    ("/ui/clouds", {"title": "c", "provider": "other", "credentials": '{"key": "a\\u0000b"}'}, "credentials"),
])
def test_text_no_database_can_store_is_refused_by_its_field(backend, path, form, field):
    console, api = backend
    before = _stored(api)
    resp = console.post(path, form, csrf_from=path)
    assert resp.status_code == 400, text(resp)[:300]
    assert f'id="{field}-error"' in text(resp) and text(resp).count('role="alert"') == 1
    assert _stored(api) == before


@pytest.mark.parametrize("field", ["name", "host", "ssh_user", "key_id"])
def test_a_nul_in_a_declared_machine_is_refused_by_its_field(backend, field):
    console, api = backend
    cloud = api.post("clouds", {"title": "lab", "provider": "other"})[1]
    page = f"/ui/clouds/{cloud['id']}"
    form = {"name": "web2", "host": "10.0.0.2", "port": "22", "ssh_user": "ops", "key_id": "", field: NUL}
    resp = console.post(page + "/machines", form, csrf_from=page)
    assert resp.status_code == 400 and f'id="{field}-error"' in text(resp) and NUL_RULE in text(resp)
    assert api.get(f"clouds/{cloud['id']}/machines")[1] == []


# ------------------------------------------------------------------ stored schedules the forms must keep as they are

def test_an_edit_keeps_an_interval_in_microseconds(console, api, schedule_body):
    status, sch = api.post("schedules", schedule_body(name="fast", schedule_entry={"every": 90_000_000,
                                                                                   "period": "microseconds"}))
    assert status == 200, sch
    edit = f"/ui/schedules/{sch['id']}/edit"
    page = text(console.get(edit))
    assert '<option value="microseconds" selected>' in page
    cloud_id, machine = sch["machines_per_cloud"][0]
    resp = console.post(edit, _schedule_form(cloud_id, name="fast", targets=f"{cloud_id} {machine}", every="90000000",
                                             period="microseconds", description="only this changed"), csrf_from=edit)
    assert resp.status_code == 302, text(resp)
    after = api.get(f"schedules/{sch['id']}")[1]
    assert after["description"] == "only this changed"
    assert after["schedule_entry"] == {"every": 90_000_000, "period": "microseconds"}


POISONS = {
    "unknown-timezone": {"schedule_type": "crontab", "schedule_entry": {"minute": "0", "hour": "2"},
                         "timezone": "Not/A_Zone"},
    "interval-not-a-number": {"schedule_entry": {"every": "often", "period": "hours"}},
    "interval-without-period": {"schedule_entry": {"every": 2}},
    "one-off-not-a-date": {"schedule_type": "one_off", "schedule_entry": "soon"},
    "crontab-out-of-range": {"schedule_type": "crontab", "schedule_entry": {"minute": "99"}},
    "entry-not-an-object": {"schedule_entry": ["every", 2]},
}


@pytest.mark.parametrize("poison", POISONS, ids=list(POISONS))
def test_a_schedule_whose_stored_timing_cannot_be_computed_still_renders(console, api, schedule_body, state, poison):
    """A row the time math cannot read (an operator's edit, a zone tzdata dropped) is shown with its error;
    the other schedules and the pages that list them are unaffected (one row must not stop the rest)."""
    from sqlalchemy import update

    from web.models import Schedule

    good = api.post("schedules", schedule_body(name="healthy"))[1]
    bad = api.post("schedules", schedule_body(name="poisoned"))[1]
    with state.db.transaction() as s:
        s.execute(update(Schedule).where(Schedule.id == bad["id"]).values(**POISONS[poison]))
    listing = console.get("/ui/schedules")
    assert listing.status_code == 200, text(listing)[:300]
    assert "healthy" in text(listing) and "every 2 minutes" in text(listing)
    assert "poisoned" in text(listing) and "cannot be computed" in text(listing)
    dashboard = console.get("/ui/")
    assert dashboard.status_code == 200 and "healthy" in text(dashboard)
    assert "Timing cannot be computed" in text(dashboard) and f"/ui/schedules/{bad['id']}" in text(dashboard)
    page = console.get(f"/ui/schedules/{bad['id']}")
    assert page.status_code == 200 and "cannot be computed" in text(page)
    edit = console.get(f"/ui/schedules/{bad['id']}/edit")
    assert edit.status_code == 200 and 'id="preview"' in text(edit) and "cannot be computed" in text(edit)
    assert console.get(f"/ui/schedules/{good['id']}").status_code == 200


def test_a_poisoned_schedule_is_repaired_through_its_edit_form(console, api, schedule_body, state):
    from sqlalchemy import update

    from web.models import Schedule

    bad = api.post("schedules", schedule_body(name="poisoned"))[1]
    with state.db.transaction() as s:
        s.execute(update(Schedule).where(Schedule.id == bad["id"]).values(schedule_entry={"every": "often"}))
    edit = f"/ui/schedules/{bad['id']}/edit"
    cloud_id, machine = bad["machines_per_cloud"][0]
    resp = console.post(edit, _schedule_form(cloud_id, name="poisoned", targets=f"{cloud_id} {machine}", every="3",
                                             period="hours"), csrf_from=edit)
    assert resp.status_code == 302, text(resp)
    assert api.get(f"schedules/{bad['id']}")[1]["schedule_entry"] == {"every": 3, "period": "hours"}


# ------------------------------------------------------------------ errors read as pages

def test_a_form_larger_than_the_body_limit_is_refused_with_a_page(console, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    resp = console.post("/ui/scripts/new", {"name": "big", "description": "", "exec_type": "executable",
                                            "script": "x" * (limit + 1)}, csrf_from="/ui/scripts/new")
    assert resp.status_code == 413 and resp.mimetype == "text/html"
    assert f"request body is larger than {limit} bytes" in text(resp)
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_an_unexpected_error_in_a_page_is_a_page_without_a_traceback(console, monkeypatch, caplog):
    from web import runs

    def broken(*_args, **_kwargs):
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr(runs, "status_counts", broken)
    resp = console.get("/ui/")
    assert resp.status_code == 500 and resp.mimetype == "text/html"
    assert "internal error; see the service log" in text(resp)
    assert "secret detail" not in text(resp) and "Traceback" not in text(resp)
    assert "secret detail from deep inside" in caplog.text  # the operator's log keeps it


def test_the_dashboard_computes_due_fires_in_bounded_work(console, api, schedule_body, monkeypatch):
    """Fifty schedules firing every minute are 72,000 fires in the next 24 h: the dashboard counts up
    to its cap and lists the first twenty, computing about one fire per fire it uses, not 500 each."""
    from web import timemath

    for i in range(50):
        assert api.post("schedules", schedule_body(name=f"often-{i}", schedule_type="crontab",
                                                   schedule_entry={"minute": "*"}))[0] == 200
    calls = []
    real = timemath.next_fire

    def counted(timing, after):
        calls.append(after)
        return real(timing, after)

    monkeypatch.setattr(timemath, "next_fire", counted)
    page = text(console.get("/ui/"))
    assert "<strong>500+</strong> fires" in page and page.count('<li><time datetime="') == 20
    assert len(calls) <= 2 * (50 + 500), len(calls)


def test_the_preview_of_a_one_off_without_its_date_asks_for_the_date(console):
    """Not the API's 'schedule_type, schedule_entry: are required', which a person who has just chosen
    'Once' reads as a fault in the type they chose."""
    resp = console.post("/ui/schedules/preview", {"schedule_type": "one_off", "one_off": "", "timezone": "UTC"},
                        csrf_from="/ui/schedules/new")
    assert resp.status_code == 200
    assert "Pick the date and time" in text(resp) and "field-error" not in text(resp)
    page = text(console.post("/ui/schedules/new", {"schedule_type": "one_off", "one_off": "", "preview": "1"},
                             csrf_from="/ui/schedules/new"))
    assert "Pick the date and time" in page


def test_a_script_named_only_with_blanks_is_refused_like_the_other_forms_names(console, api):
    resp = console.post("/ui/scripts/new", {"name": "   ", "description": "  ", "script": "true",
                                            "exec_type": "executable"}, csrf_from="/ui/scripts/new")
    assert resp.status_code == 400 and 'id="name-error"' in text(resp) and "name: is required" in text(resp)
    assert api.get("scripts")[1] == []
    resp = console.post("/ui/scripts/new", {"name": " uptime ", "description": " load ", "script": "  uptime\n",
                                            "exec_type": "executable"}, csrf_from="/ui/scripts/new")
    assert resp.status_code == 302
    [script] = api.get("scripts")[1]
    assert (script["name"], script["description"], script["script"]) == ("uptime", "load", "  uptime\n")


def test_the_form_says_which_targets_take_scripts_only(console, api, cloud, machine):
    """A machine declared on an 'other' cloud is a plain SSH host: a power action on it fails at every
    run ('power actions need a libcloud cloud'), so the form says so beside it before anyone picks it."""
    import re as _re

    page = text(console.get("/ui/schedules/new"))
    label = _re.search(r'<label for="target-1">(.*?)</label>', page, _re.S).group(1)
    assert "web1" in label and "scripts only" in label


# ------------------------------------------------------------------ a running run's page

def _running_run(state, schedule_id, outputs):
    """A running run whose machines are `outputs` (None: still running, else its stdout)."""
    from datetime import datetime, timezone

    from sqlalchemy import select

    from web.models import Run, RunMachine, Schedule

    now = datetime.now(timezone.utc)
    with state.db.transaction() as s:
        org_id = s.scalar(select(Schedule.org_id).where(Schedule.id == schedule_id))
        run = Run(id="d" * 32, org_id=org_id, schedule_id=schedule_id, trigger="manual", created_at=now,
                  started_at=now, status="running")
        s.add(run)
        s.flush()
        for i, out in enumerate(outputs):
            s.add(RunMachine(run_id=run.id, machine_key=f"k{i}", cloud_id="c", machine_id=f"web{i}",
                             status="running" if out is None else "succeeded", rc=None if out is None else 0,
                             stdout=out))
    return "d" * 32


def test_a_running_runs_refresh_does_not_resend_output_the_page_already_shows(console, schedule, state):
    """The page refreshes every second while a run goes on; a finished machine's output (up to the
    runner's cap, 256 KiB a stream) is sent once, and each refresh after it names what the page holds."""
    big = "line of output\n" * 15_000
    run_id = _running_run(state, schedule["id"], [big, None])
    first = text(console.get(f"/ui/runs/{run_id}"))
    assert big in first
    assert f'hx-get="/ui/runs/{run_id}?shown=1"' in first
    again = console.get(f"/ui/runs/{run_id}?shown=1")
    assert big not in text(again) and len(again.data) < 20_000
    assert f'<details id="output-1-stdout-{len(big)}" hx-preserve="true"' in text(again)
    for garbage in ("x", "1.2.x", "-1", "99", ""):
        assert big in text(console.get(f"/ui/runs/{run_id}?shown={garbage}")), garbage


def test_a_runs_page_shows_its_notifications_and_their_last_error(console, schedule, state):
    from datetime import datetime, timezone

    from web.models import Delivery, Run

    run_id = _running_run(state, schedule["id"], ["done"])
    now = datetime.now(timezone.utc)
    with state.db.transaction() as s:
        s.add(Delivery(id="e" * 32, org_id=s.get(Run, run_id).org_id, run_id=run_id, channel_id="c" * 32,
                       channel_name="pager-bridge", kind="run", event={}, status="pending", created_at=now,
                       next_attempt_at=now,
                       attempts=[{"at": "2026-11-30T02:00:07Z", "ok": False, "error": "HTTP 500 Internal Server Error",
                                  "duration": 0.01}]))
    page = text(console.get(f"/ui/runs/{run_id}"))
    assert "<h2>Notifications</h2>" in page and "pager-bridge" in page and "HTTP 500 Internal Server Error" in page


def test_a_runs_page_without_notifications_has_no_such_section(console, schedule, state):
    run_id = _running_run(state, schedule["id"], ["done"])
    assert "Notifications" not in text(console.get(f"/ui/runs/{run_id}"))


def test_a_retried_machine_shows_each_attempt_as_the_api_lists_them(console, api, schedule, state):
    from sqlalchemy import update

    from web.models import RunMachine

    run_id = _running_run(state, schedule["id"], ["done", "also done"])
    first_error = "Failed to connect to the host via ssh: ssh: connect to host 10.0.0.5 port 22: Connection timed out"
    with state.db.transaction() as s:
        s.execute(update(RunMachine).where(RunMachine.run_id == run_id, RunMachine.machine_key == "k0").values(
            duration=1.5, attempts=[{"attempt": 1, "status": "unreachable", "error": first_error, "duration": 30.0}]))
    status, body = api.get(f"runs/{run_id}")
    assert status == 200
    retried, once = body["machines"] if body["machines"][0]["machine_key"] == "k0" else body["machines"][::-1]
    page = text(console.get(f"/ui/runs/{run_id}"))
    shown = page[page.index('<details id="attempts-1-2"'):]
    shown = shown[:shown.index("</details>")]
    assert f"<summary>{len(retried['attempts'])} attempts</summary>" in shown
    items = shown.split("<li>")[1:]
    assert len(items) == 2 and "unreachable" in items[0] and first_error in items[0] and "30.0 s" in items[0]
    assert "succeeded" in items[1] and "1.5 s" in items[1]
    assert len(once["attempts"]) == 1 and 'id="attempts-2-' not in page  # a machine tried once lists none


def test_a_runs_page_lists_each_delivery_attempt(console, schedule, state):
    from datetime import datetime, timezone

    from web.models import Delivery, Run

    run_id = _running_run(state, schedule["id"], ["done"])
    now = datetime.now(timezone.utc)
    with state.db.transaction() as s:
        s.add(Delivery(id="f" * 32, org_id=s.get(Run, run_id).org_id, run_id=run_id, channel_id="c" * 32,
                       channel_name="ops-hook", kind="run", event={}, status="delivered", created_at=now,
                       next_attempt_at=None, finished_at=now,
                       attempts=[{"at": "2026-11-30T02:00:07Z", "ok": False, "error": "HTTP 503 Service Unavailable",
                                  "duration": 0.25},
                                 {"at": "2026-11-30T02:00:37Z", "ok": True, "error": None, "duration": 0.05}]))
    page = text(console.get(f"/ui/runs/{run_id}"))
    shown = page[page.index(f'<details id="delivery-{"f" * 32}-2"'):]
    items = shown[:shown.index("</details>")].split("<li>")[1:]
    assert len(items) == 2
    assert "2026-11-30T02:00:07Z: failed" in items[0] and "HTTP 503 Service Unavailable" in items[0]
    assert "2026-11-30T02:00:37Z: delivered" in items[1] and "0.05 s" in items[1]
