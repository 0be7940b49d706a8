"""/api/v1/channels and schedules' notify setting, through the Flask test client."""
from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pytest

from tests.harness.receiver import LOOPBACK_ALLOWED

HOOK = {"name": "ops-hook", "kind": "webhook", "url": "https://hooks.example.com/cron/T0KEN-in-path",
        "secret": "s3cret-s3cret-s3cret"}
SLACK = {"name": "ops-slack", "kind": "apprise",
         "url": "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops"}


def _stored(api) -> str:
    """Everything in the database file, as text."""
    db = sqlite3.connect(api.state.config.data_dir / "cloudcron.db")
    try:
        return "\n".join(str(row) for row in db.execute("SELECT * FROM channels"))
    finally:
        db.close()


def test_a_webhook_channel_is_answered_masked_and_stored_encrypted(api):
    status, body = api.post("channels", HOOK)
    assert status == 200, body
    assert body["url"] == "https://hooks.example.com/…" and body["has_secret"] is True and body["default"] is False
    assert "secret" not in body
    status, listed = api.get("channels")
    assert status == 200 and [c["id"] for c in listed] == [body["id"]]
    assert "T0KEN" not in str(listed) and "s3cret" not in str(listed)
    stored = _stored(api)
    assert "T0KEN" not in stored and "s3cret" not in stored and "hooks.example.com/…" in stored


def test_an_apprise_channel_shows_only_its_scheme(api):
    status, body = api.post("channels", SLACK)
    assert status == 200, body
    assert body["url"] == "slack://…" and body["has_secret"] is False
    assert "TIiajkdnlazk" not in _stored(api)


@pytest.mark.parametrize("change, error", [
    ({"kind": None}, "kind: is required (one of 'apprise', 'webhook')"),
    ({"kind": "email"}, "kind: must be one of 'apprise' or 'webhook'"),
    ({"url": "ftp://hooks.example.com/x"}, "url: a webhook URL must be http:// or https:// with a host"),
    ({"url": "http://169.254.169.254/latest"}, "url: 169.254.169.254 is in a network cloudcron does not contact "
                                               "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)"),
    ({"secret": None}, "secret: is required for a webhook"),
    ({"secret": "short"}, "secret: must be at least 16 characters"),
    ({"name": ""}, "name: is required"),
    ({"colour": "red"}, "colour: is not a known field"),
])
def test_a_bad_webhook_is_refused_naming_the_field(api, change, error):
    status, body = api.post("channels", {**HOOK, **change})
    assert status == 400
    assert body["error"].startswith(error), body


def test_an_apprise_url_apprise_cannot_read_is_refused(api):
    status, body = api.post("channels", {**SLACK, "url": "nosuchservice://abc"})
    assert status == 400 and body["error"].startswith("url: Apprise does not read it as a 'nosuchservice' URL")
    status, body = api.post("channels", {**SLACK, "secret": "0123456789abcdef"})
    assert status == 400 and body["error"].startswith("secret: only webhook channels take a secret")


def test_a_duplicate_name_is_a_conflict(api):
    assert api.post("channels", HOOK)[0] == 200
    status, body = api.post("channels", {**SLACK, "name": HOOK["name"]})
    assert status == 409 and body["error"].startswith("name:")


def test_an_edit_keeps_the_url_and_secret_it_does_not_send(api):
    _, hook = api.post("channels", HOOK)
    status, body = api.patch(f"channels/{hook['id']}", {"name": "renamed", "default": True})
    assert status == 200 and body["name"] == "renamed" and body["default"] is True
    assert body["url"] == "https://hooks.example.com/…"
    status, body = api.patch(f"channels/{hook['id']}", {"kind": "apprise"})
    assert status == 400 and body["error"] == "url: is required when kind changes"


def test_another_orgs_channel_is_not_found(api, other_api):
    _, hook = api.post("channels", HOOK)
    for call in (other_api.get, other_api.delete, other_api.patch):
        status, body = call(f"channels/{hook['id']}")
        assert status == 404, body
    assert other_api.post(f"channels/{hook['id']}/test")[0] == 404
    assert other_api.get("channels")[1] == []


