"""Through the real processes: run-now under concurrency forbid, runs interrupted under a worker, and SIGTERM drains.

The script runs go over SSH to a real sshd on loopback; `serve` and `worker` are the real processes,
stopped with a real SIGTERM.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.harness.backends import _pg_database
from tests.harness.service import REPO_ROOT, start_service, wait_until

pytestmark = pytest.mark.timeout(400)


# ---------------------------------------------------------------- run-now under concurrency forbid

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_parallel_run_now_calls_make_one_run_and_409s_naming_it(tmp_path, backend):
    env, drop = {}, None
    if backend == "postgresql":
        url, drop = _pg_database()
        env["CLOUDCRON_DATABASE_URL"] = url
    # No worker: the run stays queued, so every other call finds it.
    service = start_service(tmp_path / "data", env=env, serve_args=("--no-worker", "--no-dispatcher"))
    try:
        status, lab = service.api("POST", "clouds", {"title": "lab", "provider": "other"})
        status, m = service.api("POST", f"clouds/{lab['id']}/machines", {"name": "m", "host": "127.0.0.1"})
        status, scr = service.api("POST", "scripts", {"name": "s", "script": "#!/bin/sh\ntrue\n"})
        status, sch = service.api("POST", "schedules", {
            "name": "by hand", "script_id": scr["id"], "selectors": [{"type": "machines", "ids": [m["id"]]}],
            "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}})
        assert status == 200, sch
        answers, go = [], threading.Barrier(6)

        def run_now():
            go.wait()
            answers.append(service.api("POST", f"schedules/{sch['id']}/run"))

        threads = [threading.Thread(target=run_now) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        started = [body for status, body in answers if status == 200]
        refused = [body for status, body in answers if status == 409]
        assert len(started) == 1 and len(refused) == 5, answers
        assert all(started[0]["id"] in body["error"] for body in refused)
        assert [r["id"] for r in service.api("GET", f"schedules/{sch['id']}/runs")[1]] == [started[0]["id"]]
    finally:
        service.stop()
        if drop is not None:
            drop()


# ---------------------------------------------------------------- runs that are stopped

SLOW = "#!/bin/sh\necho $$ > {pid_dir}/{name}\nsleep {seconds}\necho done\n"


class Lab:
    """An org's SSH machine on a real sshd, and script schedules on it."""

    def __init__(self, service, host, pid_dir: Path):
        self.service, self.pid_dir = service, pid_dir
        _, key = service.api("POST", "keys", {"name": f"k-{uuid.uuid4().hex[:6]}", "private": host.private_key})
        _, lab = service.api("POST", "clouds", {"title": f"lab-{uuid.uuid4().hex[:6]}", "provider": "other"})
        status, self.machine = service.api("POST", f"clouds/{lab['id']}/machines", {
            "name": "m", "host": host.host, "port": host.port, "ssh_user": host.user, "key_id": key["id"]})
        assert status == 200, self.machine

    def run_script(self, seconds: float) -> tuple[dict, str]:
        """A schedule that runs `sleep seconds` on the machine once, now; returns it and its pid file name."""
        name = uuid.uuid4().hex
        script = SLOW.format(pid_dir=self.pid_dir, name=name, seconds=seconds)
        _, scr = self.service.api("POST", "scripts", {"name": name, "script": script})
        status, sch = self.service.api("POST", "schedules", {
            "name": name, "script_id": scr["id"], "selectors": [{"type": "machines", "ids": [self.machine["id"]]}],
            "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True,
            "timeout": 3600})
        assert status == 200, sch
        return sch, name

    def runs(self, schedule_id):
        return self.service.api("GET", f"schedules/{schedule_id}/runs")[1]

    def wait_started(self, schedule_id, name):
        """Wait until the script is running on the machine; returns the run."""
        wait_until(lambda: (self.pid_dir / name).exists(), 120,
                   what=f"the script to start on the machine\n{self.service.log()}")
        return self.runs(schedule_id)[0]


@pytest.fixture
def pid_dir(tmp_path):
    """Where scripts leave their pid: the remote sleeps are killed at the end (the sshd is local)."""
    path = tmp_path / "remote-pids"
    path.mkdir()
    yield path
    for pid_file in path.iterdir():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _db(data_dir: Path):
    return sqlite3.connect(data_dir / "cloudcron.db", timeout=30)


def _run_row(data_dir: Path, run_id: str) -> dict:
    db = _db(data_dir)
    try:
        status, error = db.execute("SELECT status, error FROM runs WHERE id = ?", (run_id,)).fetchone()
        machines = [r[0] for r in db.execute("SELECT status FROM run_machines WHERE run_id = ?", (run_id,))]
        reasons = [r[0] for r in db.execute(
            "SELECT json_extract(data, '$.reason') FROM events WHERE run_id = ? AND type = 'schedule_interrupted'",
            (run_id,))]
    finally:
        db.close()
    return {"status": status, "error": error, "machines": machines, "reasons": reasons}


def _private_dirs(data_dir: Path) -> list[Path]:
    runs = data_dir / "runs"
    return [p for p in runs.iterdir() if p.name.startswith("cloudcron-run-")] if runs.is_dir() else []


