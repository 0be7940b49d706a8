"""execute(): real ansible-playbook through ansible-runner against real sshd servers and a moto EC2 server."""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from web.playbooks import CloudTargets, ScriptTarget, SshTarget, render_executables, render_power, render_script
from web.runner import PRIVATE_PREFIX, cap_text, execute, purge_leftovers
from web.sandbox import detect

pytestmark = pytest.mark.timeout(300)

RUN = "3f0c9a7e1b2d4c5e8f9a0b1c2d3e4f50"

# Fails on the host whose sshd port is $1; every host prints its own port so mixed-up
# results would show. $2 is echoed as it arrived.
PORT_SCRIPT = """#!/bin/sh
port=${SSH_CONNECTION##* }
echo "stdout from $port: $2"
echo "stderr from $port" >&2
if [ "$port" = "$1" ]; then exit 3; fi
"""


@pytest.fixture(params=["sandboxed", "unsandboxed"])
def sandbox(request):
    """Each run both inside bubblewrap (which this machine must provide) and without it."""
    return detect("required") if request.param == "sandboxed" else None


def _targets(hosts, run_id=RUN):
    return [SshTarget(run_id, f"{i:032x}", h.host, h.port, h.user, h.private_key) for i, h in enumerate(hosts)]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def _processes_using(path: Path) -> list[int]:
    """Pids whose working directory or command line is inside path."""
    needle = str(path)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if cwd.startswith(needle) or needle.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _assert_nothing_left(base_dir: Path) -> None:
    assert list(base_dir.iterdir()) == []  # no key, extravar, env or artifact file survives
    assert _processes_using(base_dir) == []  # no playbook, worker or ssh master survives


def test_each_machine_gets_its_own_rc_stdout_and_stderr(sshd_hosts, tmp_path, sandbox):
    base = tmp_path / "runs"
    failing = sshd_hosts[1].port
    targets = _targets(sshd_hosts) + [SshTarget(RUN, "f" * 32, "127.0.0.1", _closed_port(), "root", sshd_hosts[0].private_key)]
    # The second parameter would be 42 if Ansible templated what users send.
    rendered = render_script("executable", PORT_SCRIPT, f"{failing} '{{{{ 6 * 7 }}}}'", targets)
    seen = []
    result = execute(rendered, base_dir=base, timeout=240, on_result=lambda *call: seen.append(call),
                     sandbox=sandbox)

    assert result.status == "finished" and result.error is None
    assert sorted((run_id, key) for run_id, key, _ in seen) == sorted(rendered.expected)  # once each
    assert {(r, k): res for r, k, res in seen} == result.results
    for target, host in zip(targets, sshd_hosts):
        res = result.results[(RUN, target.key)]
        assert res.stdout == f"stdout from {host.port}: {{{{ 6 * 7 }}}}\n"
        assert res.stderr == f"stderr from {host.port}\n"
        if host.port == failing:
            assert (res.status, res.rc) == ("failed", 3)
            assert "3" in res.error
        else:
            assert (res.status, res.rc, res.error) == ("succeeded", 0, None)
        assert res.duration is not None and res.duration >= 0
    unreachable = result.results[(RUN, "f" * 32)]
    assert unreachable.status == "unreachable" and unreachable.error and unreachable.rc is None
    _assert_nothing_left(base)


