"""End to end through the real server process: schedules fire on time and act on real machines.

EC2 machines live in a moto server behind libcloud; script targets are real sshd processes on
loopback; every run is a real ansible-playbook through ansible-runner, taken by a real Huey worker.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from tests.harness.service import wait_until


@pytest.fixture(scope="module")
def aws(server, moto_server):
    status, cloud = server.api("POST", "clouds", {"title": "aws", "provider": "ec2",
                                                  "credentials": dict(moto_server.credentials),
                                                  "options": moto_server.options})
    assert status == 200, cloud
    return cloud


def run_of(server, schedule_id, timeout=90):
    """The schedule's newest finished run (with its machines)."""
    def finished():
        status, runs = server.api("GET", f"schedules/{schedule_id}/runs")
        assert status == 200, runs
        done = [r for r in runs if r["status"] not in ("queued", "running")]
        return done[0] if done else None

    run = wait_until(finished, timeout, what=f"a finished run of {schedule_id}\n{server.log()}")
    status, full = server.api("GET", f"runs/{run['id']}")
    assert status == 200
    return full


def schedule(server, **fields):
    status, body = server.api("POST", "schedules", fields)
    assert status == 200, body
    return body


def test_run_immediately_stops_an_ec2_machine_at_once(server, aws, moto_server):
    [machine] = moto_server.create_machines(1)
    sch = schedule(server, name="stop-now", action="stop", machines_per_cloud=[[aws["id"], machine]],
                   schedule_type="interval", schedule_entry={"every": 1, "period": "days"}, run_immediately=True)
    run = run_of(server, sch["id"])
    assert run["trigger"] == "immediate" and run["status"] == "succeeded", run
    assert [m["machine_id"] for m in run["machines"]] == [machine]
    assert moto_server.state(machine) in ("stopping", "stopped")
    status, events = server.api("GET", f"logs?run_id={run['id']}")
    assert {"schedule_started", "machine_action_succeeded", "schedule_finished"} <= {e["type"] for e in events}


def test_a_one_off_ten_seconds_ahead_stops_a_second_machine(server, aws, moto_server):
    [machine] = moto_server.create_machines(1)
    when = datetime.now(timezone.utc) + timedelta(seconds=10)
    sch = schedule(server, name="stop-once", action="stop", machines_per_cloud=[[aws["id"], machine]],
                   schedule_type="one_off", schedule_entry=when.strftime("%Y-%m-%d %H:%M:%S"))
    assert sch["next_run_at"] is not None
    assert moto_server.state(machine) == "running"
    run = run_of(server, sch["id"], timeout=60)
    assert run["status"] == "succeeded" and run["trigger"] == "scheduled", run
    assert moto_server.state(machine) in ("stopping", "stopped")
    status, after = server.api("GET", f"schedules/{sch['id']}")
    assert after["active"] is False and after["next_run_at"] is None and after["total_run_count"] == 1


def test_a_crontab_edited_from_start_to_stop_stops_a_third_within_its_minute(server, aws, moto_server):
    [machine] = moto_server.create_machines(1)
    sch = schedule(server, name="every-minute", action="start", machines_per_cloud=[[aws["id"], machine]],
                   schedule_type="crontab", schedule_entry={"minute": "*"})
    status, edited = server.api("PATCH", f"schedules/{sch['id']}", {"action": "stop"})
    assert status == 200 and edited["action"] == "stop"
    run = run_of(server, sch["id"], timeout=75)
    assert run["status"] == "succeeded", run
    assert moto_server.state(machine) in ("stopping", "stopped")
    server.api("PATCH", f"schedules/{sch['id']}", {"enabled": False})


def test_a_disabled_schedule_with_run_immediately_never_runs(server, aws, moto_server):
    [machine] = moto_server.create_machines(1)
    sch = schedule(server, name="disabled", action="stop", machines_per_cloud=[[aws["id"], machine]],
                   schedule_type="interval", schedule_entry={"every": 2, "period": "seconds"},
                   run_immediately=True, enabled=False)
    assert sch["next_run_at"] is None
    # Long enough for an immediate run and a few interval fires to have happened if they were going to.
    wait_until(lambda: server.api("GET", f"schedules/{sch['id']}")[1]["total_run_count"] == 0, 1)
    import time

    time.sleep(5)
    assert server.api("GET", f"schedules/{sch['id']}/runs")[1] == []
    assert moto_server.state(machine) == "running"