def test_a_schedule_names_channels_by_name_and_stores_ids(api, schedule_body):
    _, hook = api.post("channels", HOOK)
    status, body = api.post("schedules", schedule_body(notify={"on": ["failed", "missed"], "channels": ["ops-hook"]}))
    assert status == 200, body
    assert body["notify"] == {"on": ["failed", "missed"], "channels": [hook["id"]], "after_retries": True}
    status, body = api.patch(f"schedules/{body['id']}", {"notify": None})
    assert status == 200 and body["notify"] is None


def test_a_schedule_cannot_notify_another_orgs_channel(api, other_api, schedule_body):
    _, hook = api.post("channels", HOOK)
    status, cloud = other_api.post("clouds", {"title": "lab", "provider": "other"})
    body = schedule_body(notify={"channels": [hook["id"]]})
    body["machines_per_cloud"] = [[cloud["id"], "m"]]
    status, answer = other_api.post("schedules", body)
    assert status == 400 and answer["error"] == f"notify.channels.0: no channel '{hook['id']}' in this org"


@pytest.mark.parametrize("notify, error", [
    ({"on": ["exploded"]}, "notify.on.0: must be one of succeeded, failed"),
    ({"on": "failed"}, "notify.on: must be a list of run statuses"),
    ({"when": ["failed"]}, "notify.when: is not a known field"),
    ({"after_retries": "yes"}, "notify.after_retries: must be true or false"),
    ("failed", "notify: must be an object"),
])
def test_a_bad_notify_setting_is_refused_naming_the_field(api, schedule_body, notify, error):
    status, body = api.post("schedules", schedule_body(notify=notify))
    assert status == 400 and body["error"].startswith(error), body


def test_a_channel_a_schedule_notifies_cannot_be_deleted(api, schedule_body):
    _, hook = api.post("channels", HOOK)
    _, schedule = api.post("schedules", schedule_body(notify={"channels": [hook["id"]]}))
    status, body = api.delete(f"channels/{hook['id']}")
    assert status == 409 and "nightly" in body["error"]
    api.patch(f"schedules/{schedule['id']}", {"notify": {"channels": []}})
    assert api.delete(f"channels/{hook['id']}")[0] == 200


def test_a_run_shows_its_deliveries(api, schedule):
    status, run = api.post(f"schedules/{schedule['id']}/run")
    assert status == 200, run
    status, body = api.get(f"runs/{run['id']}")
    assert status == 200 and body["deliveries"] == []


PRIVATE = [
    "127.0.0.1", "127.1.2.3", "[::1]", "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.10", "100.64.0.1",
    "0.0.0.0", "[::]", "169.254.169.254", "[fe80::1]", "[fc00::1]", "[fd00:ec2::254]", "224.0.0.1", "[ff02::1]",
    # IPv6 forms of denied IPv4 addresses: IPv4-mapped (127.0.0.1, 10.0.0.1), IPv4-compatible, NAT64, 6to4
    "[::ffff:7f00:1]", "[::ffff:a00:1]", "[::7f00:1]", "[64:ff9b::a00:1]", "[2002:c0a8:101::]",
]


@pytest.mark.parametrize("kind, address", [("webhook", a) for a in PRIVATE] + [("apprise", a) for a in PRIVATE] + [
    # Apprise does not read an IPv6 address written with a dotted IPv4 tail; a webhook URL may have one.
    ("webhook", "[::ffff:127.0.0.1]"), ("webhook", "[::ffff:10.0.0.1]"), ("webhook", "[::127.0.0.1]")])
def test_a_receiver_on_a_private_or_loopback_address_is_refused_by_default(api, kind, address):
    url = f"http://{address}:8080/hook" if kind == "webhook" else f"json://{address}:8080/hook"
    status, body = api.post("channels", {**HOOK, "kind": kind, "url": url,
                                         **({} if kind == "webhook" else {"secret": None})})
    assert status == 400, body
    assert body["error"].startswith("url: ") and body["error"].endswith(
        " is in a network cloudcron does not contact (CLOUDCRON_NOTIFY_DENIED_NETWORKS)"), body