def test_runs_sharing_a_machine_run_side_by_side_through_one_launcher(sshd_hosts, tmp_path, sandbox):
    base = tmp_path / "runs"
    host, other = sshd_hosts[0], sshd_hosts[1]

    def on(h, run_id, limit=3):
        return SshTarget(run_id, "m-" + str(h.port), h.host, h.port, h.user, h.private_key, time_limit=limit)

    # $0 is the script's path in the launcher's directory on the machine, which must be gone afterwards.
    where = "#!/bin/sh\necho \"$0\"\n"
    items = [ScriptTarget(on(host, "r-port"), PORT_SCRIPT, f"{other.port} '{{{{ 6 * 7 }}}}'"),
             ScriptTarget(on(host, "r-fails"), "#!/bin/sh\necho no >&2\nexit 5\n"),
             ScriptTarget(on(host, "r-limited"), "#!/bin/sh\nsleep 60\n"),
             ScriptTarget(on(host, "r-where"), where),
             ScriptTarget(on(other, "r-alone"), PORT_SCRIPT, str(other.port))]
    rendered = render_executables(items)
    assert len(rendered.inventory["all"]["hosts"]) == 2  # one entry per machine, whatever the runs
    result = execute(rendered, base_dir=base, timeout=120, sandbox=sandbox, run_timeouts={"r-limited": 100})

    assert result.status == "finished", result.error
    got = {rid: result.results[(rid, key)] for rid, key in rendered.expected}
    assert (got["r-port"].status, got["r-port"].stdout) == ("succeeded", f"stdout from {host.port}: {{{{ 6 * 7 }}}}\n")
    assert got["r-port"].stderr == f"stderr from {host.port}\n"
    assert (got["r-fails"].status, got["r-fails"].rc, got["r-fails"].stderr) == ("failed", 5, "no\n")
    assert got["r-limited"].status == "timed_out" and result.run_timeouts.keys() == {"r-limited"}
    assert (got["r-alone"].status, got["r-alone"].rc) == ("failed", 3)  # its own machine, its own port
    launched = Path(got["r-where"].stdout.strip()).parent
    assert got["r-where"].status == "succeeded" and launched.name.startswith("cloudcron.")
    assert launched.parent.name.startswith("ansible-tmp-")  # Ansible's directory for the launcher, not /tmp
    assert not launched.exists()  # the launcher removed its scripts and output from the machine
    _assert_nothing_left(base)


def test_a_quick_run_on_a_machine_ends_at_its_own_time_beside_a_long_run_with_a_longer_timeout(sshd_hosts, tmp_path):
    base = tmp_path / "runs"
    host = sshd_hosts[0]

    def on(run_id, limit):
        return SshTarget(run_id, "m1", host.host, host.port, host.user, host.private_key, time_limit=limit)

    # Each ends well within its own time: alone, both succeed; side by side they must too.
    items = [ScriptTarget(on("r-long", 45), "#!/bin/sh\nsleep 12\necho long\n"),
             ScriptTarget(on("r-quick", 3), "#!/bin/sh\necho quick\n"),
             ScriptTarget(on("r-quick-too", 3), "#!/bin/sh\necho quick too\n")]
    result = execute(render_executables(items), base_dir=base, timeout=120,
                     run_timeouts={"r-long": 60, "r-quick": 8, "r-quick-too": 8})

    assert result.status == "finished", result.error
    got = {rid: result.results[(rid, "m1")] for rid in ("r-long", "r-quick", "r-quick-too")}
    assert {rid: (r.status, r.stdout) for rid, r in got.items()} == {
        "r-long": ("succeeded", "long\n"), "r-quick": ("succeeded", "quick\n"),
        "r-quick-too": ("succeeded", "quick too\n")}
    assert result.run_timeouts == {}
    _assert_nothing_left(base)


def test_many_runs_on_one_machine_all_printing_past_the_cap_each_get_their_output(sshd_hosts, tmp_path):
    # Each job reports up to the cap per stream, as hex: all of them in one result would pass the size
    # above which ansible-runner hands the runner an empty result, and every run would lose its own.
    base = tmp_path / "runs"
    host = sshd_hosts[0]
    flood = "#!/bin/sh\nyes \"$1\" | head -c 400000\nyes \"$1\" | head -c 400000 >&2\n"
    runs = [f"r{i}" for i in range(24)]
    items = [ScriptTarget(SshTarget(rid, "m1", host.host, host.port, host.user, host.private_key, time_limit=90),
                          flood, rid) for rid in runs]
    result = execute(render_executables(items), base_dir=base, timeout=240, run_timeouts={rid: 120 for rid in runs})

    assert result.status == "finished", result.error
    for rid in runs:
        got = result.results[(rid, "m1")]
        assert got.status == "succeeded", (rid, got.error)
        for stream in (got.stdout, got.stderr):
            assert stream.startswith(f"{rid}\n{rid}\n") and "bytes of output truncated" in stream
            assert len(stream.encode()) <= 256 * 1024
    _assert_nothing_left(base)


