"""Provider endpoints that misbehave, as real TCP servers on loopback, started and stopped by the test.

- BlackHole: accepts every connection and never answers (the endpoint that once froze the service).
- CannedHTTP: answers every request with one fixed status and body (an internal page, an error page).
- RewritingProxy: forwards to a real server (the moto EC2 server) and rewrites its answers, optionally
  after a delay: a provider that answers slowly, or with ids moto never makes ("0", "").

Each is a context manager and has .port, .host and .options(**extra) (libcloud EC2 driver options that
point at it); .close() stops it.
"""
from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EC2_OPTIONS = {"secure": False, "region": "us-east-1", "signature_version": "4"}


class _Endpoint:
    host = "127.0.0.1"
    port: int

    def options(self, **extra) -> dict:
        """EC2 driver options pointing at this endpoint."""
        return {"host": self.host, "port": self.port, **EC2_OPTIONS, **extra}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BlackHole(_Endpoint):
    """Accepts connections and reads what is sent, never writes a byte back."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((self.host, 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="black-hole")
        self._thread.start()

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return len(self._conns)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)

    def close(self) -> None:
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                conn.close()
        self._thread.join(timeout=5)


class _HTTPEndpoint(_Endpoint):
    def _start(self, handler) -> None:
        self._server = ThreadingHTTPServer((self.host, 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.requests = 0
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="endpoint")
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class CannedHTTP(_HTTPEndpoint):
    """Answers every GET and POST with `status` and `body`."""

    def __init__(self, status: int, body: bytes, content_type: str = "text/html"):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                endpoint.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self._start(Handler)


class RewritingProxy(_HTTPEndpoint):
    """Forwards each request to `upstream` (http://host:port) and answers rewrite(body), after `delay` seconds."""

    def __init__(self, upstream: str, rewrite=lambda body: body, delay: float = 0.0):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                endpoint.requests += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
                req = urllib.request.Request(upstream + self.path, data=data, method=self.command, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status, body, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "text/xml")
                except urllib.error.HTTPError as exc:
                    status, body, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "text/xml")
                if endpoint.delay:
                    time.sleep(endpoint.delay)
                body = rewrite(body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _forward

            def log_message(self, *args):
                pass

        self.delay = delay
        self._start(Handler)
