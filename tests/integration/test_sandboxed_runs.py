"""The run sandbox through the real server process: what a tenant's Ansible script can reach on the worker.

Every run here is a real ansible-playbook taken by a real worker; the script's machine is a real
sshd on loopback declared in an `other` cloud, and its tasks probe the worker side (lookups run
there). What they find is read back from the run's recorded stdout/stderr.
"""
from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.harness.backends import PG_ADMIN_URL
from tests.harness.service import REPO_ROOT, start_service, wait_until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request):
    """(extra service environment, database password): SQLite in the data dir, or PostgreSQL with a password."""
    if request.param == "sqlite":
        yield {}, None
        return
    import psycopg
    from sqlalchemy.engine import make_url

    suffix = uuid.uuid4().hex[:12]
    role, name, password = f"cc_role_{suffix}", f"cloudcron_{suffix}", f"pw-{uuid.uuid4().hex}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    url = make_url(PG_ADMIN_URL).set(username=role, password=password, database=name)
    try:
        yield {"CLOUDCRON_DATABASE_URL": url.render_as_string(hide_password=False)}, password
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def declare_machine(svc, host, name="m"):
    """An `other` cloud with one machine reached over SSH at `host`; returns the machine."""
    status, key = svc.api("POST", "keys", {"name": f"{name}-key", "private": host.private_key})
    assert status == 200, key
    status, lab = svc.api("POST", "clouds", {"title": f"{name}-lab", "provider": "other"})
    assert status == 200, lab
    status, machine = svc.api("POST", f"clouds/{lab['id']}/machines", {
        "name": name, "host": host.host, "port": host.port, "ssh_user": host.user, "key_id": key["id"]})
    assert status == 200, machine
    return machine


def run_now(svc, name, script_id, machine, **fields):
    status, sch = svc.api("POST", "schedules", {
        "name": name, "script_id": script_id, "selectors": [{"type": "machines", "ids": [machine["id"]]}],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True,
        **fields})
    assert status == 200, sch
    return sch


def finished_run(svc, schedule_id, timeout=180):
    def done():
        runs = svc.api("GET", f"schedules/{schedule_id}/runs")[1]
        return next((r for r in runs if r["status"] not in ("queued", "running")), None)

    run = wait_until(done, timeout, what=f"a finished run of {schedule_id}\n{svc.log()}")
    return svc.api("GET", f"runs/{run['id']}")[1]


# Each probe runs on the worker (a pipe lookup); its output lands in the run's stdout as LABEL=[output].
PROBES = [
    ("KEYFILE", "cat @KEY@"),
    ("DATABASE", "cat @DB@ @DB@-wal | grep -a -o 'dbmarker-[0-9a-f]*'"),
    ("QUEUE", "cat @QUEUE@ | grep -a -c execute_run"),
    ("RUNS", "ls -1 @RUNS@ | tr '\\n' ' '"),
    ("OTHER", "cat @OTHER@/keys/0 @OTHER@/env/extravars; ls -1 @OTHER@"),
    ("PARENT_ENV", "tr '\\0' ' ' < /proc/$PPID/environ"),
    ("INIT_ENV", "tr '\\0' ' ' < /proc/1/environ"),
    ("WORKER_ENV", "tr '\\0' ' ' < /proc/@WORKER@/environ"),
    ("ENV", "env | tr '\\n' ' '"),
    ("PROCESSES", "ls /proc | grep -c '^[0-9]'"),
    ("PASSWD", "head -1 /etc/passwd"),
    ("HOST_KEYS", "cat /etc/ssh/ssh_host_*_key /etc/shadow"),
    ("OWN", "grep -m1 'name: cloudcron' main.yml"),
]
PROBE = "".join(f"""
- name: probe {label}
  ansible.builtin.debug:
    msg: "{label}=[{{{{ lookup('ansible.builtin.pipe', '( ' + probe + ' ) 2>&1; true') }}}}]"
  vars:
    probe: |-
      {cmd}
""" for label, cmd in PROBES) + """
- name: environment lookups
  ansible.builtin.debug:
    msg: "LOOKUP_ENV=[{{ lookup('ansible.builtin.env', 'CLOUDCRON_TEST_CANARY') }}|{{
      lookup('ansible.builtin.env', 'CLOUDCRON_DATABASE_URL') }}|{{ lookup('ansible.builtin.env', 'CLOUDCRON_DATA_DIR') }}]"
- name: the key file through the file lookup
  ansible.builtin.debug:
    msg: "FILE_LOOKUP=[{{ lookup('ansible.builtin.file', '@KEY@', errors='ignore') }}]"
- name: the key file from a task delegated to the worker
  ansible.builtin.command: cat @KEY@
  delegate_to: localhost
  register: delegated
  ignore_errors: true
- name: what the delegated task read
  ansible.builtin.debug:
    msg: "DELEGATED=[{{ delegated.stdout | default('') }}{{ delegated.stderr | default('') }}]"
"""