def test_an_ansible_task_list_runs_on_every_machine(sshd_hosts, tmp_path, monkeypatch, sandbox):
    base = tmp_path / "runs"
    # A worker secret in the environment must not reach the playbook.
    monkeypatch.setenv("CLOUDCRON_SECRET_KEY", "worker-secret-value")
    tasks = """
- name: remote hello
  ansible.builtin.raw: echo "hello from ${SSH_CONNECTION##* }"
  register: hello
- name: fail on one machine
  ansible.builtin.raw: test "${SSH_CONNECTION##* }" != "%d"
- name: show the worker environment
  ansible.builtin.debug:
    msg: "secret=[{{ lookup('env', 'CLOUDCRON_SECRET_KEY') }}] said={{ hello.stdout | trim }}"
""" % sshd_hosts[2].port
    rendered = render_script("ansible", tasks, "", _targets(sshd_hosts))
    ghost = (RUN, "0" * 31 + "9")
    rendered.expected.append(ghost)  # a machine the playbook never mentions
    result = execute(rendered, base_dir=base, timeout=240, sandbox=sandbox)

    assert result.status == "finished"
    for i, host in enumerate(sshd_hosts):
        res = result.results[(RUN, f"{i:032x}")]
        assert "TASK [remote hello]" in res.stdout
        if i == 2:
            assert res.status == "failed" and res.rc == 1
            assert "fail on one machine" in res.error or "non-zero" in res.error
            assert "show the worker environment" not in res.stdout
        else:
            assert res.status == "succeeded" and res.error is None
            assert f"secret=[] said=hello from {host.port}" in res.stdout
        assert "worker-secret-value" not in res.stdout
    assert result.results[ghost].status == "failed" and result.results[ghost].error
    _assert_nothing_left(base)


def test_a_user_playbook_is_run_against_the_runs_machines(sshd_hosts, tmp_path):
    base = tmp_path / "runs"
    playbook = """
- name: users play
  hosts: some_group_we_do_not_have
  gather_facts: false
  tasks:
    - ansible.builtin.raw: echo "ran on ${SSH_CONNECTION##* }"
"""
    rendered = render_script("ansible", playbook, "", _targets(sshd_hosts[:1]))
    result = execute(rendered, base_dir=base, timeout=240)
    (res,) = result.results.values()
    assert res.status == "succeeded", res
    assert result.status == "finished"
    _assert_nothing_left(base)


def test_a_playbook_ansible_cannot_load_is_an_error_for_every_machine(sshd_hosts, tmp_path):
    base = tmp_path / "runs"
    rendered = render_script("ansible", "- name: nope\n  no.such.module_here: {}\n", "", _targets(sshd_hosts[:2]))
    result = execute(rendered, base_dir=base, timeout=240)
    assert result.status == "error"
    assert "no.such.module_here" in result.error
    assert {r.status for r in result.results.values()} == {"failed"}
    assert all("no.such.module_here" in r.error for r in result.results.values())
    _assert_nothing_left(base)