def test_a_worker_stops_a_run_that_was_marked_interrupted(tmp_path, sshd_hosts, pid_dir):
    service = start_service(tmp_path / "data")
    try:
        lab = Lab(service, sshd_hosts[0], pid_dir)
        sch, name = lab.run_script(300)
        run = lab.wait_started(sch["id"], name)
        assert run["status"] == "running" and _private_dirs(tmp_path / "data")
        # What the sweep does when a worker's heartbeats stop reaching the database.
        db = _db(tmp_path / "data")
        with db:
            db.execute("UPDATE runs SET status = 'interrupted', error = 'no heartbeat' WHERE id = ?", (run["id"],))
            db.execute("UPDATE run_machines SET status = 'interrupted' WHERE run_id = ?", (run["id"],))
        db.close()
        # The worker notices at its next heartbeat and stops the playbook, long before the script's 300 s.
        wait_until(lambda: not _private_dirs(tmp_path / "data"), 60,
                   what=f"the worker to stop the interrupted run\n{service.log()}")
        assert "stopping it" in service.log()
        row = _run_row(tmp_path / "data", run["id"])
        assert row["status"] == "interrupted" and row["error"] == "no heartbeat" and row["machines"] == ["interrupted"]
        # Its slot is free again: the next run is taken and executed.
        quick, quick_name = lab.run_script(0)
        wait_until(lambda: lab.runs(quick["id"])[0]["status"] == "succeeded", 120,
                   what=f"the next run to succeed\n{service.log()}")
    finally:
        service.stop()


def _sigterm_and_wait(proc: subprocess.Popen, within: float) -> float:
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=within)
    return time.monotonic() - started


def test_sigterm_to_serve_lets_a_run_in_progress_finish(tmp_path, sshd_hosts, pid_dir):
    service = start_service(tmp_path / "data", env={"CLOUDCRON_DRAIN_SECONDS": "90"})
    try:
        lab = Lab(service, sshd_hosts[0], pid_dir)
        sch, name = lab.run_script(6)
        run = lab.wait_started(sch["id"], name)
        took = _sigterm_and_wait(service.proc, within=120)
        assert service.proc.returncode == 0, service.log()
        row = _run_row(tmp_path / "data", run["id"])
        assert row["status"] == "succeeded" and row["machines"] == ["succeeded"], (row, service.log())
        assert took < 90  # it waited for the run, not for the whole grace period
        assert not _private_dirs(tmp_path / "data")
    finally:
        service.stop()


def test_sigterm_to_serve_interrupts_what_outlasts_the_drain_with_reason_shutdown(tmp_path, sshd_hosts, pid_dir):
    service = start_service(tmp_path / "data", env={"CLOUDCRON_DRAIN_SECONDS": "2"})
    try:
        lab = Lab(service, sshd_hosts[0], pid_dir)
        sch, name = lab.run_script(300)
        run = lab.wait_started(sch["id"], name)
        took = _sigterm_and_wait(service.proc, within=60)
        assert service.proc.returncode == 0, service.log()
        assert took >= 2  # the grace period was given
        row = _run_row(tmp_path / "data", run["id"])
        assert row["status"] == "interrupted" and row["error"].startswith("shutdown:"), row
        assert row["machines"] == ["interrupted"] and row["reasons"] == ["shutdown"]
        assert not _private_dirs(tmp_path / "data")  # the playbook was stopped and its directory removed
    finally:
        service.stop()


def test_sigterm_to_a_worker_drains_it_and_leaves_queued_runs_for_the_next(tmp_path, sshd_hosts, pid_dir):
    service = start_service(tmp_path / "data", serve_args=("--no-worker",))
    log = open(tmp_path / "worker.log", "wb")

    def start_worker():
        return subprocess.Popen([sys.executable, "-m", "web", "worker", "--workers", "1"], cwd=REPO_ROOT,
                                env={**service.env, "CLOUDCRON_DRAIN_SECONDS": "3"}, stdout=log,
                                stderr=subprocess.STDOUT)

    worker = start_worker()
    try:
        lab = Lab(service, sshd_hosts[0], pid_dir)
        sch, name = lab.run_script(300)
        run = lab.wait_started(sch["id"], name)
        # A second run waits in the queue behind the first (one slot).
        later, later_name = lab.run_script(0)
        wait_until(lambda: lab.runs(later["id"]), 30, what="the second run to be queued")
        took = _sigterm_and_wait(worker, within=60)
        assert worker.returncode == 0 and took >= 3
        row = _run_row(tmp_path / "data", run["id"])
        assert row["status"] == "interrupted" and row["reasons"] == ["shutdown"] and row["machines"] == ["interrupted"]
        assert lab.runs(later["id"])[0]["status"] == "queued"  # not taken by a worker that was stopping
        assert not _private_dirs(tmp_path / "data")
        worker = start_worker()
        wait_until(lambda: lab.runs(later["id"])[0]["status"] == "succeeded", 180,
                   what=f"the queued run to succeed on the next worker\n{(tmp_path / 'worker.log').read_text()[-3000:]}")
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=60)
        service.stop()
        log.close()


def test_sigterm_to_an_idle_serve_exits_at_once(tmp_path):
    service = start_service(tmp_path / "data")
    try:
        took = _sigterm_and_wait(service.proc, within=30)
        assert service.proc.returncode == 0 and took < 15, service.log()
        assert "Traceback" not in service.log()
    finally:
        service.stop()
