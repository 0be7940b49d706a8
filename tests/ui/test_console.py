"""The web console through Flask's test client: sessions, CSRF, tenancy, and forms that write
through the API's own rules (an error reads exactly as the API's, next to the field it names)."""
from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from web.models import Run, RunMachine, Schedule
from web.runner import cap_text

from .conftest import Console, text


def form_body(cloud_id, machine="i-1", **fields):
    """The console's schedule form, as a browser posts it (a stop every 2 hours of one machine)."""
    body = {"name": "nightly", "description": "", "kind": "action", "action": "stop", "script_id": "", "params": "",
            "targets": f"{cloud_id} {machine}", "schedule_type": "interval", "every": "2", "period": "hours",
            "minute": "0", "hour": "2", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
            "one_off": "", "timezone": "UTC", "start_after": "", "expires": "", "max_run_count": "",
            "misfire_grace": "300", "concurrency": "forbid", "timeout": "3600", "enabled": "on"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def test_sign_in_sets_a_strict_httponly_expiring_cookie_for_the_console_only(app, api):
    c = Console(app.test_client())
    resp = c.sign_in(api.token)
    assert resp.status_code == 302 and resp.headers["Location"] == "/ui/"
    cookie = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("cloudcron_session=")][-1]
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "expires", "path"} <= attrs and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "secure" not in attrs  # plain HTTP here
    assert api.token not in cookie
    assert c.get("/ui/").status_code == 200


def test_the_cookie_is_secure_over_https(app, api):
    c = Console(app.test_client())
    page = c.flask.get("/ui/signin", base_url="https://localhost")
    token = re.search(r'name="csrf_token" value="([^"]+)"', text(page)).group(1)
    resp = c.flask.post("/ui/signin", data={"token": api.token, "csrf_token": token}, base_url="https://localhost",
                        headers={"Referer": "https://localhost/ui/signin"})
    assert resp.status_code == 302, text(resp)
    cookie = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("cloudcron_session=")][-1]
    assert "Secure" in cookie


def test_it_refuses_an_unknown_token_by_the_field(app):
    c = Console(app.test_client())
    resp = c.sign_in("f" * 64)
    assert resp.status_code == 401
    assert 'id="token-error"' in text(resp) and "unknown or revoked token" in text(resp)
    assert c.get("/ui/schedules").status_code == 302


def test_pages_need_a_session(app):
    resp = app.test_client().get("/ui/schedules")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/ui/signin?next=/ui/schedules")


def test_a_form_posted_without_its_csrf_token_is_refused_and_writes_nothing(console, api, cloud):
    resp = console.flask.post("/ui/schedules/new", data=form_body(cloud["id"]))
    assert resp.status_code == 400 and "CSRF token is missing" in text(resp)
    resp = console.flask.post("/ui/schedules/new", data={**form_body(cloud["id"]), "csrf_token": "forged"})
    assert resp.status_code == 400 and "CSRF" in text(resp)
    assert api.get("schedules") == (200, [])


def test_the_api_still_needs_no_csrf_token(api, schedule_body):
    assert api.post("schedules", schedule_body())[0] == 200


def test_sign_out_ends_the_session(console):
    resp = console.post("/ui/signout")
    assert resp.status_code == 302 and resp.headers["Location"] == "/ui/signin"
    assert console.get("/ui/schedules").status_code == 302


def test_a_revoked_token_ends_its_console_sessions(console, api, state):
    from web.auth import revoke_token

    with state.db.transaction() as session:
        assert revoke_token(session, api.token)
    assert console.get("/ui/").status_code == 302


def test_a_schedule_created_by_the_form_is_the_one_the_api_would_store(console, api, cloud, schedule_body):
    resp = console.post("/ui/schedules/new", form_body(cloud["id"], machine="i-781daaf3"))
    assert resp.status_code == 302, text(resp)
    [stored] = api.get("schedules")[1]
    assert resp.headers["Location"] == f"/ui/schedules/{stored['id']}"
    status, via_api = api.post("schedules", schedule_body(name="twin", schedule_entry={"every": 2, "period": "hours"}))
    assert status == 200
    differ = {"id", "name", "created_at", "updated_at", "next_run_at", "description"}
    assert {k: v for k, v in stored.items() if k not in differ} == {k: v for k, v in via_api.items() if k not in differ}
    page = text(console.get(resp.headers["Location"]))
    assert "every 2 hours" in page and "i-781daaf3" in page


