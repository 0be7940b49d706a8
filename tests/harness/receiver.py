"""A loopback HTTP receiver for notifications: records each POST and answers the statuses it is given.

The service refuses loopback receivers by default (CLOUDCRON_NOTIFY_DENIED_NETWORKS): a test that sends to one
sets the list to LOOPBACK_ALLOWED (in-process config) or passes LOOPBACK_ALLOWED_ENV to start_service.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from web.config import DEFAULT_NOTIFY_DENIED_NETWORKS

# The default receiver list but loopback: these receivers are reached, every other private range stays refused.
LOOPBACK_ALLOWED = tuple(n for n in DEFAULT_NOTIFY_DENIED_NETWORKS if n not in ("127.0.0.0/8", "::1/128"))
LOOPBACK_ALLOWED_ENV = {"CLOUDCRON_NOTIFY_DENIED_NETWORKS": ",".join(LOOPBACK_ALLOWED)}


class Receiver:
    """A loopback HTTP server that records each POST (headers, raw body) and answers the statuses it is given,
    with `headers` (a redirect's Location, say) on every answer; `host` is the loopback address it listens on."""

    def __init__(self, statuses=(200,), headers=None, host="127.0.0.1"):
        self.requests: list[tuple[dict, bytes]] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=(200,), headers=None, host="127.0.0.1"):
        made.append(Receiver(statuses, headers, host))
        return made[-1]

    yield make
    for r in made:
        r.close()
