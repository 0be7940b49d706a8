"""A split deployment (API + dispatcher in one process, a separate worker) survives a worker killed mid-run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from tests.harness.service import REPO_ROOT, Service, start_service, wait_until


def start_worker(server: Service, log):
    return subprocess.Popen([sys.executable, "-m", "web", "worker", "--workers", "1"], cwd=REPO_ROOT, env=server.env,
                            stdout=log, stderr=subprocess.STDOUT)


def test_a_worker_killed_mid_run_leaves_an_interrupted_run_and_the_schedule_keeps_firing(tmp_path, sshd_hosts):
    server = start_service(tmp_path / "data", serve_args=("--no-worker",))
    log = open(tmp_path / "worker.log", "wb")
    worker = start_worker(server, log)
    try:
        host = sshd_hosts[0]
        marker = f"/tmp/cloudcron-slow-{uuid.uuid4().hex}"
        # The first run hangs (the worker is killed during it); later runs are quick.
        script = f"#!/bin/sh\nif [ -e {marker} ]; then echo quick; exit 0; fi\ntouch {marker}\nsleep 90\n"
        _, key = server.api("POST", "keys", {"name": "k", "private": host.private_key})
        _, lab = server.api("POST", "clouds", {"title": "lab", "provider": "other"})
        _, m = server.api("POST", f"clouds/{lab['id']}/machines",
                          {"name": "m", "host": host.host, "port": host.port, "ssh_user": host.user, "key_id": key["id"]})
        _, scr = server.api("POST", "scripts", {"name": "slow", "script": script})
        status, sch = server.api("POST", "schedules", {
            "name": "slow", "script_id": scr["id"], "selectors": [{"type": "machines", "ids": [m["id"]]}],
            "schedule_type": "interval", "schedule_entry": {"every": 10, "period": "seconds"}, "run_immediately": True})
        assert status == 200, sch

        def runs():
            return server.api("GET", f"schedules/{sch['id']}/runs?limit=1000")[1]

        first = wait_until(lambda: next((r for r in runs() if r["status"] == "running"), None), 60,
                           what="a running run")
        wait_until(lambda: os.path.exists(marker), 30, what="the script to start on the machine")
        work = tmp_path / "data" / "runs"
        killed_dirs = list(work.iterdir())
        assert killed_dirs, "the running run should have a private directory"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        worker = start_worker(server, log)

        def interrupted():
            run = server.api("GET", f"runs/{first['id']}")[1]
            return run if run["status"] == "interrupted" else None

        wait_until(interrupted, 60, what="the killed run to be marked interrupted")
        done = wait_until(lambda: next((r for r in runs() if r["status"] == "succeeded"), None), 60,
                          what="a later run to succeed on the new worker")
        assert done["created_at"] > first["created_at"]
        assert not [r for r in runs() if r["status"] == "queued" and r["created_at"] < done["created_at"]]
        # The killed run's private directory (key, extravars) is gone once the new worker started.
        assert not any(d.exists() for d in killed_dirs)
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=20)
        server.stop()
        log.close()
