"""A real moto EC2 server on loopback, shaped so libcloud's EC2 driver reads it as it reads AWS.

Run as `python -m tests.harness.moto PORT_FILE` it is the server process itself: moto's WSGI
app behind a small middleware, bound to a free port that it writes to PORT_FILE.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
START_TIMEOUT = 60

# moto 5.2 writes xmlns="http://ec2.amazonaws.com/doc/2016-11-15" while AWS (and libcloud,
# which matches on the full namespace) has a trailing slash; without it every parse is empty.
_EC2_NAMESPACE = re.compile(rb'xmlns="(http://ec2\.amazonaws\.com/doc/\d{4}-\d{2}-\d{2})"')
# AWS answers RebootInstances with <return>true</return>; moto leaves it out, which libcloud
# reads as a refused reboot.
_REBOOT_END = b"</RebootInstancesResponse>"


def _like_aws(body: bytes) -> bytes:
    """Rewrite one moto EC2 reply into the form AWS sends."""
    body = _EC2_NAMESPACE.sub(rb'xmlns="\1/"', body)
    if _REBOOT_END in body and b"<return>" not in body:
        body = body.replace(_REBOOT_END, b"<return>true</return>" + _REBOOT_END)
    return body


class _AwsShapedReplies:
    """WSGI middleware applying _like_aws to XML replies."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None  # moto never uses the legacy write callable

        chunks = self.app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        headers = captured["headers"]
        if b"ec2.amazonaws.com/doc/" in body:
            body = _like_aws(body)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


def _serve(port_file: str) -> None:
    """Serve moto on 127.0.0.1 with a kernel-chosen port, announced through port_file."""
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = _AwsShapedReplies(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    # Written then renamed, so the reader never sees half a number.
    tmp = port_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(server.server_port))
    os.replace(tmp, port_file)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    server.serve_forever()


def _exit_with_parent(parent_pid: int) -> None:
    # A pytest killed outright cannot stop us by pid; do not outlive it.
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(0)


class MotoServer:
    """Handle on the running moto server: where it is, how libcloud reaches it, and EC2 helpers."""

    credentials = {"key": "testing", "secret": "testing"}

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.url = "http://%s:%d" % (host, port)
        # Version 4 signing makes moto route the call to EC2; version 2 lands in its S3 backend.
        self.options = {"host": host, "port": port, "secure": False, "region": REGION, "signature_version": "4"}
        self._ec2 = None
        self._image_id = None

    @property
    def ec2(self):
        """A boto3 EC2 client bound to this server."""
        if self._ec2 is None:
            import boto3

            self._ec2 = boto3.client(
                "ec2",
                endpoint_url=self.url,
                region_name=REGION,
                aws_access_key_id=self.credentials["key"],
                aws_secret_access_key=self.credentials["secret"],
            )
        return self._ec2

    def create_machines(self, n: int, tags: dict | None = None) -> list[str]:
        """Run n instances, tagged at creation, and return their ids."""
        if self._image_id is None:
            self._image_id = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        kwargs = {}
        if tags:
            # Tagging at creation: libcloud's ex_create_tags numbers tags from 0, which moto rejects.
            pairs = [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]
            kwargs["TagSpecifications"] = [{"ResourceType": "instance", "Tags": pairs}]
        reply = self.ec2.run_instances(ImageId=self._image_id, MinCount=n, MaxCount=n, InstanceType="t2.micro", **kwargs)
        return [instance["InstanceId"] for instance in reply["Instances"]]

    def state(self, machine_id: str) -> str:
        """Return the EC2 state name (running, stopped, terminated, ...) moto holds for machine_id."""
        reply = self.ec2.describe_instances(InstanceIds=[machine_id])
        return reply["Reservations"][0]["Instances"][0]["State"]["Name"]


def _wait_ready(proc: subprocess.Popen, port_file: Path, log_file: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("moto server exited with %s:\n%s" % (proc.returncode, log_file.read_text()))
        if port_file.exists():
            port = int(port_file.read_text())
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/moto-api/" % port, timeout=5):
                    return port
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.1)
    raise RuntimeError("moto server not ready after %ss:\n%s" % (START_TIMEOUT, log_file.read_text()))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A moto EC2 server process on 127.0.0.1, shared by the session and stopped by pid at its end."""
    workdir = tmp_path_factory.mktemp("moto")
    port_file, log_file = workdir / "port", workdir / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.moto", str(port_file)],
            cwd=str(REPO_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = _wait_ready(proc, port_file, log_file)
        yield MotoServer("127.0.0.1", port)
    finally:
        _stop(proc)


if __name__ == "__main__":
    _serve(sys.argv[1])