def section(text: str, label: str) -> str:
    """What one probe printed (LABEL=[...] in the debug output)."""
    found = re.search(re.escape(label) + r"=\[(.*?)\]\"", text)
    assert found, f"{label} missing from the run's output:\n{text[-3000:]}"
    return found.group(1)


def test_an_ansible_script_reaches_none_of_the_workers_secrets(tmp_path, sshd_hosts, database):
    env, db_password = database
    canary = f"canary-{uuid.uuid4().hex}"
    data = tmp_path / "data"
    # required: a host that cannot sandbox fails here at start, not later with a weaker promise.
    svc = start_service(data, env={**env, "CLOUDCRON_TEST_CANARY": canary, "CLOUDCRON_SANDBOX": "required"})
    hold = tmp_path / "hold"
    hold.touch()
    try:
        host = sshd_hosts[0]
        machine = declare_machine(svc, host)
        # Another run that stays running while the probe runs: its private dir holds its SSH key.
        db_marker = f"dbmarker-{uuid.uuid4().hex}"
        status, holder = svc.api("POST", "scripts", {"name": "hold", "description": db_marker,
                                                    "script": f"#!/bin/sh\nwhile [ -e {hold} ]; do sleep 0.5; done\n"})
        assert status == 200, holder
        held = run_now(svc, "holder", holder["id"], machine, description=db_marker)
        runs_dir = data / "runs"
        wait_until(lambda: any(r["status"] == "running" for r in svc.api("GET", f"schedules/{held['id']}/runs")[1]),
                   90, what="the holder run to start")
        other = wait_until(lambda: [p for p in runs_dir.iterdir() if p.name.startswith("cloudcron-run-")]
                           if runs_dir.is_dir() else None, 60, what="the holder's private dir")[0]
        wait_until(lambda: (other / "keys" / "0").exists(), 30, what="the holder's key file")

        key_file = data / "secret.key"
        database_file = data / "cloudcron.db"
        probe = (PROBE.replace("@KEY@", str(key_file)).replace("@DB@", str(database_file))
                 .replace("@QUEUE@", str(data / "queue.db")).replace("@RUNS@", str(runs_dir))
                 .replace("@OTHER@", str(other)).replace("@WORKER@", str(svc.pid)))
        status, script = svc.api("POST", "scripts", {"name": "probe", "script": probe, "exec_type": "ansible"})
        assert status == 200, script
        run = finished_run(svc, run_now(svc, "probe", script["id"], machine)["id"])
        assert other.is_dir(), "the holder must still be running while the probe reads"
        assert "runs execute in a bubblewrap sandbox" in svc.log()
        assert run["status"] == "succeeded", run
        (result,) = run["machines"]
        text = result["stdout"] + result["stderr"]

        # What the script may read, it reads: so it did run its probes on the worker side.
        assert section(text, "PASSWD").startswith("root:")
        assert section(text, "OWN") == "- name: cloudcron ansible script"
        assert "ANSIBLE_" in section(text, "PARENT_ENV")
        assert "PATH=" in section(text, "ENV")
        # Nothing of the worker's secrets.
        for secret in (key_file.read_text().strip(), canary, db_marker, host.private_key.splitlines()[1]):
            assert secret not in text
        if db_password:
            assert db_password not in text
        if not env:
            # The marker is in the database (or its WAL) for real: reading it would have shown it.
            raw = b"".join(p.read_bytes() for p in (database_file, Path(f"{database_file}-wal")) if p.exists())
            assert db_marker.encode() in raw
        assert section(text, "LOOKUP_ENV") == "||"
        assert "No such file" in section(text, "KEYFILE")
        assert "dbmarker-" not in section(text, "DATABASE") and "No such file" in section(text, "DATABASE")
        assert "No such file" in section(text, "QUEUE")
        assert section(text, "FILE_LOOKUP") == ""
        assert "No such file" in section(text, "DELEGATED")
        assert other.name not in section(text, "RUNS") and section(text, "RUNS").startswith("cloudcron-run-")
        assert "PRIVATE KEY" not in section(text, "OTHER") and "No such file" in section(text, "OTHER")
        assert "PRIVATE KEY" not in section(text, "HOST_KEYS") and "root:" not in section(text, "HOST_KEYS")
        for label in ("PARENT_ENV", "INIT_ENV", "WORKER_ENV", "ENV"):
            assert "CLOUDCRON_" not in section(text, label), label
        host_processes = len([p for p in os.listdir("/proc") if p.isdigit()])
        assert int(section(text, "PROCESSES")) < min(30, host_processes)  # its own pid namespace only
    finally:
        hold.unlink(missing_ok=True)
        svc.stop()