def test_a_script_on_three_ssh_machines_one_failing_ends_partial(server, sshd_hosts):
    status, key = server.api("POST", "keys", {"name": "lab-key", "private": sshd_hosts[0].private_key})
    assert status == 200, key
    status, lab = server.api("POST", "clouds", {"title": "lab", "provider": "other"})
    machines = []
    for i, host in enumerate(sshd_hosts):
        status, m = server.api("POST", f"clouds/{lab['id']}/machines", {
            "name": f"ssh{i}", "host": host.host, "port": host.port, "ssh_user": host.user, "key_id": key["id"]})
        assert status == 200, m
        machines.append(m)
    # The third machine exits 3: the script reads its own port from SSH_CONNECTION.
    bad_port = sshd_hosts[2].port
    script = ("#!/bin/sh\nport=$(echo $SSH_CONNECTION | cut -d' ' -f4)\n"
              "echo \"out from $port $1\"\necho \"err from $port\" >&2\n"
              f"[ \"$port\" = \"{bad_port}\" ] && exit 3\nexit 0\n")
    status, scr = server.api("POST", "scripts", {"name": "probe", "script": script, "exec_type": "executable"})
    assert status == 200, scr
    sch = schedule(server, name="probe-all", script_id=scr["id"], params="hello",
                   selectors=[{"type": "machines", "ids": [m["id"] for m in machines]}],
                   schedule_type="interval", schedule_entry={"every": 1, "period": "days"}, run_immediately=True)
    run = run_of(server, sch["id"], timeout=120)
    assert run["status"] == "partial", run
    by_key = {m["machine_key"]: m for m in run["machines"]}
    for m, host in zip(machines, sshd_hosts):
        result = by_key[m["id"]]
        assert f"out from {host.port} hello" in result["stdout"]
        assert f"err from {host.port}" in result["stderr"] and "out from" not in result["stderr"]
        expected = (3, "failed") if host.port == bad_port else (0, "succeeded")
        assert (result["rc"], result["status"]) == expected, result


def test_a_script_past_its_timeout_is_stopped_on_the_machine_and_its_copy_removed(server, sshd_hosts, tmp_path):
    host = sshd_hosts[1]
    status, key = server.api("POST", "keys", {"name": "slow-key", "private": host.private_key})
    _, lab = server.api("POST", "clouds", {"title": "slow-lab", "provider": "other"})
    status, m = server.api("POST", f"clouds/{lab['id']}/machines", {
        "name": "slow", "host": host.host, "port": host.port, "ssh_user": host.user, "key_id": key["id"]})
    assert status == 200, m
    seen = tmp_path / "remote"
    # The sshd host is this machine: the script leaves its pid and its own path where the test finds them.
    script = f"#!/bin/sh\necho \"$$ $0\" > {seen}\nsleep 300\n"
    status, scr = server.api("POST", "scripts", {"name": "sleeps-past-timeout", "script": script})
    assert status == 200, scr
    # A 30 s timeout gives the script 15 s on the machine (web.playbooks.remote_time_limit).
    sch = schedule(server, name="too-slow", script_id=scr["id"], selectors=[{"type": "machines", "ids": [m["id"]]}],
                   schedule_type="interval", schedule_entry={"every": 1, "period": "days"}, run_immediately=True,
                   timeout=30)
    run = run_of(server, sch["id"], timeout=120)
    assert run["status"] == "timed_out", run
    (result,) = run["machines"]
    assert result["status"] == "timed_out" and "time limit of 15 s" in result["error"], result
    pid, path = seen.read_text().split()
    assert not os.path.exists(f"/proc/{pid}"), "the script still runs on the machine"
    assert not os.path.exists(path), "the script's copy is still on the machine"


def test_script_runs_due_together_on_one_machine_each_answer_with_their_own_result(server, sshd_hosts):
    host = sshd_hosts[0]
    status, key = server.api("POST", "keys", {"name": "shared-key", "private": host.private_key})
    assert status == 200, key
    _, lab = server.api("POST", "clouds", {"title": "shared-lab", "provider": "other"})
    status, m = server.api("POST", f"clouds/{lab['id']}/machines", {
        "name": "shared", "host": host.host, "port": host.port, "ssh_user": host.user, "key_id": key["id"]})
    assert status == 200, m
    # $0 tells how the script ran: from a launcher's directory (cloudcron.*) or on its own.
    status, scr = server.api("POST", "scripts", {"name": "who", "script": "#!/bin/sh\necho \"$1 ${0%/*}\"\nexit $2\n"})
    assert status == 200, scr
    when = (datetime.now(timezone.utc) + timedelta(seconds=8)).strftime("%Y-%m-%d %H:%M:%S")
    on = {"script_id": scr["id"], "selectors": [{"type": "machines", "ids": [m["id"]]}], "schedule_type": "one_off",
          "schedule_entry": when}
    # The other prints the machine's private key, which the run decrypted: it is stored redacted.
    status, leaky = server.api("POST", "scripts", {"name": "leaky", "script": (
        "#!/bin/sh\necho \"$1 ${0%/*}\"\ncat <<'EOF'\n" + host.private_key.strip() + "\nEOF\nexit $2\n")})
    assert status == 200, leaky
    ok = schedule(server, name="together-ok", params="first 0", **on)
    bad = schedule(server, name="together-bad", params="second 4", **{**on, "script_id": leaky["id"]})
    first, second = run_of(server, ok["id"], timeout=90), run_of(server, bad["id"], timeout=90)

    assert first["id"] != second["id"]
    [a], [b] = first["machines"], second["machines"]
    assert (first["status"], a["status"], a["rc"]) == ("succeeded", "succeeded", 0), first
    assert (second["status"], b["status"], b["rc"]) == ("failed", "failed", 4), second
    assert a["stdout"].startswith("first ") and b["stdout"].startswith("second ")
    key_body = host.private_key.strip().splitlines()[1]
    assert key_body not in b["stdout"] and "********" in b["stdout"], b["stdout"]
    # Due in the same second, they were one batch on one machine: one launcher ran both.
    assert "/cloudcron." in a["stdout"] and "/cloudcron." in b["stdout"], (a["stdout"], b["stdout"])
