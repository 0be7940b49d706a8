"""The cloudcron.scheduler.machine module run by a real ansible-playbook against a real moto EC2 server."""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest

PLAYBOOK_TIMEOUT = 300


def _secret_looking_credentials():
    # Shaped like real AWS keys and random per run, so finding them in output means a leak.
    key = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
    return {"key": key, "secret": secret}


class Playbook:
    """Runs one-task playbooks of the machine module through ansible-playbook on localhost."""

    def __init__(self, workdir: Path, collections_path: Path, moto_server, credentials=None):
        self.workdir = workdir
        self.collections_path = collections_path
        self.moto = moto_server
        self.credentials = credentials or moto_server.credentials
        self.tmp = workdir / "ansible-tmp"
        self.tmp.mkdir(exist_ok=True)

    def run(self, machine_ids, state, *extra_args):
        """Run the module once; return (ansible-playbook exit code, registered task result, its output)."""
        result_file = self.workdir / "result.json"
        if result_file.exists():
            result_file.unlink()
        task = {
            "cloudcron.scheduler.machine": {
                "provider": "ec2",
                "credentials": self.credentials,
                "driver_options": self.moto.options,
                "machine_ids": list(machine_ids),
                "state": state,
            },
            "register": "out",
        }
        # always: keeps the task's failure (and the exit code) while still saving its result.
        save = {
            "ansible.builtin.copy": {"content": "{{ out | to_json }}", "dest": str(result_file)},
            "check_mode": False,  # the result must be saved in check mode too
        }
        play = [{"hosts": "localhost", "gather_facts": False, "tasks": [{"block": [task], "always": [save]}]}]
        playbook = self.workdir / "playbook.yml"
        playbook.write_text(json.dumps(play))  # JSON is YAML
        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(self.collections_path),
            ANSIBLE_LOCAL_TEMP=str(self.tmp / "local"),
            ANSIBLE_REMOTE_TMP=str(self.tmp / "remote"),
            ANSIBLE_HOME=str(self.tmp / "home"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
        )
        cmd = [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i", "localhost,",
            "-c", "local",
            "-e", "ansible_python_interpreter=%s" % sys.executable,
            str(playbook),
            *extra_args,
        ]
        proc = subprocess.run(cmd, env=env, cwd=str(self.workdir), capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT)
        output = proc.stdout + proc.stderr
        assert result_file.exists(), output
        result = json.loads(result_file.read_text())
        result_file.unlink()
        return proc.returncode, result, output


@pytest.fixture
def playbook(tmp_path, collections_path, moto_server):
    return Playbook(tmp_path, collections_path, moto_server)


def _by_id(result):
    return {r["machine_id"]: r for r in result["results"]}


def test_it_stops_two_running_machines_in_one_task_and_then_reports_no_change(playbook, moto_server):
    ids = moto_server.create_machines(2)

    rc, result, output = playbook.run(ids, "stopped")
    assert rc == 0, output
    assert result["changed"] is True
    assert [r["machine_id"] for r in result["results"]] == ids
    assert all(r["changed"] and not r["failed"] for r in result["results"])
    assert [moto_server.state(i) for i in ids] == ["stopped", "stopped"]

    rc, again, output = playbook.run(ids, "stopped")
    assert rc == 0, output
    assert again["changed"] is False
    assert [r["state"] for r in again["results"]] == ["stopped", "stopped"]


def test_it_starts_stopped_machines_and_leaves_running_ones_alone(playbook, moto_server):
    stopped, running = moto_server.create_machines(2)
    moto_server.ec2.stop_instances(InstanceIds=[stopped])

    rc, result, output = playbook.run([stopped, running], "started")
    assert rc == 0, output
    results = _by_id(result)
    assert results[stopped]["changed"] is True
    assert results[running]["changed"] is False
    assert moto_server.state(stopped) == "running"
    assert moto_server.state(running) == "running"


def test_it_restarts_running_machines_and_leaves_stopped_ones_stopped(playbook, moto_server):
    running, stopped = moto_server.create_machines(2)
    moto_server.ec2.stop_instances(InstanceIds=[stopped])

    rc, result, output = playbook.run([running, stopped], "restarted")
    assert rc == 0, output
    results = _by_id(result)
    assert results[running]["changed"] is True and not results[running]["failed"]
    assert results[stopped]["changed"] is False and not results[stopped]["failed"]
    assert moto_server.state(running) == "running"
    assert moto_server.state(stopped) == "stopped"


def test_it_terminates_machines_for_absent_and_is_idempotent(playbook, moto_server):
    ids = moto_server.create_machines(2)

    rc, result, output = playbook.run(ids, "absent")
    assert rc == 0, output
    assert result["changed"] is True
    assert [moto_server.state(i) for i in ids] == ["terminated", "terminated"]

    rc, again, output = playbook.run(ids, "absent")
    assert rc == 0, output
    assert again["changed"] is False


def test_a_missing_machine_fails_the_task_by_name_while_the_other_is_stopped(playbook, moto_server):
    (present,) = moto_server.create_machines(1)
    missing = "i-0badc0ffee0000000"

    rc, result, output = playbook.run([present, missing], "stopped")
    assert rc != 0
    assert result["failed"] is True
    assert missing in result["msg"]
    assert present not in result["msg"]
    results = _by_id(result)
    assert results[missing]["failed"] is True
    assert results[present]["changed"] is True and not results[present]["failed"]
    assert moto_server.state(present) == "stopped"


def test_check_mode_reports_the_change_without_acting(playbook, moto_server):
    ids = moto_server.create_machines(2)

    rc, result, output = playbook.run(ids, "stopped", "--check")
    assert rc == 0, output
    assert result["changed"] is True
    assert all(r["changed"] for r in result["results"])
    assert [moto_server.state(i) for i in ids] == ["running", "running"]


def test_credentials_never_appear_in_output_or_on_disk(tmp_path, collections_path, moto_server):
    credentials = _secret_looking_credentials()
    playbook = Playbook(tmp_path, collections_path, moto_server, credentials=credentials)
    ids = moto_server.create_machines(1)

    rc, result, output = playbook.run(ids + ["i-0badc0ffee0000001"], "stopped", "-vvv")
    assert rc != 0  # a failing task prints the most: msg, results and invocation
    assert moto_server.state(ids[0]) == "stopped"  # moto took these credentials, so they were sent
    # -vvv printed the module's arguments, with the credentials masked rather than left out.
    assert '"secret": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in output
    for value in credentials.values():
        assert value not in output
    playbook_file = tmp_path / "playbook.yml"
    playbook_file.unlink()  # the test wrote them there itself
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for value in credentials.values():
                assert value.encode() not in content, path


def test_a_credential_that_is_a_common_word_is_masked_only_as_a_whole_word(tmp_path, collections_path, moto_server):
    # Ansible's own no_log masking replaced the value inside words: "1 of 1 ********s failed".
    credentials = {"key": "machine", "secret": _secret_looking_credentials()["secret"]}
    playbook = Playbook(tmp_path, collections_path, moto_server, credentials=credentials)
    rc, result, output = playbook.run(["i-0badc0ffee0000002"], "stopped", "-vvv")
    assert rc != 0
    assert result["msg"].startswith("1 of 1 machines failed (i-0badc0ffee0000002): "), result["msg"]
    assert "********s" not in output
    assert '"key": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in output
    assert credentials["secret"] not in output