class HangingEndpoint:
    """A loopback HTTP endpoint that takes requests and never answers; .requested is set on the first."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requested = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.settimeout(30)
            try:
                if conn.recv(65536):
                    self.requested.set()
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


def files_holding(needle: bytes, roots, since: float | None = None) -> list[str]:
    """Regular files under `roots` (changed after `since`, when given) whose content holds `needle`."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda _err: None):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    if not os.path.isfile(path) or os.path.islink(path) or st.st_size > 64 * 1024 * 1024:
                        continue
                    if since is not None and max(st.st_mtime, st.st_ctime) < since:
                        continue
                    with open(path, "rb") as handle:
                        if needle in handle.read():
                            found.append(path)
                except OSError:
                    continue
    return found


def start_worker(env, log):
    return subprocess.Popen([sys.executable, "-m", "web", "worker", "--workers", "1"], cwd=REPO_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_a_worker_killed_during_a_power_run_leaves_the_cloud_secret_in_no_file(tmp_path, sandbox):
    started = time.time() - 1
    secret = f"cloud-secret-{uuid.uuid4().hex}"
    endpoint = HangingEndpoint()
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data"
    svc = start_service(data, env={"CLOUDCRON_SANDBOX": sandbox}, serve_args=("--no-worker",))
    # The worker's home is the test's, so that whatever lands in it can be found.
    worker_env = {**svc.env, "HOME": str(home)}
    log = open(tmp_path / "worker.log", "wb")
    worker = start_worker(worker_env, log)
    try:
        status, cloud = svc.api("POST", "clouds", {
            "title": "slow", "provider": "ec2", "credentials": {"key": "AKIDSLOWENDPOINT", "secret": secret},
            "options": {"host": "127.0.0.1", "port": endpoint.port, "secure": False, "region": "us-east-1",
                        "signature_version": "4"}})
        assert status == 200, cloud
        status, sch = svc.api("POST", "schedules", {
            "name": "stop", "action": "stop", "machines_per_cloud": [[cloud["id"], "i-0123456789abcdef0"]],
            "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True})
        assert status == 200, sch
        # The machine module is running, its credentials in its AnsiballZ file, when the request arrives.
        assert endpoint.requested.wait(120), (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        killed = [p for p in (data / "runs").iterdir() if p.name.startswith("cloudcron-run-")]
        assert killed
        # The scan finds the secret while the run holds it (its extra variables): it would find leftovers.
        assert files_holding(secret.encode(), [tmp_path])
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()

        worker = start_worker(worker_env, log)
        wait_until(lambda: not any(p.exists() for p in killed), 90,
                   what="the new worker to remove the killed run's private dir")
        user_home = pwd.getpwuid(os.getuid()).pw_dir
        left = files_holding(secret.encode(), [tmp_path]) + files_holding(
            secret.encode(), ["/tmp", "/var/tmp", os.path.join(user_home, ".ansible")], since=started)
        assert left == []
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        svc.stop()
        endpoint.close()
        log.close()


def sandbox_lines(svc) -> list[str]:
    return [line for line in svc.log().splitlines() if "web.sandbox" in line]


def test_without_the_sandbox_ansible_scripts_fail_with_the_reason_and_others_still_run(tmp_path, sshd_hosts):
    data = tmp_path / "data"
    svc = start_service(data)
    try:
        machine = declare_machine(svc, sshd_hosts[0])
        tasks = ("- ansible.builtin.raw: echo ran-on-the-machine\n  register: out\n"
                 "- ansible.builtin.debug:\n    msg: \"{{ out.stdout | trim }}\"\n")
        status, ansible = svc.api("POST", "scripts", {"name": "tasks", "script": tasks, "exec_type": "ansible"})
        assert status == 200, ansible
        status, plain = svc.api("POST", "scripts", {"name": "plain", "script": "#!/bin/sh\necho plain-ran\n"})
        assert status == 200, plain
    finally:
        svc.stop()

    svc = start_service(data, env={"CLOUDCRON_SANDBOX": "off"})
    try:
        assert sandbox_lines(svc) == [line for line in sandbox_lines(svc)
                                      if "runs are NOT sandboxed (CLOUDCRON_SANDBOX=off); Ansible scripts are refused" in line]
        assert len(sandbox_lines(svc)) == 1
        run = finished_run(svc, run_now(svc, "tasks", ansible["id"], machine)["id"])
        assert run["status"] == "failed"
        assert run["error"].startswith("Ansible scripts run only in the bubblewrap sandbox")
        assert "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE=1" in run["error"]
        assert "ran-on-the-machine" not in str(run)
        run = finished_run(svc, run_now(svc, "plain", plain["id"], machine)["id"])
        assert run["status"] == "succeeded" and "plain-ran" in run["machines"][0]["stdout"], run
        status, answer = svc.api("POST", "scripts", {"name": "more", "script": tasks, "exec_type": "ansible"})
        assert status == 400 and answer["error"].startswith("exec_type: Ansible scripts run only in the bubblewrap")
    finally:
        svc.stop()

    svc = start_service(data, env={"CLOUDCRON_SANDBOX": "off", "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE": "1"})
    try:
        (line,) = sandbox_lines(svc)
        assert "NOT sandboxed" in line and "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE=1" in line
        run = finished_run(svc, run_now(svc, "tasks-unsafe", ansible["id"], machine)["id"])
        assert run["status"] == "succeeded" and "ran-on-the-machine" in run["machines"][0]["stdout"], run
    finally:
        svc.stop()


@pytest.mark.parametrize("command", [("serve", "--port", "0"), ("worker",)])
def test_a_required_sandbox_that_cannot_be_built_stops_start_up(tmp_path, command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCRON_")}
    # No bwrap on this PATH: as on a host without the bubblewrap package.
    env.update(PATH=str(tmp_path), CLOUDCRON_DATA_DIR=str(tmp_path / "data"), CLOUDCRON_SANDBOX="required")
    proc = subprocess.run([sys.executable, "-m", "web", *command], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "CLOUDCRON_SANDBOX=required" in proc.stderr and "bubblewrap" in proc.stderr
    assert "Traceback" not in proc.stderr and "cloudcron API on" not in proc.stdout


FILL = """
- name: fill the run's in-memory directories on the worker
  ansible.builtin.shell: |
    for target in /tmp/fill "$HOME/fill" /dev/shm/fill; do
      if dd if=/dev/zero of="$target" bs=1M count=64 2>/dev/null; then echo "FILLED $target"; else echo "FULL $target"; fi
      rm -f "$target"
    done
    dd if=/dev/zero of=/tmp/fill bs=1M count=64
  delegate_to: localhost
"""


def test_a_run_writing_past_its_tmpfs_size_fails_alone(tmp_path, sshd_hosts):
    svc = start_service(tmp_path / "data", env={"CLOUDCRON_SANDBOX": "required", "CLOUDCRON_SANDBOX_TMPFS_MB": "16"})
    try:
        machine = declare_machine(svc, sshd_hosts[0])
        status, filler = svc.api("POST", "scripts", {"name": "fill", "script": FILL, "exec_type": "ansible"})
        assert status == 200, filler
        status, plain = svc.api("POST", "scripts", {"name": "plain", "script": "#!/bin/sh\necho still-fine\n"})
        assert status == 200, plain
        run = finished_run(svc, run_now(svc, "fill", filler["id"], machine)["id"])
        assert run["status"] == "failed", run
        text = str(run)
        stdout_lines = re.search(r'"stdout_lines": \[(.*?)\]', run["machines"][0]["stdout"])
        assert stdout_lines, text[-3000:]
        home = pwd.getpwuid(os.getuid()).pw_dir
        assert stdout_lines.group(1) == f'"FULL /tmp/fill", "FULL {home}/fill", "FULL /dev/shm/fill"', text[-3000:]
        assert "No space left on device" in text
        # The worker goes on: the next run, another schedule's, succeeds.
        run = finished_run(svc, run_now(svc, "plain", plain["id"], machine)["id"])
        assert run["status"] == "succeeded" and "still-fine" in run["machines"][0]["stdout"], run
        assert svc.api("GET", "ping")[0] == 200
    finally:
        svc.stop()
