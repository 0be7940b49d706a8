"""The real cloudcron server process, started the README's way (python -m web serve), for end-to-end tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `python -m web serve`; .api() talks to it over real HTTP."""

    def __init__(self, data_dir: Path, env: dict | None = None, args: tuple = ()):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CLOUDCRON_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "web", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=self._log,
        )
        self.token = self._first_start_token()
        self._wait_ready()

    def _first_start_token(self) -> str | None:
        """Read stdout until the listening line; the token line comes before it on a first start."""
        token = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"server exited early: {self.log()}")
            if "Its API token" in line:
                token = self.proc.stdout.readline().decode().strip()
            if "cloudcron API on" in line:
                return token
        raise RuntimeError("server did not start in time")

    def _wait_ready(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/api/v1/ping", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server not answering: {self.log()}")

    def api(self, method: str, path: str, body=None, token: str | None = None):
        """(status, json) of one request over HTTP."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/api/v1/" + path.lstrip("/"), data=data, method=method)
        if token or self.token:
            req.add_header("Authorization", token or self.token)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "web", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._log.close()


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
    """A real server process with its own data dir, shared by a test module."""
    srv = Server(tmp_path_factory.mktemp("server") / "data")
    yield srv
    srv.stop()