def test_an_edit_or_apply_to_a_loopback_receiver_is_refused_by_default(api):
    _, hook = api.post("channels", HOOK)
    status, body = api.patch(f"channels/{hook['id']}", {"url": "http://127.0.0.1:8080/admin"})
    assert status == 400 and "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)" in body["error"], body
    status, body = api.put("channels/by-name/ops-hook?update_secrets=true",
                           {"kind": "webhook", "url": "http://[::1]:6379/", "secret": HOOK["secret"]})
    assert status == 400 and "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)" in body["error"], body
    assert api.get(f"channels/{hook['id']}")[1]["url"] == "https://hooks.example.com/…"


def test_provider_endpoints_keep_their_own_list(api):
    # A private cloud on 10.x or on this host is legitimate: only CLOUDCRON_DENIED_NETWORKS applies to it.
    for host in ("10.1.2.3", "127.0.0.1"):
        status, body = api.post("clouds", {"title": f"private {host}", "provider": "ec2",
                                           "credentials": {"key": "AKIDEXAMPLE", "secret": "x" * 20},
                                           "options": {"host": host, "port": 5000}})
        assert status == 200, body
    assert api.post("channels", {**HOOK, "url": "http://10.1.2.3:5000/hook"})[0] == 400


# 2130706433 is 127.0.0.1 as one decimal number: not an address literal to the check when written, the resolver
# reads it as one.
@pytest.mark.parametrize("kind, host", [("webhook", "localhost"), ("apprise", "localhost"), ("webhook", "2130706433")])
def test_a_host_name_that_resolves_to_loopback_is_refused_when_sent_by_default(api, receiver, kind, host):
    hook = receiver()
    port = hook.url.rsplit(":", 1)[1]
    # A host name passes when written (it may resolve anywhere); the address it resolves to is checked at send.
    url = f"http://{host}:{port}/hook" if kind == "webhook" else f"json://{host}:{port}/hook"
    status, channel = api.post("channels", {**HOOK, "kind": kind, "url": url,
                                            **({} if kind == "webhook" else {"secret": None})})
    assert status == 200, channel
    status, delivery = api.post(f"channels/{channel['id']}/test")
    assert status == 200, delivery
    assert delivery["status"] == "failed" and hook.requests == []
    assert delivery["attempts"][0]["error"] == ("the receiver's address is in a network cloudcron does not contact "
                                                "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)")


@pytest.mark.parametrize("kind", ["webhook", "apprise"])
def test_an_operator_list_without_loopback_lets_loopback_receivers_be_reached(api, receiver, kind):
    api.state.config.notify_denied_networks = LOOPBACK_ALLOWED
    hook = receiver()
    port = hook.url.rsplit(":", 1)[1]
    url = f"http://localhost:{port}/hook" if kind == "webhook" else f"json://127.0.0.1:{port}/hook"
    status, channel = api.post("channels", {**HOOK, "kind": kind, "url": url,
                                            **({} if kind == "webhook" else {"secret": None})})
    assert status == 200, channel
    status, delivery = api.post(f"channels/{channel['id']}/test")
    assert status == 200 and delivery["status"] == "delivered", delivery
    assert len(hook.requests) == 1
    # What the operator's list still names stays refused.
    status, body = api.post("channels", {**HOOK, "name": "private", "url": "http://10.0.0.1/hook"})
    assert status == 400 and "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)" in body["error"], body


def test_an_apprise_redirect_into_a_denied_network_is_not_followed(api, receiver):
    # 127.0.0.1 allowed, 127.0.0.2 denied: the first receiver answers with a redirect to the second.
    api.state.config.notify_denied_networks = (*LOOPBACK_ALLOWED, "127.0.0.2/32")
    target = receiver(host="127.0.0.2")
    bouncer = receiver(statuses=(307,), headers={"Location": f"{target.url}/inside"})
    port = bouncer.url.rsplit(":", 1)[1]
    status, channel = api.post("channels", {"name": "j", "kind": "apprise", "url": f"json://127.0.0.1:{port}/x"})
    assert status == 200, channel
    status, delivery = api.post(f"channels/{channel['id']}/test")
    assert status == 200, delivery
    assert len(bouncer.requests) == 1 and target.requests == []
    assert delivery["status"] == "failed"
    assert "CLOUDCRON_NOTIFY_DENIED_NETWORKS" in delivery["attempts"][0]["error"], delivery