def test_a_run_past_its_timeout_is_stopped(sshd_hosts, tmp_path, sandbox):
    base = tmp_path / "runs"
    pid_dir = tmp_path / "remote-pids"
    pid_dir.mkdir()
    # The sshd hosts run on this machine, so the script can leave its pid where the test finds it.
    script = f"#!/bin/sh\necho $$ > {pid_dir}/${{SSH_CONNECTION##* }}\nexec sleep 600\n"
    rendered = render_script("executable", script, "", _targets(sshd_hosts))
    try:
        result = execute(rendered, base_dir=base, timeout=8, sandbox=sandbox)
        assert result.status == "timed_out" and "timed out" in result.error
        assert set(result.results) == set(rendered.expected)
        assert {r.status for r in result.results.values()} == {"timed_out"}
        _assert_nothing_left(base)  # ansible-playbook, its workers and ssh are gone
    finally:
        for pid_file in pid_dir.iterdir():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_a_script_past_its_time_limit_is_stopped_on_the_machine_and_its_copy_removed(sshd_hosts, tmp_path, sandbox):
    base = tmp_path / "runs"
    host = sshd_hosts[0]
    seen = tmp_path / "remote"
    # The sshd host is this machine: the script leaves its pid and its own path where the test finds them.
    script = f"#!/bin/sh\necho \"$$ $0\" > {seen}\nsleep 120\necho never\n"
    targets = [SshTarget(RUN, "a" * 32, host.host, host.port, host.user, host.private_key, time_limit=3)]
    result = execute(render_script("executable", script, "", targets), base_dir=base, timeout=240, sandbox=sandbox)
    (res,) = result.results.values()
    assert (res.status, res.rc) in (("timed_out", 124), ("timed_out", 137)), res
    assert "time limit of 3 s" in res.error and "never" not in res.stdout
    assert result.status == "timed_out" and "time limit" in result.error
    pid, path = seen.read_text().split()
    assert not os.path.exists(f"/proc/{pid}") and not os.path.exists(path)
    _assert_nothing_left(base)


def test_a_script_exiting_124_by_itself_is_a_failure_not_a_timeout(sshd_hosts, tmp_path):
    host = sshd_hosts[0]
    targets = [SshTarget(RUN, "a" * 32, host.host, host.port, host.user, host.private_key, time_limit=60)]
    result = execute(render_script("executable", "#!/bin/sh\nexit 124\n", "", targets), base_dir=tmp_path / "runs",
                     timeout=240)
    (res,) = result.results.values()
    assert (res.status, res.rc, result.status) == ("failed", 124, "finished"), res


def test_an_ansible_script_task_is_stopped_at_the_time_limit(sshd_hosts, tmp_path, sandbox):
    host = sshd_hosts[0]
    targets = [SshTarget(RUN, "a" * 32, host.host, host.port, host.user, host.private_key, time_limit=3)]
    rendered = render_script("ansible", "- ansible.builtin.raw: sleep 30\n", "", targets)
    assert rendered.task_timeout == 3
    result = execute(rendered, base_dir=tmp_path / "runs", timeout=240, sandbox=sandbox)
    (res,) = result.results.values()
    # Ansible's own task timeout; its wording changed across ansible-core versions.
    assert res.status == "failed" and "3" in res.error, res
    assert "timed out" in res.error.lower() or "time frame" in res.error


def test_output_over_the_cap_keeps_head_and_tail_with_a_marker(sshd_hosts, tmp_path):
    base = tmp_path / "runs"
    script = "#!/bin/sh\necho FIRST\nhead -c 200000 /dev/zero | tr '\\0' x\necho\necho LAST\n" \
             "head -c 50000 /dev/zero | tr '\\0' e >&2\n"
    rendered = render_script("executable", script, "", _targets(sshd_hosts[:1]))
    result = execute(rendered, base_dir=base, timeout=240, output_cap=10_000)
    (res,) = result.results.values()
    assert res.status == "succeeded"
    for text in (res.stdout, res.stderr):
        assert len(text.encode()) <= 10_000
        assert "[cloudcron: " in text and "bytes of output truncated]" in text
    assert res.stdout.startswith("FIRST\nxxx") and res.stdout.endswith("xxx\nLAST\n")
    _assert_nothing_left(base)


def test_output_that_is_not_utf8_reaches_the_caller_as_valid_text(sshd_hosts, tmp_path):
    # Ansible hands such bytes on as lone surrogates, which no database stores.
    script = "#!/bin/sh\nprintf 'caf\\351 \\303\\251\\000\\n'\nprintf 'x\\377' >&2\nexit 4\n"
    seen = []
    rendered = render_script("executable", script, "", _targets(sshd_hosts[:1]))
    result = execute(rendered, base_dir=tmp_path / "runs", timeout=240, on_result=lambda *call: seen.append(call))
    res = result.results[(RUN, f"{0:032x}")]
    assert (res.status, res.rc) == ("failed", 4)
    assert (res.stdout, res.stderr) == ("caf\ufffd \u00e9\ufffd\n", "x\ufffd")
    assert seen[0][2] == res


