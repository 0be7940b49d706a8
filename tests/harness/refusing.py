"""A loopback HTTP proxy in front of an EC2 endpoint that refuses one API action a given number of times.

It forwards every request unchanged (moto does not check the signature's host) and answers the first
`refuse` requests of `action` with an AWS-shaped error of `status`, so a client sees what a throttled or
failing EC2 region answers."""
from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>Unavailable</Code>'
          b'<Message>The service is unavailable. Please try again shortly.</Message></Error></Errors>'
          b'<RequestID>refused-by-test-proxy</RequestID></Response>')


class RefusingProxy:
    """Forward to `target` (http://host:port); refuse the first `refuse` calls of `action` with `status`."""

    def __init__(self, target: str, action: str, refuse: int, status: int = 503):
        self.refused = 0
        self.calls: list[str] = []  # the action of every request, in order
        target_host, target_port = urlsplit(target).hostname, urlsplit(target).port
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                query = parse_qs(urlsplit(self.path).query)
                form = parse_qs(body.decode("utf-8", "replace"))
                name = (form.get("Action") or query.get("Action") or [""])[0]
                proxy.calls.append(name)
                if name == action and proxy.refused < refuse:
                    proxy.refused += 1
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(_ERROR)))
                    self.end_headers()
                    self.wfile.write(_ERROR)
                    return
                conn = http.client.HTTPConnection(target_host, target_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    reply = conn.getresponse()
                    data = reply.read()
                finally:
                    conn.close()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host, self.port = "127.0.0.1", self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def refusing_proxy():
    """A factory of RefusingProxy servers, closed at the end of the test."""
    made = []

    def make(target: str, action: str, refuse: int, status: int = 503):
        made.append(RefusingProxy(target, action, refuse, status))
        return made[-1]

    yield make
    for p in made:
        p.close()