def test_an_apprise_failure_is_recorded_without_the_urls_credentials(api, receiver):
    api.state.config.notify_denied_networks = LOOPBACK_ALLOWED
    target = receiver(statuses=(500,))
    port = target.url.rsplit(":", 1)[1]
    _, channel = api.post("channels", {"name": "j", "kind": "apprise", "url": f"json://bob:p4ssw0rd@127.0.0.1:{port}/T0KEN"})
    status, delivery = api.post(f"channels/{channel['id']}/test")
    assert status == 200 and delivery["status"] == "failed" and len(target.requests) == 1
    error = delivery["attempts"][0]["error"]
    assert error and "p4ssw0rd" not in error and "T0KEN" not in error
    assert "500" in error


@pytest.mark.parametrize("url", ["windows://", "dbus://", "syslog://", "rsyslog://localhost", "macosx://",
                                 "mailto://user:pass@localhost"])
def test_an_apprise_service_that_acts_on_the_worker_machine_is_refused(api, url):
    status, body = api.post("channels", {"name": "local", "kind": "apprise", "url": url})
    assert status == 400, body
    assert body["error"].startswith("url: cloudcron sends Apprise notifications only over HTTP(S) services")



@pytest.fixture
def trickler():
    """A loopback server that answers every connection one byte at a time, a byte every 0.2 s, for 30 s."""
    import socket
    import threading

    class Address(str):
        """host:port, with `accepted` set once a connection came."""

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    address = Address(f"127.0.0.1:{server.getsockname()[1]}")
    address.accepted = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            address.accepted.set()
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    def drip(conn):
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 150:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield address
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("kind", ["webhook", "apprise"])
def test_a_receiver_answering_a_byte_at_a_time_cannot_hold_the_sender_past_the_timeout(api, trickler, kind):
    import time

    api.state.config.notify_denied_networks, api.state.config.notify_timeout = LOOPBACK_ALLOWED, 1.0
    url = f"http://{trickler}/hook" if kind == "webhook" else f"json://{trickler}/hook"
    _, channel = api.post("channels", {**HOOK, "kind": kind, "url": url, **({} if kind == "webhook" else {"secret": None})})
    started = time.monotonic()
    status, delivery = api.post(f"channels/{channel['id']}/test")
    took = time.monotonic() - started
    assert status == 200 and delivery["status"] == "failed", delivery
    assert took < 10, took  # the drip lasts 30 s; each byte comes well within the 1 s read timeout
    assert "CLOUDCRON_NOTIFY_TIMEOUT" in delivery["attempts"][0]["error"], delivery


@pytest.mark.parametrize("url", ["slack://T1JJ3T3L2/SECRETPART", "slack://T1JJ3T3L2/S3CR3TPART"])
def test_a_refused_apprise_url_leaves_no_token_in_the_log(api, url):
    import io
    import logging

    # A handler on the root logger, as the service's log has (caplog also listens on loggers that do not
    # propagate, so it would hear what the service's log does not).
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.DEBUG
    logging.getLogger("apprise").propagate = True  # as in a fresh process: no notification sent yet
    try:
        status, body = api.post("channels", {"name": "chat", "kind": "apprise", "url": url})
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert status == 400, body
    # Apprise's own lines quote the URL, its tokens blotted out only in part (first and last characters, or
    # not at all when they do not look like tokens to it).
    assert "PART" not in stream.getvalue() and "PART" not in body["error"]


@pytest.mark.parametrize("url, option", [
    ("discord://1234/abcd?template=/etc/hostname", "template"),
    ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops?template=file:///etc/hostname", "template"),
    ("tgram://123456789:abcdefg_hijklmnop/12315544?template=%2Fetc%2Fhostname", "template"),
    ("fcm://project/device?keyfile=/etc/hostname&mode=oauth2", "keyfile"),
    ("vapid://user@example.com/https://push.example.com/x?keyfile=/etc/hostname", "keyfile"),
    ("vapid://user@example.com/https://push.example.com/x?subfile=/etc/hostname", "subfile"),
])
def test_an_apprise_option_naming_a_file_on_the_worker_is_refused(api, url, option):
    # The worker would read the file and build what it sends to the receiver from it (the tenant's receiver).
    status, body = api.post("channels", {"name": "chat", "kind": "apprise", "url": url})
    assert status == 400, body
    assert body["error"].startswith(f"url: the '{option}' option names a file on cloudcron's machine"), body