def test_a_form_error_reads_as_the_apis_next_to_its_field(console, api, cloud, schedule_body):
    past = "2020-01-01T00:00:00"
    status, api_error = api.post("schedules", schedule_body(expires=past.replace("T", " ")))
    assert status == 400 and api_error["error"].startswith("expires: ")
    resp = console.post("/ui/schedules/new", form_body(cloud["id"], expires=past))
    page = text(resp)
    assert resp.status_code == 400
    assert f'<p class="field-error" id="expires-error" role="alert">{html.escape(api_error["error"])}</p>' in page
    assert re.search(r'id="expires"[^>]*aria-invalid="true" aria-describedby="expires-error"', page)
    assert api.get("schedules") == (200, [])


def test_entry_errors_land_on_the_entry_field(console, api, cloud):
    page = text(console.post("/ui/schedules/new", form_body(cloud["id"], every="0")))
    assert 'id="every-error"' in page and "schedule_entry.every: must be a positive integer" in page
    page = text(console.post("/ui/schedules/new", form_body(cloud["id"], schedule_type="crontab", hour="25")))
    assert 'id="hour-error"' in page and "schedule_entry.hour: 25 is out of range" in page
    page = text(console.post("/ui/schedules/new", form_body(cloud["id"], targets=None)))
    assert 'id="targets-error"' in page and "give at least one target machine" in page
    page = text(console.post("/ui/schedules/new", form_body(cloud["id"], max_run_count="many")))
    assert 'id="max_run_count-error"' in page and "max_run_count: must be an integer" in page


def test_a_duplicate_name_is_the_apis_409_by_the_name_field(console, cloud, schedule):
    resp = console.post("/ui/schedules/new", form_body(cloud["id"], name=schedule["name"]))
    assert resp.status_code == 409
    assert 'id="name-error"' in text(resp) and "a schedule named &#39;nightly&#39; already exists" in text(resp)


def test_the_preview_is_the_apis_preview(console, api):
    status, expected = api.post("schedules/preview", {"schedule_type": "crontab", "timezone": "Europe/Athens",
                                                      "schedule_entry": {"minute": "0", "hour": "2"}, "count": 10})
    assert status == 200
    resp = console.post("/ui/schedules/preview", {"schedule_type": "crontab", "minute": "0", "hour": "2",
                                                  "day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
                                                  "timezone": "Europe/Athens"}, csrf_from="/ui/schedules/new")
    assert resp.status_code == 200
    shown = re.findall(r'<time datetime="([^"]+)"', text(resp))
    as_api = [datetime.fromisoformat(t).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for t in shown]
    assert as_api == expected["next_run_times"]
    bad = console.post("/ui/schedules/preview", {"schedule_type": "interval", "every": "1", "period": "fortnights",
                                                 "timezone": "UTC"}, csrf_from="/ui/schedules/new")
    assert "schedule_entry.period: &#39;fortnights&#39; is not a period" in text(bad)


def test_an_edit_sends_only_what_changed(console, api, schedule):
    edit = f"/ui/schedules/{schedule['id']}/edit"
    page = text(console.get(edit))
    assert 'value="2"' in page and 'value="nightly"' in page
    cloud_id, machine = schedule["machines_per_cloud"][0]
    resp = console.post(edit, form_body(cloud_id, machine=machine, every="2", period="minutes",
                                        description="edited here"), csrf_from=edit)
    assert resp.status_code == 302, text(resp)
    after = api.get(f"schedules/{schedule['id']}")[1]
    assert after["description"] == "edited here"
    same = {k: v for k, v in schedule.items() if k not in ("description", "updated_at")}
    assert {k: v for k, v in after.items() if k not in ("description", "updated_at")} == same


def test_enable_disable_run_now_and_delete_go_through_the_service(console, api, schedule, state):
    sid = schedule["id"]
    state.enqueue = lambda ids: None  # no worker here; the run row is what this test reads
    assert console.post(f"/ui/schedules/{sid}/enabled", {"enabled": "false"}).status_code == 302
    assert api.get(f"schedules/{sid}")[1]["enabled"] is False
    assert api.get(f"schedules/{sid}")[1]["next_run_at"] is None
    assert console.post(f"/ui/schedules/{sid}/enabled", {"enabled": "true"}).status_code == 302
    assert api.get(f"schedules/{sid}")[1]["next_run_at"] is not None
    resp = console.post(f"/ui/schedules/{sid}/run")
    [run] = api.get(f"schedules/{sid}/runs")[1]
    assert resp.headers["Location"] == f"/ui/runs/{run['id']}" and run["trigger"] == "manual"
    assert "Delete schedule" in text(console.get(f"/ui/schedules/{sid}/delete"))
    assert api.get(f"schedules/{sid}")[0] == 200
    assert console.post(f"/ui/schedules/{sid}/delete").status_code == 302
    assert api.get(f"schedules/{sid}")[0] == 404


