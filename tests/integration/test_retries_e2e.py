"""Run retries through the real server process: its worker, ansible-playbook and the machine module against a
moto EC2 endpoint behind a loopback proxy that refuses StopInstances with 503, and a real webhook receiver."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from tests.harness.receiver import LOOPBACK_ALLOWED_ENV
from tests.harness.service import REPO_ROOT, start_service, wait_until

# The machine module asks a 5xx call again twice itself (RETRY_DELAYS): three refusals fail attempt 1.
REFUSALS_PER_ATTEMPT = 3


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    service = start_service(tmp_path_factory.mktemp("retries") / "data",
                            env={"CLOUDCRON_NOTIFY_BACKOFF": "0.2", **LOOPBACK_ALLOWED_ENV})  # a loopback receiver
    try:
        yield service
    finally:
        service.stop()


def _cloud_behind(svc, moto_server, proxy):
    status, cloud = svc.api("POST", "clouds", {
        "title": f"aws-{proxy.port}", "provider": "ec2", "credentials": dict(moto_server.credentials),
        "options": {**moto_server.options, "host": proxy.host, "port": proxy.port}})
    assert status == 200, cloud
    return cloud


def _finished_run(svc, schedule_id, timeout=120):
    def done():
        runs = svc.api("GET", f"schedules/{schedule_id}/runs")[1]
        ended = [r for r in runs if r["status"] not in ("queued", "running")]
        return ended[0] if ended else None

    return wait_until(done, timeout, what=f"a finished run of {schedule_id}\n{svc.log()}")


def _events(svc, run_id):
    status, body = svc.api("GET", f"logs?run_id={run_id}&limit=500")
    assert status == 200, body
    return body if isinstance(body, list) else body.get("logs") or body.get("items") or body


def test_a_machine_refused_once_stops_on_retry_and_a_missing_one_is_not_retried(svc, moto_server,
                                                                                   refusing_proxy, receiver):
    [machine] = moto_server.create_machines(1)
    proxy = refusing_proxy(moto_server.url, "StopInstances", refuse=REFUSALS_PER_ATTEMPT)
    cloud = _cloud_behind(svc, moto_server, proxy)
    hook = receiver()
    status, channel = svc.api("POST", "channels", {"name": "hook", "kind": "webhook", "url": hook.url + "/",
                                                   "secret": "whsec-0123456789abcdef"})
    assert status == 200, channel
    status, schedule = svc.api("POST", "schedules", {
        "name": "stop-retried", "action": "stop",
        "machines_per_cloud": [[cloud["id"], machine], [cloud["id"], "i-0000000000gone"]],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True,
        "retries": {"max": 2, "delay": 0, "backoff": 1},
        "notify": {"on": ["failed", "partial", "succeeded"], "channels": ["hook"]}})
    assert status == 200, schedule

    run = _finished_run(svc, schedule["id"])
    assert run["status"] == "partial", run
    assert moto_server.state(machine) in ("stopping", "stopped")
    assert proxy.refused == REFUSALS_PER_ATTEMPT

    status, body = svc.api("GET", f"runs/{run['id']}")
    assert status == 200, body
    rows = {m["machine_id"]: m for m in body["machines"]}
    retried, gone = rows[machine], rows["i-0000000000gone"]
    assert retried["status"] == "succeeded" and retried["error"] is None
    assert [a["attempt"] for a in retried["attempts"]] == [1, 2]
    assert retried["attempts"][0]["status"] == "failed" and "HTTP 503" in retried["attempts"][0]["error"]
    assert retried["attempts"][1]["status"] == "succeeded"
    assert gone["status"] == "failed" and "not found" in gone["error"]
    assert [a["attempt"] for a in gone["attempts"]] == [1]  # a final failure is not tried again

    events = _events(svc, run["id"])
    kinds = [(e["type"], e.get("machine_id"), e.get("attempt")) for e in events]
    assert ("machine_retried", machine, 2) in kinds
    assert ("machine_action_succeeded", machine, 2) in kinds
    assert not [k for k in kinds if k[0] == "machine_retried" and k[1] == "i-0000000000gone"]
    assert sum(1 for e in events if e["type"] == "schedule_finished") == 1

    # One notification, after the last attempt, with the run's final status.
    wait_until(lambda: hook.requests, 60, what=f"the run's notification\n{svc.log()}")
    time.sleep(1.0)  # a second notification would have been queued with the first
    [(_, raw)] = hook.requests
    event = json.loads(raw)
    assert event["run"]["id"] == run["id"] and event["run"]["status"] == "partial"
    [bad] = event["machines_not_succeeded"]
    assert bad["machine_id"] == "i-0000000000gone"


def test_without_retries_a_refused_machine_fails_after_one_attempt(svc, moto_server, refusing_proxy):
    [machine] = moto_server.create_machines(1)
    proxy = refusing_proxy(moto_server.url, "StopInstances", refuse=REFUSALS_PER_ATTEMPT)
    cloud = _cloud_behind(svc, moto_server, proxy)
    status, schedule = svc.api("POST", "schedules", {
        "name": "stop-once", "action": "stop", "machines_per_cloud": [[cloud["id"], machine]],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True})
    assert status == 200, schedule
    run = _finished_run(svc, schedule["id"])
    assert run["status"] == "failed", run
    [row] = svc.api("GET", f"runs/{run['id']}")[1]["machines"]
    assert [a["attempt"] for a in row["attempts"]] == [1] and "HTTP 503" in row["error"]
    assert moto_server.state(machine) == "running"


def test_retries_stop_after_max_and_the_run_ends_with_the_last_attempts_error(svc, moto_server, refusing_proxy):
    [machine] = moto_server.create_machines(1)
    proxy = refusing_proxy(moto_server.url, "StopInstances", refuse=100)
    cloud = _cloud_behind(svc, moto_server, proxy)
    status, schedule = svc.api("POST", "schedules", {
        "name": "stop-never", "action": "stop", "machines_per_cloud": [[cloud["id"], machine]],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True,
        "retries": {"max": 1, "delay": 0.5, "backoff": 1}})
    assert status == 200, schedule
    run = _finished_run(svc, schedule["id"])
    assert run["status"] == "failed", run
    [row] = svc.api("GET", f"runs/{run['id']}")[1]["machines"]
    assert [(a["attempt"], a["status"]) for a in row["attempts"]] == [(1, "failed"), (2, "failed")]
    assert all("HTTP 503" in a["error"] for a in row["attempts"])
    assert proxy.refused == 2 * REFUSALS_PER_ATTEMPT
    assert moto_server.state(machine) == "running"


def test_with_after_retries_false_the_refused_attempt_is_notified_before_its_retry(svc, moto_server, refusing_proxy,
                                                                                   receiver):
    [machine] = moto_server.create_machines(1)
    proxy = refusing_proxy(moto_server.url, "StopInstances", refuse=REFUSALS_PER_ATTEMPT)
    cloud = _cloud_behind(svc, moto_server, proxy)
    hook = receiver()
    status, channel = svc.api("POST", "channels", {"name": "hook-each", "kind": "webhook", "url": hook.url + "/",
                                                   "secret": "whsec-0123456789abcdef"})
    assert status == 200, channel
    status, schedule = svc.api("POST", "schedules", {
        "name": "stop-each-attempt", "action": "stop", "machines_per_cloud": [[cloud["id"], machine]],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True,
        "retries": {"max": 2, "delay": 1, "backoff": 1},
        "notify": {"on": ["failed", "succeeded"], "channels": ["hook-each"], "after_retries": False}})
    assert status == 200, schedule

    run = _finished_run(svc, schedule["id"])
    assert run["status"] == "succeeded", run
    wait_until(lambda: len(hook.requests) >= 2, 60, what=f"the run's two notifications\n{svc.log()}")
    time.sleep(1.0)  # a third would have been queued by now
    sent = [(headers["x-cloudcron-event"], json.loads(body)) for headers, body in hook.requests]
    assert [kind for kind, _ in sent] == ["run.retrying", "run.finished"]
    (_, retrying), (_, finished) = sent
    assert retrying["run"]["id"] == finished["run"]["id"] == run["id"]
    assert retrying["attempt"]["number"] == 1 and retrying["attempt"]["of"] == 3
    assert retrying["attempt"]["status"] == "failed"
    # The wait before retry 1 is delay * backoff ** 0 = 1 s after the failed attempt was recorded.
    due = datetime.fromisoformat(retrying["attempt"]["retry_at"]) - datetime.fromisoformat(retrying["time"])
    assert due == timedelta(seconds=1)
    [refused] = retrying["machines_not_succeeded"]
    assert refused["machine_id"] == machine and refused["retry"] is True and "HTTP 503" in refused["error"]
    assert finished["run"]["status"] == "succeeded" and finished["machines_not_succeeded"] == []
    kinds = [d["kind"] for d in svc.api("GET", f"runs/{run['id']}")[1]["deliveries"]]
    assert kinds == ["retry", "run"]


def _start_worker(server, log):
    return subprocess.Popen([sys.executable, "-m", "web", "worker", "--workers", "1"], cwd=REPO_ROOT, env=server.env,
                            stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "sigterm"])
def test_a_worker_stopped_while_a_run_waits_to_retry_leaves_the_retry_to_the_next_worker(tmp_path, moto_server,
                                                                                          refusing_proxy, stop):
    """serve without a worker, and a `python -m web worker` stopped during a run's wait before attempt 2: killed,
    the sweep hands the run on once its heartbeat is 30 s old; SIGTERM, the drain does (after its 2 s). Either
    way the run is not interrupted: the next worker makes attempt 2 when it is due, and the run succeeds."""
    server = start_service(tmp_path / "data", serve_args=("--no-worker",), env={"CLOUDCRON_DRAIN_SECONDS": "2"})
    log = open(tmp_path / "worker.log", "wb")
    worker = _start_worker(server, log)
    try:
        [machine] = moto_server.create_machines(1)
        proxy = refusing_proxy(moto_server.url, "StopInstances", refuse=REFUSALS_PER_ATTEMPT)
        cloud = _cloud_behind(server, moto_server, proxy)
        status, schedule = server.api("POST", "schedules", {
            "name": "stop-outlives-its-worker", "action": "stop", "machines_per_cloud": [[cloud["id"], machine]],
            "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True,
            "retries": {"max": 1, "delay": 20, "backoff": 1}})
        assert status == 200, schedule

        def waiting():  # attempt 1 failed and the run waits to retry: its next attempt is due at retry_at
            return next((r for r in server.api("GET", f"schedules/{schedule['id']}/runs")[1]
                         if r["status"] == "running" and r["retry_at"]), None)

        run = wait_until(waiting, 120, what=f"attempt 1 to fail\n{server.log()}")
        due = datetime.fromisoformat(run["retry_at"])
        os.kill(worker.pid, stop)
        assert worker.wait(timeout=60) == (0 if stop == signal.SIGTERM else -signal.SIGKILL)
        worker = _start_worker(server, log)

        ended = _finished_run(server, schedule["id"], timeout=180)
        assert ended["id"] == run["id"] and ended["status"] == "succeeded", (ended, server.log())
        [row] = server.api("GET", f"runs/{run['id']}")[1]["machines"]
        assert [(a["attempt"], a["status"]) for a in row["attempts"]] == [(1, "failed"), (2, "succeeded")]
        assert proxy.refused == REFUSALS_PER_ATTEMPT and moto_server.state(machine) in ("stopping", "stopped")
        assert ended["retry_at"] is None
        events = _events(server, run["id"])
        types = [e["type"] for e in events]
        # Attempt 2 began no earlier than it was due (after a SIGTERM the next worker waits for it).
        [retried] = [e for e in events if e["type"] == "machine_retried"]
        assert datetime.fromisoformat(retried["time"]) >= due
        [handed_on] = [e for e in events if e["type"] == "retry_handed_on"]
        assert handed_on["reason"] == ("shutdown" if stop == signal.SIGTERM else "worker_lost")
        assert "schedule_interrupted" not in types
        assert "retry_handed_on" in types and "retry_resumed" in types and "machine_retried" in types
        assert types.count("schedule_finished") == 1
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        server.stop()
        log.close()
