"""Notifications through the real server process: real HTTP receivers on loopback, a moto EC2 endpoint,
real runs taken by the real worker, the signature checked the way the README tells receivers to."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from tests.harness.receiver import LOOPBACK_ALLOWED_ENV
from tests.harness.service import start_service, wait_until

SECRET = "whsec-0123456789abcdef"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    # The receivers are on loopback, which the default CLOUDCRON_NOTIFY_DENIED_NETWORKS refuses.
    service = start_service(tmp_path_factory.mktemp("notify") / "data",
                            env={"CLOUDCRON_NOTIFY_BACKOFF": "0.2", "CLOUDCRON_PUBLIC_URL": "https://cron.example.com",
                                 **LOOPBACK_ALLOWED_ENV})
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def aws(svc, moto_server):
    status, cloud = svc.api("POST", "clouds", {"title": "aws", "provider": "ec2",
                                               "credentials": dict(moto_server.credentials),
                                               "options": moto_server.options})
    assert status == 200, cloud
    return cloud


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The receiver's check, as the README gives it."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) <= tolerance


def _channel(svc, **body):
    status, channel = svc.api("POST", "channels", body)
    assert status == 200, channel
    return channel


def _finished_run(svc, schedule_id, timeout=90):
    def done():
        runs = svc.api("GET", f"schedules/{schedule_id}/runs")[1]
        ended = [r for r in runs if r["status"] not in ("queued", "running")]
        return ended[0] if ended else None

    return wait_until(done, timeout, what=f"a finished run of {schedule_id}\n{svc.log()}")


def _deliveries(svc, run_id, done=("delivered", "failed"), timeout=60):
    def settled():
        body = svc.api("GET", f"runs/{run_id}")[1]
        return body["deliveries"] if body["deliveries"] and all(d["status"] in done for d in body["deliveries"]) else None

    return wait_until(settled, timeout, what=f"the run's deliveries to settle\n{svc.log()}")


def test_a_failed_run_on_a_moto_machine_reaches_a_webhook_signed(svc, aws, moto_server, receiver):
    [present] = moto_server.create_machines(1)
    hook = receiver()
    channel = _channel(svc, name="hook", kind="webhook", url=hook.url + "/cron", secret=SECRET)
    status, schedule = svc.api("POST", "schedules", {
        "name": "stop-two", "action": "stop", "machines_per_cloud": [[aws["id"], present], [aws["id"], "i-0000000000gone"]],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True,
        "notify": {"on": ["failed", "partial"], "channels": ["hook"]}})
    assert status == 200, schedule
    run = _finished_run(svc, schedule["id"])
    assert run["status"] == "partial", run
    [delivery] = _deliveries(svc, run["id"])
    assert delivery["status"] == "delivered" and delivery["channel_id"] == channel["id"]
    assert len(delivery["attempts"]) == 1 and delivery["attempts"][0]["ok"] is True

    [(headers, body)] = hook.requests
    assert verify(SECRET, headers["x-cloudcron-signature"], body)
    assert not verify("another-secret-0000", headers["x-cloudcron-signature"], body)
    assert not verify(SECRET, headers["x-cloudcron-signature"], body.replace(b"partial", b"succeeded"))
    event = json.loads(body)
    assert event["type"] == "run.finished" and event["delivery_id"] == delivery["id"]
    assert event["schedule"] == {"id": schedule["id"], "name": "stop-two"}
    assert event["run"]["id"] == run["id"] and event["run"]["status"] == "partial"
    assert event["run"]["url"] == f"https://cron.example.com/ui/runs/{run['id']}"
    [bad] = event["machines_not_succeeded"]
    assert bad["machine_id"] == "i-0000000000gone" and bad["status"] == "failed" and bad["error"]
    assert event["machines_total"] == 2


def test_a_receiver_failing_twice_gets_the_event_once_after_three_attempts(svc, aws, moto_server, receiver):
    [machine] = moto_server.create_machines(1)
    hook = receiver(statuses=(500, 500, 200))
    _channel(svc, name="flaky", kind="webhook", url=hook.url + "/", secret=SECRET)
    status, schedule = svc.api("POST", "schedules", {
        "name": "stop-flaky", "action": "stop", "machines_per_cloud": [[aws["id"], machine]],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True,
        "notify": {"on": ["succeeded"], "channels": ["flaky"]}})
    assert status == 200, schedule
    run = _finished_run(svc, schedule["id"])
    assert run["status"] == "succeeded", run
    [delivery] = _deliveries(svc, run["id"])
    assert delivery["status"] == "delivered"
    assert [a["ok"] for a in delivery["attempts"]] == [False, False, True]
    assert [a["error"] for a in delivery["attempts"][:2]] == ["HTTP 500 Internal Server Error"] * 2
    assert len(hook.requests) == 3
    ids = {json.loads(body)["delivery_id"] for _, body in hook.requests}
    assert ids == {delivery["id"]}  # the same event each time: a receiver can drop what it already took


def test_an_apprise_json_url_to_a_local_receiver_delivers(svc, receiver):
    target = receiver()
    port = target.url.rsplit(":", 1)[1]
    channel = _channel(svc, name="apprise-json", kind="apprise", url=f"json://127.0.0.1:{port}/notify")
    assert channel["url"] == "json://…"
    status, delivery = svc.api("POST", f"channels/{channel['id']}/test")
    assert status == 200, delivery
    assert delivery["status"] == "delivered" and delivery["kind"] == "test" and len(delivery["attempts"]) == 1
    [(headers, body)] = target.requests
    sent = json.loads(body)
    assert sent["title"] == "cloudcron: test notification" and "apprise-json" in sent["message"]


def test_a_test_to_a_receiver_that_refuses_records_the_failure_without_the_url(svc, receiver):
    hook = receiver(statuses=(403,))
    channel = _channel(svc, name="refusing", kind="webhook", url=hook.url + "/T0KEN-in-path", secret=SECRET)
    status, delivery = svc.api("POST", f"channels/{channel['id']}/test")
    assert status == 200, delivery
    assert delivery["status"] == "failed" and delivery["attempts"][0]["error"] == "HTTP 403 Forbidden"
    assert "T0KEN" not in svc.log()


def test_a_webhook_aimed_at_the_service_itself_is_refused_by_default(service):
    # `service` runs with the default CLOUDCRON_NOTIFY_DENIED_NETWORKS; a tenant's receiver on the workers' own
    # loopback would be the API itself (or Redis, PostgreSQL) seen from inside.
    status, body = service.api("POST", "channels", {"name": "inside", "kind": "webhook", "secret": SECRET,
                                                    "url": service.url + "/api/v1/tokens"})
    assert status == 400, body
    assert body["error"].startswith("url: 127.0.0.1 is in a network cloudcron does not contact "
                                    "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)"), body
    port = service.url.rsplit(":", 1)[1]
    channel = _channel(service, name="inside-by-name", kind="webhook", secret=SECRET,
                       url=f"http://localhost:{port}/api/v1/tokens")
    try:
        status, delivery = service.api("POST", f"channels/{channel['id']}/test")
        assert status == 200 and delivery["status"] == "failed", delivery
        assert delivery["attempts"][0]["error"] == ("the receiver's address is in a network cloudcron does not "
                                                    "contact (CLOUDCRON_NOTIFY_DENIED_NETWORKS)")
    finally:
        service.api("DELETE", f"channels/{channel['id']}")


def test_an_operators_list_is_the_whole_list(svc):
    # svc's list leaves loopback out (its receivers are there); the private ranges it names stay refused.
    for url in ("http://10.0.0.1/hook", "http://[fd00:ec2::254]/hook", "http://192.168.1.1/hook"):
        status, body = svc.api("POST", "channels", {"name": "private", "kind": "webhook", "secret": SECRET, "url": url})
        assert status == 400 and "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)" in body["error"], (url, body)
