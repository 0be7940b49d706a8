"""The collection's REST client against a stand-in HTTP server on loopback (real sockets, canned answers)."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronClient,
    CloudcronError,
    base_api_url,
    changed_fields,
    diff_of,
    looks_like_id,
)

TOKEN = "s3cr3t-token-value-0123456789"


class StubAPI:
    """Answers (method, path-with-query) from a table and records every request it gets."""

    def __init__(self):
        self.routes = {}
        self.seen = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                  "body": json.loads(body) if body else None})
                status, payload, headers = stub.routes.get((self.command, self.path), (404, {"error": "no such endpoint"}, {}))
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def route(self, method, path, status=200, payload=None, headers=None):
        self.routes[(method, "/api/v1/" + path)] = (status, payload, headers or {})


@pytest.fixture
def api():
    stub = StubAPI()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


@pytest.fixture
def client(api):
    return CloudcronClient(api.url, TOKEN, timeout=10)


def test_it_sends_the_token_as_bearer_and_decodes_json(api, client):
    api.route("GET", "ping", payload={"ok": True, "org": "test"})
    assert client.ping() == {"ok": True, "org": "test"}
    assert api.seen[0]["headers"]["Authorization"] == "Bearer " + TOKEN
    assert client.requests == 1 and client.writes == 0


def test_it_sends_json_bodies_and_counts_writes(api, client):
    api.route("POST", "schedules", payload={"id": "a" * 32, "name": "n"})
    assert client.post("schedules", {"name": "n"})["id"] == "a" * 32
    assert api.seen[0]["body"] == {"name": "n"}
    assert api.seen[0]["headers"]["Content-Type"] == "application/json"
    assert client.writes == 1


def test_a_401_names_the_rejected_token_without_showing_it(api, client):
    api.route("GET", "ping", status=401, payload={"error": "Authorization: unknown or revoked token"})
    with pytest.raises(CloudcronError) as err:
        client.ping()
    assert err.value.status == 401
    assert "rejected the token (401): Authorization: unknown or revoked token" in err.value.message
    assert TOKEN not in err.value.message


def test_a_400_carries_the_apis_message(api, client):
    api.route("PATCH", "schedules/x", status=400, payload={"error": "timezone: 'Mars/Olympus' is not a known IANA time zone"})
    with pytest.raises(CloudcronError) as err:
        client.patch("schedules/x", {"timezone": "Mars/Olympus"})
    assert err.value.status == 400
    assert err.value.message == "PATCH schedules/x failed (400): timezone: 'Mars/Olympus' is not a known IANA time zone"


def test_an_unreachable_service_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    client = CloudcronClient("http://127.0.0.1:%d" % port, TOKEN, timeout=5)
    with pytest.raises(CloudcronError) as err:
        client.ping()
    assert err.value.status is None
    assert err.value.message.startswith("cannot reach the cloudcron service at http://127.0.0.1:%d/api/v1" % port)


def test_a_tls_failure_is_a_clear_error_not_a_traceback(api):
    # https to a plain-HTTP server fails the TLS handshake.
    client = CloudcronClient(api.url.replace("http://", "https://"), TOKEN, timeout=5)
    with pytest.raises(CloudcronError) as err:
        client.ping()
    assert err.value.message.startswith("cannot reach the cloudcron service at https://")


def test_an_answer_that_is_not_json_is_reported(api, client):
    api.route("GET", "ping", payload=b"<html>a proxy page</html>")
    with pytest.raises(CloudcronError) as err:
        client.ping()
    assert "did not answer JSON" in err.value.message


def test_a_refusal_without_json_keeps_its_body(api, client):
    api.route("GET", "ping", status=502, payload=b"Bad Gateway from the proxy")
    with pytest.raises(CloudcronError) as err:
        client.ping()
    assert err.value.status == 502 and "Bad Gateway from the proxy" in err.value.message


def test_get_or_none_turns_404_into_none_only(api, client):
    assert client.get_or_none("schedules/" + "b" * 32) is None
    api.route("GET", "schedules/" + "c" * 32, status=500, payload={"error": "internal error"})
    with pytest.raises(CloudcronError):
        client.get_or_none("schedules/" + "c" * 32)


def test_list_all_follows_pages_until_the_total(api, client, monkeypatch):
    from ansible_collections.cloudcron.scheduler.plugins.module_utils import _client

    monkeypatch.setattr(_client, "PAGE_SIZE", 2)
    api.route("GET", "schedules?limit=2&offset=0", payload=[{"id": 1}, {"id": 2}], headers={"X-Total-Count": "3"})
    api.route("GET", "schedules?limit=2&offset=2", payload=[{"id": 3}], headers={"X-Total-Count": "3"})
    assert [s["id"] for s in client.list_all("schedules")] == [1, 2, 3]
    assert client.requests == 2


def test_find_asks_by_name_first_then_by_id(api, client):
    ident = "d" * 32
    api.route("GET", "scripts?name=" + ident, payload=[])
    api.route("GET", "scripts/" + ident, payload={"id": ident, "name": "uptime"})
    assert client.find("scripts", "name", ident, "script")["name"] == "uptime"
    api.route("GET", "scripts?name=uptime", payload=[{"id": ident, "name": "uptime"}])
    before = client.requests
    assert client.find("scripts", "name", "uptime", "script")["id"] == ident
    assert client.requests == before + 1


def test_find_names_what_is_missing(api, client):
    api.route("GET", "clouds?title=nowhere", payload=[])
    with pytest.raises(CloudcronError) as err:
        client.find("clouds", "title", "nowhere", "cloud")
    assert err.value.message == "cloud: no cloud with title or id 'nowhere' in this org"


def test_names_with_spaces_and_symbols_are_encoded_in_the_query(api, client):
    api.route("GET", "schedules?name=stop+%26+go%2F1", payload=[{"id": "e" * 32}])
    assert client.find_one("schedules", "name", "stop & go/1") == {"id": "e" * 32}


@pytest.mark.parametrize("given, expected", [
    ("http://h:8080", "http://h:8080/api/v1"),
    ("http://h:8080/", "http://h:8080/api/v1"),
    ("https://h/api/v1/", "https://h/api/v1"),
    (" https://h/base ", "https://h/base/api/v1"),
])
def test_base_api_url_accepts_the_service_url_in_its_usual_forms(given, expected):
    assert base_api_url(given) == expected


@pytest.mark.parametrize("given", ["", None, "h:8080", "ftp://h"])
def test_base_api_url_refuses_what_is_not_an_http_url(given):
    with pytest.raises(CloudcronError):
        base_api_url(given)


def test_a_missing_token_is_refused_before_any_request():
    with pytest.raises(CloudcronError) as err:
        CloudcronClient("http://127.0.0.1:1", "")
    assert err.value.message.startswith("token: is required")


def test_ids_are_recognised_by_shape():
    assert looks_like_id("0123456789abcdef0123456789abcdef")
    assert not looks_like_id("0123456789ABCDEF0123456789ABCDEF")
    assert not looks_like_id("uptime")


def test_changed_fields_and_diff_show_only_what_differs():
    current = {"enabled": True, "timezone": "UTC", "description": None}
    desired = {"enabled": False, "timezone": "UTC", "description": None}
    fields = changed_fields(desired, current)
    assert fields == ["enabled"]
    assert diff_of(fields, current, desired) == {"before": {"enabled": True}, "after": {"enabled": False}}
