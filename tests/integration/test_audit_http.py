"""The audit log over real HTTP, from the real service process: a labelled token's changes, masked secrets,
the total in X-Total-Count, and no secret in the service's log."""
from __future__ import annotations

import json
import urllib.request


def get(service, path, token):
    req = urllib.request.Request(service.url + "/api/v1/" + path, headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, json.loads(resp.read()), resp.headers


def test_changes_through_the_real_service_are_in_its_audit_log(service):
    token = service.create_token("audit-http", "deploy-bot")
    status, cloud = service.api("POST", "clouds", {"title": "aws", "provider": "ec2",
                                                   "credentials": {"key": "AKIAHTTPFIRST", "secret": "http-s3cret-1"}},
                                token=token)
    assert status == 200, cloud
    status, body = service.api("PATCH", f"clouds/{cloud['id']}",
                               {"credentials": {"key": "AKIAHTTPSECOND", "secret": "http-s3cret-2"}}, token=token)
    assert status == 200, body
    status, sched = service.api("POST", "schedules", {
        "name": "nightly", "action": "stop", "machines_per_cloud": [[cloud["id"], "i-1"]],
        "schedule_type": "crontab", "schedule_entry": {"minute": "0", "hour": "2"}}, token=token)
    assert status == 200, sched
    status, body = service.api("PATCH", f"schedules/{sched['id']}", {"schedule_entry": {"minute": "30", "hour": "3"}},
                               token=token)
    assert status == 200, body

    status, page, headers = get(service, "audit?limit=1", token)
    assert status == 200 and headers["X-Total-Count"] == "4"
    [newest] = page
    assert newest["action"] == "update" and newest["resource"] == "schedule" and newest["token_label"] == "deploy-bot"
    assert newest["changes"]["schedule_entry"]["before"]["hour"] == "2"
    assert newest["changes"]["schedule_entry"]["after"] == {**newest["changes"]["schedule_entry"]["before"],
                                                            "minute": "30", "hour": "3"}

    _, clouds, _ = get(service, f"audit?resource=cloud&id={cloud['id']}", token)
    assert [e["changes"]["credentials"] for e in clouds] == [{"before": "***", "after": "***"},
                                                             {"before": None, "after": "***"}]
    # Another org's token sees none of it.
    _, theirs, headers = get(service, f"audit?id={cloud['id']}", service.token)
    assert theirs == [] and headers["X-Total-Count"] == "0"
    everything = json.dumps(clouds) + service.log()
    for secret in ("AKIAHTTPFIRST", "http-s3cret-1", "AKIAHTTPSECOND", "http-s3cret-2"):
        assert secret not in everything