def test_cap_text_leaves_short_text_alone_and_never_splits_characters():
    assert cap_text("short", 100) == "short"
    capped = cap_text("é" * 5000, 1000)
    assert len(capped.encode()) <= 1000
    assert capped.startswith("éé") and capped.endswith("éé") and "truncated" in capped


def test_when_recording_a_result_fails_the_run_stops_and_leaves_nothing(sshd_hosts, tmp_path):
    base = tmp_path / "runs"
    rendered = render_script("executable", "#!/bin/sh\necho hi\n", "", _targets(sshd_hosts))
    calls = []

    def broken_recorder(run_id, key, res):
        calls.append(key)
        raise RuntimeError("database is gone")

    with pytest.raises(RuntimeError, match="database is gone"):
        execute(rendered, base_dir=base, timeout=240, on_result=broken_recorder)
    assert len(calls) == 1  # nothing more is handed to a recorder that failed
    _assert_nothing_left(base)


def test_power_run_against_moto_reports_each_machine(moto_server, tmp_path, sandbox):
    base = tmp_path / "runs"
    ids = moto_server.create_machines(2)
    missing = "i-0000000000000dead"
    machines = {ids[0]: "a" * 32, ids[1]: "b" * 32, missing: "c" * 32}
    cloud = CloudTargets(RUN, "ec2", dict(moto_server.credentials), dict(moto_server.options), machines)
    seen = []
    # No collections_path: the runner links this checkout in as cloudcron.scheduler itself.
    result = execute(render_power("stopped", [cloud]), base_dir=base, timeout=240,
                     on_result=lambda *call: seen.append(call), sandbox=sandbox)

    assert result.status == "finished"
    assert len(seen) == 3
    for machine_id in ids:
        res = result.results[(RUN, machines[machine_id])]
        assert (res.status, res.changed, res.error) == ("succeeded", True, None), res
        assert res.state == "stopped"
        assert moto_server.state(machine_id) == "stopped"
    gone = result.results[(RUN, "c" * 32)]
    assert gone.status == "failed" and missing in gone.error
    _assert_nothing_left(base)


def test_power_run_with_bad_credentials_fails_every_machine_of_that_cloud(moto_server, tmp_path, collections_path,
                                                                         sandbox):
    base = tmp_path / "runs"
    ids = moto_server.create_machines(1)
    cloud = CloudTargets(RUN, "ec2", {"key": "testing"}, dict(moto_server.options), {ids[0]: "d" * 32})
    result = execute(render_power("stopped", [cloud]), base_dir=base, timeout=240,
                     collections_path=str(collections_path), sandbox=sandbox)
    (res,) = result.results.values()
    assert res.status == "failed" and res.error
    assert moto_server.state(ids[0]) == "running"
    _assert_nothing_left(base)


def test_purge_removes_only_abandoned_run_dirs_and_their_processes(tmp_path):
    base = tmp_path / "runs"
    base.mkdir()
    abandoned = base / f"{PRIVATE_PREFIX}dead"
    (abandoned / "env").mkdir(parents=True)
    (abandoned / ".lock").touch()
    (abandoned / "env" / "extravars").write_text("secret: x\n")
    live = base / f"{PRIVATE_PREFIX}live"
    live.mkdir()
    other = base / "not-a-run"
    other.mkdir()
    # A playbook a killed worker left behind still works in its directory.
    orphan = subprocess.Popen(["sleep", "600"], cwd=abandoned)
    lock_fd = os.open(live / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # as a running worker holds it
        assert purge_leftovers(base) == 1
        assert orphan.wait(timeout=30) is not None
        assert sorted(p.name for p in base.iterdir()) == sorted([live.name, other.name])
    finally:
        os.close(lock_fd)
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert purge_leftovers(base) == 1  # the lock is free now: that worker is gone
    assert [p.name for p in base.iterdir()] == [other.name]
    assert purge_leftovers(tmp_path / "missing") == 0