def test_another_orgs_resources_are_404_in_the_console(other_console, console, api, schedule, cloud, state):
    sid = schedule["id"]
    listing = text(other_console.get("/ui/schedules"))
    assert "nightly" not in listing and "No schedules" in listing
    for path in (f"/ui/schedules/{sid}", f"/ui/schedules/{sid}/edit", f"/ui/clouds/{cloud['id']}"):
        assert other_console.get(path).status_code == 404, path
    assert other_console.post(f"/ui/schedules/{sid}/enabled", {"enabled": "false"}).status_code == 404
    assert other_console.post(f"/ui/schedules/{sid}/delete").status_code == 404
    assert api.get(f"schedules/{sid}")[1]["enabled"] is True
    assert ">lab<" not in text(other_console.get("/ui/clouds")) and ">lab<" in text(console.get("/ui/clouds"))


def _run_with_output(state, schedule_id, org_id, stdout, status="succeeded"):
    now = datetime.now(timezone.utc)
    with state.db.transaction() as s:
        run = Run(id="a" * 32, org_id=org_id, schedule_id=schedule_id, trigger="manual", created_at=now,
                  started_at=now, finished_at=None if status == "running" else now, status=status)
        s.add(run)
        s.flush()
        s.add(RunMachine(run_id=run.id, machine_key="k1", cloud_id="c", machine_id="web1", status="succeeded",
                         rc=0, stdout=stdout, stderr="warning: low disk\n", duration=1.25))
    return "a" * 32


def test_a_run_page_shows_each_machines_output_with_the_cap_marker_visible(console, schedule, state):
    with state.db.session() as s:
        org_id = s.scalar(select(Schedule.org_id).where(Schedule.id == schedule["id"]))
    long = cap_text("line\n" * 40000, 1024)
    run_id = _run_with_output(state, schedule["id"], org_id, long)
    page = text(console.get(f"/ui/runs/{run_id}"))
    assert '<mark class="cap">' in page and "bytes of output truncated]" in page
    assert "<mark>truncated</mark>" in page and "warning: low disk" in page and "1.2 s" in page
    assert '<details id="output-1-stdout-' in page and 'class="stdout"' in page
    assert "hx-trigger" not in page  # finished: nothing polls


def test_a_running_runs_page_refreshes_itself_with_and_without_javascript(console, schedule, state):
    with state.db.session() as s:
        org_id = s.scalar(select(Schedule.org_id).where(Schedule.id == schedule["id"]))
    run_id = _run_with_output(state, schedule["id"], org_id, "partial\n", status="running")
    page = text(console.get(f"/ui/runs/{run_id}"))
    assert 'hx-trigger="every 1s"' in page
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in page


def test_the_dashboard_counts_runs_due_fires_failures_and_the_backlog(console, api, schedule, state):
    with state.db.session() as s:
        org_id = s.scalar(select(Schedule.org_id).where(Schedule.id == schedule["id"]))
    now = datetime.now(timezone.utc)
    with state.db.transaction() as s:
        s.add(Run(id="b" * 32, org_id=org_id, schedule_id=schedule["id"], trigger="scheduled",
                  created_at=now - timedelta(minutes=5), finished_at=now, status="failed"))
        s.add(Run(id="c" * 32, org_id=org_id, schedule_id=schedule["id"], trigger="manual",
                  created_at=now - timedelta(minutes=1), status="queued"))
    page = text(console.get("/ui/"))
    assert re.search(r"status-failed\">failed</span> <strong>1</strong>", page)
    assert re.search(r"<strong>500\+</strong> fires", page)  # every 2 minutes is 720 in 24 h: counted up to 500
    assert "Last run did not succeed" in page and f"/ui/runs/{'b' * 32}" in page
    assert "Queue backlog" in page and "<strong>1</strong> run waiting" in page
    api.patch(f"schedules/{schedule['id']}", {"schedule_entry": {"every": 1, "period": "hours"}})
    assert re.search(r"<strong>24</strong> fires", text(console.get("/ui/")))


