"""Changes made in the console are in the audit log, as made by the token the console session acts for."""
from __future__ import annotations

from web.auth import create_token

from .conftest import Console
from .test_console import form_body


def test_a_console_edit_is_recorded_with_the_sessions_token_label(app, api, schedule, state):
    with state.db.transaction() as session:
        token = create_token(session, "acme", "alice's laptop")
    console = Console(app.test_client())
    assert console.sign_in(token).status_code == 302

    edit = f"/ui/schedules/{schedule['id']}/edit"
    cloud_id, machine = schedule["machines_per_cloud"][0]
    resp = console.post(edit, form_body(cloud_id, machine=machine, every="2", period="minutes",
                                        description="edited here"), csrf_from=edit)
    assert resp.status_code == 302
    state.enqueue = lambda ids: None  # no worker here
    assert console.post(f"/ui/schedules/{schedule['id']}/run").status_code == 302

    status, log = api.get("audit?token=alice's laptop")
    assert status == 200
    run_now, update = log
    assert update["action"] == "update" and update["resource_id"] == schedule["id"]
    assert update["changes"] == {"description": {"before": None, "after": "edited here"}}
    assert run_now["action"] == "run_now"
    assert {e["token_label"] for e in log} == {"alice's laptop"}


def test_a_script_added_in_the_console_is_recorded(console, api):
    resp = console.post("/ui/scripts/new", {"name": "uptime", "description": "", "script": "#!/bin/sh\nuptime\n",
                                            "exec_type": "executable"}, csrf_from="/ui/scripts/new")
    assert resp.status_code == 302
    [entry] = api.get("audit?resource=script")[1]
    assert entry["action"] == "create" and entry["name"] == "uptime"
    assert entry["token_id"] is not None


def test_a_schedules_page_lists_who_changed_it_newest_first(app, api, schedule, state):
    from .conftest import text

    with state.db.transaction() as session:
        token = create_token(session, "acme", "bob")
    console = Console(app.test_client())
    assert console.sign_in(token).status_code == 302
    assert console.post(f"/ui/schedules/{schedule['id']}/enabled", {"enabled": "false"}).status_code == 302

    page = text(console.get(f"/ui/schedules/{schedule['id']}"))
    changes = page[page.index('id="changes-h"'):]
    rows = changes.split("<tr>")[2:]  # after the header row
    assert len(rows) == 2
    assert "bob" in rows[0] and "update" in rows[0] and "enabled" in rows[0]
    assert "create" in rows[1] and "bob" not in rows[1]
