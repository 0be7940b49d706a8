"""The service's own output through the real process: a quiet first start, and JSON logs when asked."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

from tests.harness.service import (REPO_ROOT, STOP_DEADLINE, _answers_401, _die_with_parent, free_port, run_cli,
                                   start_service, wait_until)


def _first_start(tmp_path, extra_env: dict) -> tuple[list[str], list[str]]:
    """`migrate` then `serve` on a new data dir, stopped once it answers: (stdout lines, stderr lines) of both."""
    env = {**os.environ, "CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1", **extra_env}
    migrate = run_cli(env, "migrate")
    assert migrate.returncode == 0, migrate.stderr
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "web", "serve", "--port", str(port)], cwd=str(REPO_ROOT),
                                env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e, preexec_fn=_die_with_parent)
    try:
        wait_until(lambda: _answers_401(f"http://127.0.0.1:{port}") or proc.poll() is not None, 60,
                   what="the service to answer")
        wait_until(lambda: "cloudcron API on" in out.read_text(), 10, what="the listening line")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_DEADLINE)
    stdout = migrate.stdout.splitlines() + out.read_text().splitlines()
    stderr = migrate.stderr.splitlines() + err.read_text().splitlines()
    return stdout, stderr


def test_a_first_start_prints_the_token_and_the_address_and_no_library_chatter(tmp_path):
    stdout, stderr = _first_start(tmp_path, {})
    assert stdout[0] == "Created org 'default'. Its API token (shown once, keep it):"
    assert len(stdout[1]) == 64 and stdout[2].startswith("cloudcron API on http://127.0.0.1:")
    assert len(stdout) == 3, stdout
    assert not [line for line in stderr if "huey" in line or "alembic" in line], stderr
    # Before the SIGTERM that ends the test: what the user reads is the sandbox line and the database check.
    started = stderr[:stderr.index(next(line for line in stderr if "received SIGTERM" in line))]
    assert len(started) <= 3, started
    assert stdout[1] not in "\n".join(stderr)


def test_json_logs_are_one_object_per_line_and_the_token_stays_on_stdout(tmp_path):
    stdout, stderr = _first_start(tmp_path, {"CLOUDCRON_LOG_FORMAT": "json"})
    token = stdout[1]
    assert len(token) == 64
    records = [json.loads(line) for line in stderr if line.startswith("{")]
    plain = [line for line in stderr if not line.startswith("{")]
    assert plain == ["database is up to date"]  # migrate's answer to the user, not a log line
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"] == "web.sandbox" for r in records)
    assert token not in "\n".join(stderr)


def test_a_bad_log_format_stops_start_up_naming_the_variable(tmp_path):
    env = {**os.environ, "CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "CLOUDCRON_LOG_FORMAT": "xml"}
    proc = run_cli(env, "migrate")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "cloudcron: configuration error: CLOUDCRON_LOG_FORMAT: 'xml' is not one of plain, json"


def test_a_schedule_line_in_json_carries_the_schedule_id(tmp_path):
    svc = start_service(tmp_path / "data", env={"CLOUDCRON_LOG_FORMAT": "json"})
    try:
        status, cloud = svc.api("POST", "clouds", {"title": "ssh", "provider": "other"})
        assert status == 200, cloud
        status, script = svc.api("POST", "scripts", {"name": "s", "script": "#!/bin/sh\ntrue\n"})
        assert status == 200, script
        status, schedule = svc.api("POST", "schedules", {
            "name": "poisoned", "script_id": script["id"], "machines_per_cloud": [[cloud["id"], "m"]],
            "schedule_type": "crontab", "schedule_entry": {"minute": "*"}})
        assert status == 200, schedule
        # A zone this machine cannot load, written into the row and due now: the dispatcher logs a warning.
        db = sqlite3.connect(svc.data_dir / "cloudcron.db", timeout=30)
        with db:
            db.execute("UPDATE schedules SET timezone = 'Mars/Olympus_Mons', next_run_at = ? WHERE id = ?",
                       (datetime.now(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f"),
                        schedule["id"]))
        db.close()

        def warned():
            lines = [json.loads(line) for line in svc.log_path.read_text().splitlines() if line.startswith("{")]
            return [r for r in lines if r["logger"] == "web.dispatcher" and r["level"] == "WARNING"]

        record = wait_until(warned, 30, what=f"the dispatcher's warning\n{svc.log()}")[0]
        assert record["schedule_id"] == schedule["id"]
        assert "Mars/Olympus_Mons" in record["message"]
    finally:
        svc.stop()


def test_a_run_line_in_json_carries_the_run_id(tmp_path):
    from tests.harness.receiver import LOOPBACK_ALLOWED_ENV
    from tests.harness.service import free_port

    svc = start_service(tmp_path / "data", env={"CLOUDCRON_LOG_FORMAT": "json", "CLOUDCRON_NOTIFY_BACKOFF": "30",
                                                **LOOPBACK_ALLOWED_ENV})
    try:
        closed = free_port()  # nothing listens there: the delivery's first attempt fails and is logged
        status, channel = svc.api("POST", "channels", {"name": "hook", "kind": "webhook", "default": True,
                                                       "url": f"http://127.0.0.1:{closed}/x",
                                                       "secret": "0123456789abcdef"})
        assert status == 200, channel
        _, cloud = svc.api("POST", "clouds", {"title": "ssh", "provider": "other"})
        # A power action on a plain SSH host fails at once: a failed run without any target to reach.
        status, schedule = svc.api("POST", "schedules", {
            "name": "power-on-ssh", "action": "stop", "machines_per_cloud": [[cloud["id"], "m"]],
            "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True})
        assert status == 200, schedule

        def retried():
            lines = [json.loads(line) for line in svc.log_path.read_text().splitlines() if line.startswith("{")]
            return [r for r in lines if r["logger"] == "web.notify"]

        record = wait_until(retried, 60, what=f"the delivery's failed attempt in the log\n{svc.log()}")[0]
        run = svc.api("GET", f"schedules/{schedule['id']}/runs")[1][0]
        assert record["run_id"] == run["id"] and record["delivery_id"]
        assert "connection refused" in record["message"]
        assert "0123456789abcdef" not in svc.log_path.read_text()
    finally:
        svc.stop()