def test_the_schedules_table_filters_and_shows_the_last_ten_outcomes(console, api, schedule_body, state):
    ids = [api.post("schedules", schedule_body(name=n))[1]["id"] for n in ("alpha-stop", "beta-stop", "gamma")]
    api.patch(f"schedules/{ids[1]}", {"enabled": False})
    with state.db.session() as s:
        org_id = s.scalar(select(Schedule.org_id).where(Schedule.id == ids[0]))
    now = datetime.now(timezone.utc)
    with state.db.transaction() as s:
        for i in range(12):
            s.add(Run(id=f"{i:032x}", org_id=org_id, schedule_id=ids[0], trigger="scheduled",
                      created_at=now - timedelta(minutes=i), status="failed" if i == 0 else "succeeded"))
    page = text(console.get("/ui/schedules?q=STOP"))
    assert "alpha-stop" in page and "beta-stop" in page and "gamma" not in page
    assert page.count('class="dot status-') == 10 and page.index("dot status-failed") < page.index("dot status-succeeded")
    page = text(console.get("/ui/schedules?status=disabled"))
    assert "beta-stop" in page and "alpha-stop" not in page
    page = text(console.get("/ui/schedules?status=failing"))
    assert "alpha-stop" in page and "gamma" not in page
    assert "every 2 minutes" in page


def test_without_the_sandbox_the_console_refuses_an_ansible_script_as_the_api_does(console, api, state):
    state.config.sandbox = "off"  # as CLOUDCRON_SANDBOX=off, or a host without bubblewrap
    resp = console.post("/ui/scripts/new", {"name": "tasks", "description": "", "exec_type": "ansible",
                                            "script": "- ansible.builtin.ping:\n"})
    assert resp.status_code == 400 and 'id="exec_type-error"' in text(resp)
    assert "Ansible scripts run only in the bubblewrap sandbox" in text(resp)
    assert api.get("scripts")[1] == []


def test_scripts_keys_and_machines_are_written_through_the_api_rules(console, api, cloud):
    resp = console.post("/ui/scripts/new", {"name": "uptime", "description": "", "exec_type": "executable",
                                            "script": "#!/bin/sh\r\nuptime\r\n"})
    assert resp.status_code == 302, text(resp)
    [script] = api.get("scripts")[1]
    assert script["script"] == "#!/bin/sh\nuptime\n"
    resp = console.post(f"/ui/scripts/{script['id']}/edit", {"name": "uptime", "description": "load",
                                                             "exec_type": "shell", "script": "x"})
    assert resp.status_code == 400 and 'id="exec_type-error"' in text(resp)
    assert "exec_type: must be one of &#39;executable&#39; or &#39;ansible&#39;" in text(resp)

    resp = console.post("/ui/keys", {"name": "deploy", "private": "not a key"})
    assert resp.status_code == 400 and 'id="private-error"' in text(resp)
    assert console.post("/ui/keys", {"name": "deploy", "generate": "on"}).status_code == 302
    [key] = api.get("keys")[1]
    page = text(console.get("/ui/keys"))
    assert key["public"] in page and "PRIVATE KEY" not in page

    resp = console.post(f"/ui/clouds/{cloud['id']}/machines", {"name": "web2", "host": "10.0.0.2", "port": "70000",
                                                               "ssh_user": "ops", "key_id": key["id"]},
                        csrf_from=f"/ui/clouds/{cloud['id']}")
    assert resp.status_code == 400 and 'id="port-error"' in text(resp) and "port: input should be less than or equal to 65535" in text(resp)
    resp = console.post(f"/ui/clouds/{cloud['id']}/machines", {"name": "web2", "host": "10.0.0.2", "port": "2200",
                                                               "ssh_user": "ops", "key_id": key["id"]},
                        csrf_from=f"/ui/clouds/{cloud['id']}")
    assert resp.status_code == 302, text(resp)
    [machine] = api.get(f"clouds/{cloud['id']}/machines")[1]
    assert (machine["host"], machine["port"], machine["ssh_user"], machine["key_id"]) == ("10.0.0.2", 2200, "ops", key["id"])


def test_a_cloud_added_in_the_console_is_refreshed_from_a_real_provider(console, api, moto_server):
    import json

    resp = console.post("/ui/clouds", {"title": "aws", "provider": "ec2",
                                       "credentials": json.dumps(dict(moto_server.credentials)),
                                       "options": json.dumps(moto_server.options)})
    assert resp.status_code == 302, text(resp)
    cloud_path = resp.headers["Location"]
    [machine] = moto_server.create_machines(1)
    assert machine not in text(console.get(cloud_path))
    assert console.post(cloud_path + "/refresh", csrf_from=cloud_path).status_code == 302
    assert machine in text(console.get(cloud_path))
    bad = console.post("/ui/clouds", {"title": "x", "provider": "nope"})
    assert bad.status_code == 400 and 'id="provider-error"' in text(bad)


