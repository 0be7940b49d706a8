"""The real server started the README's way (python -m web serve), driven like the README's curl commands."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import datetime, timedelta

import pytest

from tests.harness.service import start_service


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """`python -m web serve --host 127.0.0.1 --port <free>` on a fresh data dir, dispatcher and worker included."""
    server = start_service(tmp_path_factory.mktemp("serve") / "data", org=None)
    yield server
    server.stop()


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def curl(srv, method, path, body=None, token=None):
    """What `curl -H "Authorization: $TOKEN" [-X METHOD] [-d BODY] $API/path` does: (status, json, headers).

    A string body is sent as is; urllib, like curl -d, labels it application/x-www-form-urlencoded.
    """
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    req = urllib.request.Request(f"{srv.url}/api/v1/{path}", data=data, method=method)
    req.add_header("Authorization", token if token is not None else srv.token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def test_first_start_prints_the_default_orgs_token_and_it_works(srv):
    assert re.fullmatch(r"[0-9a-f]{64}", srv.token or "")
    status, body, _ = curl(srv, "GET", "ping")
    assert status == 200 and body["org"] == "default"
    status, body, _ = curl(srv, "GET", "ping", token=f"Bearer {srv.token}")
    assert status == 200
    status, body, _ = curl(srv, "GET", "ping", token="0" * 64)
    assert status == 401 and "error" in body


def test_the_seed_examples_work_as_curl_commands(srv):
    status, cloud, _ = curl(srv, "POST", "clouds", '{"title": "aws", "provider": "ec2", '
                            '"credentials": {"key": "AKIDEXAMPLE", "secret": "not-a-real-secret"}, '
                            # A closed local port: nothing here may reach real AWS if a fire came early.
                            '"options": {"region": "us-east-1", "host": "127.0.0.1", "port": 9, "secure": false}}')
    assert status == 200, cloud
    target = f'[["{cloud["id"]}", "i-781daaf3"]]'

    # Add a task that starts a machine every 2 minutes (the seed's JSON.stringify'd entry and legacy names).
    status, every2m, _ = curl(srv, "POST", "schedules", '{"name": "test", "action": "start", "machines_per_cloud": '
                              + target + ', "enabled": true, "expires": "2030-11-10 20:20:00", "cronjob_type": "interval", '
                              '"cronjob_entry": "{\\"every\\": 2, \\"period\\": \\"minutes\\"}"}')
    assert status == 200, every2m
    assert every2m["schedule_entry"] == {"every": 2, "period": "minutes"}
    assert every2m["expires"] == "2030-11-10T20:20:00Z" and every2m["active"] is True

    # A script, and a task that runs it every 2 hours.
    status, script, _ = curl(srv, "POST", "scripts", '{"name": "uptime", "script": "#!/bin/sh\\nuptime\\n", '
                             '"exec_type": "executable"}')
    assert status == 200, script
    status, every2h, _ = curl(srv, "POST", "schedules", '{"name": "test2", "script_id": "' + script["id"] + '", '
                              '"machines_per_cloud": ' + target + ', "enabled": true, "expires": "2030-11-10 20:20:00", '
                              '"schedule_type": "interval", "schedule_entry": {"every": 2, "period": "hours"}}')
    assert status == 200, every2h
    assert every2h["script_id"] == script["id"] and every2h["action"] is None

    # Get all your tasks: a JSON array, newest first, the total in a header.
    status, listed, headers = curl(srv, "GET", "schedules")
    assert status == 200 and [s["name"] for s in listed] == ["test2", "test"]
    assert headers["X-Total-Count"] == "2"

    # Get one.
    status, one, _ = curl(srv, "GET", f"schedules/{every2m['id']}")
    assert status == 200 and one["name"] == "test" and one["next_run_at"] == every2m["next_run_at"]

    # Edit with POST, as the seed does: the entry changes and next_run_at is recomputed.
    status, edited, _ = curl(srv, "POST", f"schedules/{every2h['id']}", '{"schedule_entry": {"every": 5, "period": "hours"}}')
    assert status == 200, edited
    assert edited["schedule_entry"] == {"every": 5, "period": "hours"} and edited["name"] == "test2"
    assert iso(edited["next_run_at"]) - iso(edited["created_at"]) == timedelta(hours=5)

    # Delete both; they are gone.
    for sched in (every2m, every2h):
        assert curl(srv, "DELETE", f"schedules/{sched['id']}")[:2] == (200, {"deleted": sched["id"]})
        assert curl(srv, "GET", f"schedules/{sched['id']}")[0] == 404
    assert curl(srv, "GET", "schedules")[1] == []
    assert "not-a-real-secret" not in json.dumps(curl(srv, "GET", f"clouds/{cloud['id']}")[1])


def test_token_create_prints_only_a_token_and_token_revoke_makes_it_401(srv):
    created = srv.cli("token", "create", "--org", "ops", "--name", "ci")
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", created.stdout)
    token = created.stdout.strip()
    status, body, _ = curl(srv, "GET", "ping", token=token)
    assert status == 200 and body["org"] == "ops"
    # The new org sees nothing of org default.
    assert curl(srv, "GET", "clouds", token=token)[1] == []

    revoked = srv.cli("token", "revoke", token)
    assert revoked.returncode == 0, revoked.stderr
    status, body, _ = curl(srv, "GET", "ping", token=token)
    assert status == 401 and "error" in body
    assert srv.cli("token", "revoke", token).returncode != 0
    assert curl(srv, "GET", "ping")[0] == 200  # the default org's token is untouched


def test_a_restart_prints_no_new_token_and_the_old_one_still_works(srv, tmp_path):
    srv.stop()
    again = start_service(srv.data_dir, org=None)
    try:
        assert again.token is None
        assert curl(again, "GET", "ping", token=srv.token)[:2] == (200, {"ok": True, "org": "default"})
    finally:
        again.stop()