def test_an_org_sends_one_test_at_a_time_and_other_orgs_are_not_held(api, other_api, trickler, receiver):
    import threading

    api.state.config.notify_denied_networks, api.state.config.notify_timeout = LOOPBACK_ALLOWED, 5.0
    _, slow = api.post("channels", {**HOOK, "url": f"http://{trickler}/hook"})
    _, second = api.post("channels", {**HOOK, "name": "second", "url": f"http://{trickler}/hook"})
    answers = []
    first = threading.Thread(target=lambda: answers.append(api.post(f"channels/{slow['id']}/test")))
    first.start()
    try:
        # The first test holds a request thread until the receiver's time is up; the org's next one is refused
        # at once rather than holding another (a few would hold every thread the API has).
        assert trickler.accepted.wait(10)
        status, body = api.post(f"channels/{second['id']}/test")
        assert status == 429, body
        assert body["error"].startswith("a test of one of this org's channels is being sent")
        hook = receiver()
        _, theirs = other_api.post("channels", {**HOOK, "url": hook.url})
        status, body = other_api.post(f"channels/{theirs['id']}/test")
        assert status == 200 and body["status"] == "delivered", body
    finally:
        first.join()
    assert answers[0][0] == 200 and answers[0][1]["status"] == "failed"


def test_an_org_has_at_most_50_channels(api, other_api, monkeypatch):
    # Each default channel is a delivery row written in the transaction that ends every run of the org.
    from web import channels

    monkeypatch.setattr(channels, "MAX_CHANNELS", 3)
    for i in range(3):
        assert api.post("channels", {**HOOK, "name": f"hook{i}", "default": True})[0] == 200
    status, body = api.post("channels", {**HOOK, "name": "one-more", "default": True})
    assert status == 409 and body["error"] == "an org has at most 3 channels; delete one first", body
    assert other_api.post("channels", {**HOOK, "name": "theirs"})[0] == 200  # another org's count is its own
    _, listed = api.get("channels")
    assert status == 409 and len(listed) == 3
    assert api.patch(f"channels/{listed[0]['id']}", {"name": "renamed"})[0] == 200  # an edit adds none


def test_the_channel_limit_is_50():
    from web import channels

    assert channels.MAX_CHANNELS == 50


@pytest.fixture
def listener():
    """A loopback TCP socket that records whether anything connected to it (port in .port, .accepted set)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop, accepted = threading.Event(), threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.set()
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield SimpleNamespace(port=server.getsockname()[1], accepted=accepted)
    stop.set()
    thread.join()
    server.close()


def test_an_apprise_service_with_sockets_of_its_own_is_refused(api, listener):
    # nostr:// sends over its own websocket to the relays its URL names, outside requests and so outside the
    # address guard: its plugin imports requests too (for other lookups), which must not let it through.
    url = f"nostr://{'1' * 64}?relay=ws://127.0.0.1:{listener.port}"
    status, body = api.post("channels", {"name": "relay", "kind": "apprise", "url": url})
    assert status == 400, body
    assert body["error"].startswith("url: cloudcron sends Apprise notifications only over HTTP(S) services")


def test_a_stored_apprise_url_with_sockets_of_its_own_is_not_sent_to(listener):
    # A channel stored before the rule held is refused when sent, before any connection.
    from web.notify import SendError, send_apprise

    url = f"nostr://{'1' * 64}?relay=ws://127.0.0.1:{listener.port}"
    with pytest.raises(SendError) as refused:
        send_apprise(url, {"type": "test", "channel": {"name": "relay"}}, 3.0)
    assert refused.value.permanent
    assert not listener.accepted.wait(1.0)