def test_logs_filter_by_schedule_and_type(console, api, schedule, state):
    state.enqueue = lambda ids: None
    console.post(f"/ui/schedules/{schedule['id']}/run")
    from web.models import Event

    with state.db.transaction() as s:
        run = s.scalars(select(Run)).one()
        s.add(Event(org_id=run.org_id, time=datetime.now(timezone.utc), type="schedule_finished",
                    schedule_id=schedule["id"], run_id=run.id, data={"status": "succeeded"}))
    page = text(console.get(f"/ui/logs?schedule_id={schedule['id']}&event_type=schedule_finished"))
    assert "status=succeeded" in page
    assert "No events match" in text(console.get("/ui/logs?event_type=schedule_missed"))
    bad = text(console.get("/ui/logs?start=yesterday"))
    assert "start: &#39;yesterday&#39; is not a date" in bad


def test_a_schedules_timeline_stops_at_its_max_run_count(console, api, schedule_body):
    status, sch = api.post("schedules", schedule_body(name="thrice", max_run_count=3))
    assert status == 200
    page = text(console.get(f"/ui/schedules/{sch['id']}"))
    assert page.count('<li><time datetime="') == 3


def test_run_now_in_the_console_honours_concurrency_forbid(console, api, schedule, state):
    state.enqueue = lambda ids: None  # no worker: the first run stays queued
    sid = schedule["id"]
    assert console.post(f"/ui/schedules/{sid}/run").status_code == 302
    [run] = api.get(f"schedules/{sid}/runs")[1]
    resp = console.post(f"/ui/schedules/{sid}/run")
    assert resp.status_code == 409 and run["id"] in text(resp)
    assert len(api.get(f"schedules/{sid}/runs")[1]) == 1


def test_the_console_refuses_what_the_api_refuses_in_a_clouds_provider_and_options(console, api):
    import json

    for provider, options, named in (("dummy", {}, "provider"),
                                     ("ec2", {"host": "169.254.169.254"}, "options.host"),
                                     ("openstack", {"ex_force_auth_url": "file:///etc/passwd"}, "options.ex_force_auth_url")):
        resp = console.post("/ui/clouds", {"title": "x", "provider": provider, "options": json.dumps(options)})
        assert resp.status_code == 400 and named in text(resp), (provider, options)
    assert api.get("clouds")[1] == []


def test_a_console_refresh_over_the_orgs_listing_limit_is_refused_at_once(console, api, state):
    import threading

    from tests.harness.endpoints import BlackHole
    from tests.harness.service import wait_until
    from web.listings import ListingPool

    state.config.provider_timeout = 3
    state._listings = ListingPool(slots=3, per_org=1, wait=3)
    with BlackHole() as hole:
        status, cloud = api.post("clouds", {"title": "slow", "provider": "ec2",
                                            "credentials": {"key": "AKIDEXAMPLE", "secret": "x" * 20},
                                            "options": hole.options()})
        path = f"/ui/clouds/{cloud['id']}"
        token = console.csrf(path)
        slow = threading.Thread(target=console.post, args=(path + "/refresh", {"csrf_token": token}))
        slow.start()
        wait_until(lambda: hole.accepted >= 1, 30, interval=0.02, what="the refresh to reach the black hole")
        resp = console.post(path + "/refresh", {"csrf_token": token})
        assert resp.status_code == 429 and "CLOUDCRON_LISTINGS_PER_ORG" in text(resp)
        slow.join(timeout=60)


def test_a_schedules_timeline_marks_the_fires_a_calendar_or_a_pause_holds(console, api, schedule_body):
    status, cal = api.post("calendars", {"name": "new year", "entries": [{"date": "2030-01-01"}]})
    status, sch = api.post("schedules", schedule_body(name="daily", schedule_type="crontab",
                                                      schedule_entry={"minute": "0", "hour": "6"},
                                                      start_after="2029-12-30T00:00:00Z", exclude_calendars=[cal["id"]]))
    assert status == 200, sch
    page = text(console.get(f"/ui/schedules/{sch['id']}"))
    assert html.unescape(page).count("excluded by new year: 2030-01-01") == 1
    assert page.count('<li class="marked">') == 1 and page.count('<li><time datetime="') == 9
    api.post(f"schedules/{sch['id']}/pause", {"note": "audit"})
    page = html.unescape(text(console.get(f"/ui/schedules/{sch['id']}")))
    assert page.count("paused: audit") == 9  # every fire is held, but the one the calendar excludes anyway
