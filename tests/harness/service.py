"""The real cloudcron service as a process (`python -m web migrate`, then `python -m web serve`), for tests.

`start_service()` starts one anywhere (extra environment such as another CLOUDCRON_DATABASE_URL
is passed through); the session fixture ``service`` shares one SQLite-backed service with every
test that asks for it. Either way the process is stopped by its pid.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Generous because the whole suite shares two cores; only reached when the service never answers.
START_DEADLINE = 60.0
STOP_DEADLINE = 15.0
CLI_TIMEOUT = 120


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # A pytest killed before its teardown must not leave the service listening: the kernel
    # sends SIGTERM to it when the process that started it exits (PR_SET_PDEATHSIG = 1).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _answers_401(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/api/v1/ping", timeout=2)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False
    return False


class Service:
    """A running `python -m web serve`: where it is, a token of org `test`, and an HTTP helper."""

    def __init__(self, proc: subprocess.Popen, url: str, data_dir: Path, env: dict, log_path: Path):
        self.proc = proc
        self.pid = proc.pid
        self.url = url
        self.data_dir = data_dir
        self.env = env
        self.log_path = log_path
        self.token: str | None = None

    def __repr__(self) -> str:  # keeps the token out of pytest's failure output
        return f"Service(url={self.url!r}, pid={self.pid})"

    def api(self, method: str, path: str, body=None, token: str | None = None):
        """Send one request to /api/v1/<path>; return (status, decoded JSON answer)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/api/v1/" + path.lstrip("/"), data=data, method=method.upper())
        if data is not None:
            req.add_header("Content-Type", "application/json")
        auth = token if token is not None else self.token
        if auth:
            req.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"null")
            except ValueError:
                return exc.code, {"error": raw.decode(errors="replace")}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run `python -m web <args>` against this service's data dir and environment."""
        return run_cli(self.env, *args)

    def create_token(self, org: str, name: str | None = None) -> str:
        """A new API token for `org` (created when new), through the CLI."""
        args = ["token", "create", "--org", org] + (["--name", name] if name else [])
        proc = self.cli(*args)
        if proc.returncode != 0:
            raise RuntimeError(f"token create failed: {proc.stderr[-2000:]}")
        return proc.stdout.strip()

    def log(self) -> str:
        """The tail of the service's stderr log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the process by its pid: SIGTERM, then SIGKILL when it does not exit in time."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    """Run `python -m web <args>` from the repository with `env`."""
    return subprocess.run([sys.executable, "-m", "web", *args], cwd=str(REPO_ROOT), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLI_TIMEOUT)


def _first_start_token(proc: subprocess.Popen) -> str | None:
    """The token serve prints for org `default` on a first start (read up to its listening line)."""
    token = None
    for raw in iter(proc.stdout.readline, b""):
        line = raw.decode(errors="replace")
        if "Its API token" in line:
            token = proc.stdout.readline().decode().strip()
        if "cloudcron API on" in line:
            break
    proc.stdout.close()
    return token


def start_service(data_dir, env: dict | None = None, org: str | None = "test", serve_args: tuple = ()) -> Service:
    """Migrate, create a token for `org`, and start `python -m web serve` on a free port.

    With org=None no token is made beforehand: serve's own first start creates org `default` and
    prints its token, which becomes .token (the way the README starts the service).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "CLOUDCRON_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **(env or {})}
    migrate = run_cli(full_env, "migrate")
    if migrate.returncode != 0:
        raise RuntimeError(f"python -m web migrate failed: {migrate.stderr[-2000:]}")
    token = None
    if org:
        # Before serve: an existing org stops serve from creating org `default` and printing its token.
        created = run_cli(full_env, "token", "create", "--org", org, "--name", "tests")
        if created.returncode != 0:
            raise RuntimeError(f"python -m web token create failed: {created.stderr[-2000:]}")
        token = created.stdout.strip()
    last_error = ""
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = data_dir.parent / f"{data_dir.name}-service-{port}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "web", "serve", "--host", "127.0.0.1", "--port", str(port), *serve_args],
                cwd=str(REPO_ROOT), env=full_env, stdin=subprocess.DEVNULL,
                # stdout may carry a first-start token: read below or discarded, never written to a log.
                stdout=subprocess.DEVNULL if org else subprocess.PIPE, stderr=log, preexec_fn=_die_with_parent,
            )
        service = Service(proc, url, data_dir, full_env, log_path)
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_401(url):
                service.token = token if org else _first_start_token(proc)
                return service
            time.sleep(0.1)
        last_error = service.log()
        service.stop()  # exited (port taken meanwhile?) or never answered: try another port
    raise RuntimeError(f"cloudcron service did not start; its log:\n{last_error}")


@pytest.fixture(scope="session")
def service():
    """One real service process for the session, with a token of org `test`."""
    root = Path(tempfile.mkdtemp(prefix="cloudcron-service-"))
    svc = start_service(root / "data")
    try:
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real service with its own data dir for one test module, started the README's way."""
    svc = start_service(tmp_path_factory.mktemp("server") / "data", org=None)
    try:
        yield svc
    finally:
        svc.stop()


class CountingProxy:
    """A loopback HTTP forwarder to a service that records each request's method and path.

    Tests and benchmarks point a client at .url to count the round trips it makes.
    """

    def __init__(self, upstream_url: str):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        upstream = urlsplit(upstream_url)
        self.requests: list[tuple[str, str]] = []
        lock = threading.Lock()
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    proxy.requests.append((self.command, self.path))
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

            def log_message(self, *args):  # requests carry tokens in headers; keep stderr quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Forget the requests counted so far."""
        self.requests.clear()

    def writes(self) -> list[tuple[str, str]]:
        """The counted requests that were not GETs."""
        return [r for r in self.requests if r[0] != "GET"]

    def close(self) -> None:
        """Stop forwarding."""
        self._server.shutdown()
        self._server.server_close()
