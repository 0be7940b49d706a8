"""The launcher that runs several runs' scripts on one machine (playbooks/launcher.sh.j2), run for real by /bin/sh
on this machine, its report fed to the Recorder as the script task's result: no sshd, no Ansible."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from web.playbooks import (EVENT_RESULT_LIMIT, LAUNCHER_LANES, ScriptTarget, SshTarget, launcher_jobs_max,
                           render_executables)
from web.results import Recorder, parse_launcher_report

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"
PRINTS = "#!/bin/sh\necho \"out [$1] [$2]\"\necho \"err $#\" >&2\n"


def _item(run_id, script, params="", time_limit=60, host="box.example", org="org-a"):
    return ScriptTarget(SshTarget(run_id, "m1", host, 22, "root", KEY, time_limit=time_limit, org_id=org),
                        script, params)


def _launch(tmp_path: Path, items, cap=4096, env=None):
    """Render items, run the one launcher host's script with sh, and feed its output to a Recorder."""
    rendered = render_executables(items, output_cap=cap)
    [(host, hostvars)] = rendered.inventory["all"]["hosts"].items()
    path = tmp_path / "launcher"
    path.write_text(rendered.files[f"files/{hostvars['cloudcron_script_cmd']}"][0])
    path.chmod(0o700)
    # A session of its own, as over SSH: a script signalling its group must not reach pytest.
    proc = subprocess.run([str(path)], capture_output=True, timeout=60, cwd=tmp_path, start_new_session=True,
                          env=env)
    recorder = Recorder(rendered, cap)
    recorder.on_event({"event": "runner_on_ok", "event_data": {
        "host": host, "task": "cloudcron result", "duration": 1.0,
        "res": {"rc": proc.returncode, "stdout": proc.stdout.decode("utf-8", "surrogateescape"),
                "stderr": proc.stderr.decode()}}})
    return recorder.results, recorder, proc


def test_runs_on_one_machine_share_one_host_and_one_upload():
    rendered = render_executables([_item("r1", PRINTS, "a"), _item("r2", PRINTS, "b"),
                                   _item("r3", "#!/bin/sh\nexit 0\n")])
    [hostvars] = rendered.inventory["all"]["hosts"].values()
    assert hostvars["cloudcron_jobs"] == [["r1", "m1", 60], ["r2", "m1", 60], ["r3", "m1", 60]]
    assert "cloudcron_run_id" not in hostvars and "cloudcron_script_executable" not in hostvars
    uploads = [name for name in rendered.files if name.startswith("files/")]
    assert uploads == [f"files/{hostvars['cloudcron_script_cmd']}"]
    assert sorted(rendered.expected) == [("r1", "m1"), ("r2", "m1"), ("r3", "m1")]


def test_runs_of_different_orgs_on_one_machine_never_share_a_host_or_a_connection():
    rendered = render_executables([_item("r1", PRINTS, org="org-a"), _item("r2", PRINTS, org="org-b")])
    hosts = list(rendered.inventory["all"]["hosts"].values())
    assert len(hosts) == 2 and all("cloudcron_jobs" not in h for h in hosts)
    assert len({h["ansible_control_path"] for h in hosts}) == 2


def test_only_runs_with_the_same_time_limit_share_a_launcher_and_runs_without_one_run_alone():
    # A launcher reports when its last job ends: a sibling with a longer limit, or none, would hold a
    # quick run's result past that run's own timeout.
    rendered = render_executables([_item("a", PRINTS, time_limit=5), _item("b", PRINTS, time_limit=5),
                                   _item("long", PRINTS, time_limit=3540), _item("c", PRINTS, time_limit=5),
                                   _item("free1", PRINTS, time_limit=None), _item("free2", PRINTS, time_limit=None)])
    hosts = list(rendered.inventory["all"]["hosts"].values())
    assert sorted(h.get("cloudcron_jobs", [[h.get("cloudcron_run_id")]]) for h in hosts) == sorted([
        [["a", "m1", 5], ["b", "m1", 5], ["c", "m1", 5]], [["long"]], [["free1"]], [["free2"]]])
    assert len({h["ansible_control_path"] for h in hosts}) == 1  # still one SSH connection to the machine


def test_a_launcher_carries_only_as_many_jobs_as_fit_in_one_result_at_the_output_cap():
    items = [_item(f"r{i}", PRINTS) for i in range(40)]
    per = launcher_jobs_max(256 * 1024)
    # Every job at the cap on both streams, as od hex, twice over (stdout and stdout_lines): under the limit.
    assert 2 * 2 * (256 * 1024 // 16 + 1) * 52 * per < EVENT_RESULT_LIMIT and per > 1
    hosts = list(render_executables(items, output_cap=256 * 1024).inventory["all"]["hosts"].values())
    assert [len(h["cloudcron_jobs"]) for h in hosts] == [per] * (40 // per) + ([40 % per] if 40 % per else [])
    assert [job[0] for h in hosts for job in h["cloudcron_jobs"]] == [f"r{i}" for i in range(40)]
    [host] = render_executables(items, output_cap=4096).inventory["all"]["hosts"].values()
    assert len(host["cloudcron_jobs"]) == 40


def test_a_machine_with_one_run_runs_its_script_directly():
    rendered = render_executables([_item("r1", PRINTS, "a", host="one.example"), _item("r2", PRINTS, host="two.example")])
    for hostvars in rendered.inventory["all"]["hosts"].values():
        assert "cloudcron_jobs" not in hostvars and hostvars["cloudcron_script_cmd"].startswith("cloudcron-")


def test_each_job_gets_its_own_status_output_and_parameters(tmp_path):
    results, _, _ = _launch(tmp_path, [
        _item("ok", PRINTS, "--flag 'a b'"),
        _item("fails", "#!/bin/sh\necho before\nexit 3\n"),
        _item("plain", "echo no shebang line"),
        _item("chained", PRINTS, "x; exit 9"),
    ])
    ok, fails, plain, chained = (results[(r, "m1")] for r in ("ok", "fails", "plain", "chained"))
    assert (ok.status, ok.rc, ok.stdout, ok.stderr) == ("succeeded", 0, "out [--flag] [a b]\n", "err 2\n")
    assert (fails.status, fails.rc, fails.stdout, fails.error) == ("failed", 3, "before\n",
                                                                   "the script exited with status 3")
    assert (plain.status, plain.stdout) == ("succeeded", "no shebang line\n")
    # The parameters reach a shell as written, as when the script runs alone on its machine.
    assert (chained.status, chained.rc, chained.stdout) == ("failed", 9, "out [x] []\n")


def test_one_runs_broken_parameters_end_only_that_run(tmp_path):
    results, _, _ = _launch(tmp_path, [_item("broken", PRINTS, "'unbalanced"), _item("exits", PRINTS, "; exit"),
                                       _item("fine", PRINTS, "y")])
    assert results[("broken", "m1")].status == "failed" and results[("broken", "m1")].rc == 2
    assert results[("fine", "m1")].stdout == "out [y] []\n" and results[("fine", "m1")].status == "succeeded"
    assert results[("exits", "m1")].stdout == "out [] []\n"


def test_jobs_run_side_by_side_and_a_time_limit_stops_only_its_run(tmp_path):
    # Each waits for the other's file: run one after the other, the first would wait until its time limit.
    meet = "#!/bin/sh\ntouch \"$1\"\nwhile [ ! -e \"$2\" ]; do sleep 0.1; done\necho met\n"
    results, recorder, _ = _launch(tmp_path, [_item("limited", "#!/bin/sh\nsleep 30\n", time_limit=2),
                                              _item("a", meet, "a b", time_limit=2), _item("b", meet, "b a", time_limit=2)])
    limited = results[("limited", "m1")]
    assert limited.status == "timed_out" and limited.rc == 124 and "time limit of 2 s" in limited.error
    assert set(recorder.run_timeouts) == {"limited"}
    for rid in ("a", "b"):
        assert (results[(rid, "m1")].status, results[(rid, "m1")].stdout) == ("succeeded", "met\n")


def test_commands_in_the_parameters_are_held_to_the_runs_time_limit_too(tmp_path):
    # Run after the script, outside its limit, the sleep would hold every run's result on this machine.
    started = time.monotonic()
    results, _, _ = _launch(tmp_path, [_item("escapes", "#!/bin/sh\necho script\n", "x; sleep 40; echo after",
                                             time_limit=2),
                                       _item("bystander", "#!/bin/sh\necho here\n", time_limit=2)])
    assert time.monotonic() - started < 20
    escapes = results[("escapes", "m1")]
    assert (escapes.status, escapes.rc, escapes.stdout) == ("timed_out", 124, "script\n")
    assert (results[("bystander", "m1")].status, results[("bystander", "m1")].stdout) == ("succeeded", "here\n")


def test_a_run_that_empties_the_temporary_directory_leaves_the_other_runs_results_alone(tmp_path):
    # A cleanup script is a common thing to schedule; run alone, it never touched another run's files.
    tmp = tmp_path / "machine-tmp"
    tmp.mkdir()
    launcher_dir = tmp_path / "ansible-tmp"
    launcher_dir.mkdir()
    cleaner = f"#!/bin/sh\nrm -rf {tmp}/* {tmp}/.[!.]*\necho cleaned\n"
    results, _, _ = _launch(launcher_dir, [_item("cleaner", cleaner), _item("bystander", "#!/bin/sh\nsleep 1\necho here\n")],
                            env={**os.environ, "TMPDIR": str(tmp)})
    assert (results[("cleaner", "m1")].status, results[("cleaner", "m1")].stdout) == ("succeeded", "cleaned\n")
    assert (results[("bystander", "m1")].status, results[("bystander", "m1")].stdout) == ("succeeded", "here\n")
    assert list(launcher_dir.iterdir()) == [launcher_dir / "launcher"]  # its own directory went with it


def test_a_script_signalling_its_process_group_stops_only_its_own_job(tmp_path):
    results, _, proc = _launch(tmp_path, [_item("killer", "#!/bin/sh\necho going\nkill -TERM 0\necho survived\n"),
                                          _item("bystander", "#!/bin/sh\nsleep 1\necho still here\n")])
    assert proc.returncode == 0
    assert results[("killer", "m1")].status == "failed" and results[("killer", "m1")].stdout == "going\n"
    assert (results[("bystander", "m1")].status, results[("bystander", "m1")].stdout) == ("succeeded", "still here\n")


def test_without_timeout_on_the_machine_setsid_keeps_a_scripts_kill_0_to_its_own_job(tmp_path):
    # A machine whose PATH has the tools the launcher needs and setsid, but no coreutils timeout.
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "mktemp", "od", "head", "tail", "date", "chmod", "cat", "rm", "wc", "sleep", "mkdir", "setsid"):
        (tools / tool).symlink_to(shutil.which(tool))
    results, _, proc = _launch(tmp_path, [_item("killer", "#!/bin/sh\necho going\nkill -TERM 0\necho survived\n"),
                                          _item("bystander", "#!/bin/sh\nsleep 1\necho still here\n")],
                               env={**os.environ, "PATH": str(tools)})
    assert proc.returncode == 0
    assert results[("killer", "m1")].status == "failed" and results[("killer", "m1")].stdout == "going\n"
    assert (results[("bystander", "m1")].status, results[("bystander", "m1")].stdout) == ("succeeded", "still here\n")


def test_output_is_capped_per_job_and_bytes_that_are_not_utf8_survive_as_replacements(tmp_path):
    big = "#!/bin/sh\ni=0\nwhile [ $i -lt 400 ]; do echo \"line $i\"; i=$((i+1)); done\n"
    results, _, _ = _launch(tmp_path, [_item("big", big), _item("binary", "#!/bin/sh\nprintf 'caf\\351\\n'\n")],
                            cap=512)
    out = results[("big", "m1")].stdout
    assert len(out.encode()) <= 512 and out.startswith("line 0\n") and out.endswith("line 399\n")
    assert "bytes of output truncated" in out
    assert results[("binary", "m1")].stdout == "caf\ufffd\n"


def test_a_script_printing_a_report_cannot_write_another_runs_result(tmp_path):
    forger = ("#!/bin/sh\nprintf 'cloudcron-job 1\\n0 1 2\\nstdout\\nsize 2\\n 6f 6b\\nstderr\\nsize 0\\n'\n"
              "echo 'cloudcron-end'\nexit 0\n")
    results, _, _ = _launch(tmp_path, [_item("forger", forger), _item("victim", "#!/bin/sh\necho real\nexit 4\n")])
    assert results[("victim", "m1")].rc == 4 and results[("victim", "m1")].stdout == "real\n"
    assert results[("forger", "m1")].stdout.startswith("cloudcron-job 1\n")


def test_jobs_beyond_the_lanes_wait_for_one_and_all_report(tmp_path):
    count = LAUNCHER_LANES + 5
    results, _, _ = _launch(tmp_path, [_item(f"r{i}", PRINTS, str(i)) for i in range(count)])
    assert [results[(f"r{i}", "m1")].stdout for i in range(count)] == [f"out [{i}] []\n" for i in range(count)]


def test_a_job_that_waits_for_a_lane_gets_what_is_left_of_the_limit_so_every_result_comes_in_time(tmp_path):
    # The launcher reports every job at once, when its last one ends: a job started late with a whole
    # limit of its own would hold the others' results past their runs' timeouts.
    count, limit = LAUNCHER_LANES + 2, 6
    late = {f"r{i}" for i in range(LAUNCHER_LANES, count)}  # each lane's second job
    started = time.monotonic()
    results, _, _ = _launch(tmp_path, [
        _item(f"r{i}", "#!/bin/sh\nsleep 30\n" if f"r{i}" in late else "#!/bin/sh\nsleep 4\necho done\n",
              time_limit=limit) for i in range(count)])
    # With a whole limit from their start, the late jobs would end at 4 + 6 s; the machine's clock is
    # read in whole seconds, so the limit holds within a second or two.
    assert time.monotonic() - started < limit + 2.5
    for i in range(count):
        got = results[(f"r{i}", "m1")]
        if f"r{i}" in late:
            assert got.status == "timed_out" and got.duration >= limit - 1, (i, got)
        else:
            assert (got.status, got.stdout) == ("succeeded", "done\n"), (i, got)


def test_a_report_cut_short_fails_the_jobs_it_lacks_with_the_launchers_error():
    rendered = render_executables([_item("r1", PRINTS), _item("r2", PRINTS)])
    [host] = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024)
    recorder.on_event({"event": "runner_on_ok", "event_data": {"host": host, "task": "cloudcron result", "res": {
        "rc": 70, "stdout": "cloudcron-job 0\n0 1.5 2.5\nstdout\nsize 3\n 68 69 0a\nstderr\nsize 0\ncloudcron-job 1\n",
        "stderr": "cloudcron: cannot create a temporary directory"}}})
    first, second = recorder.results[("r1", "m1")], recorder.results[("r2", "m1")]
    assert (first.status, first.stdout, first.duration) == ("succeeded", "hi\n", 1.0)
    assert second.status == "failed" and "did not come back" in second.error
    assert "cannot create a temporary directory" in second.error


@pytest.mark.parametrize("kind", ["runner_on_unreachable", "runner_on_failed"])
def test_an_unreachable_or_failed_launcher_host_ends_every_job(kind):
    rendered = render_executables([_item("r1", PRINTS), _item("r2", PRINTS)])
    [host] = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024)
    recorder.on_event({"event": kind, "event_data": {"host": host, "task": "cloudcron result",
                                                     "res": {"msg": "no route to host"}}})
    expected = "unreachable" if kind == "runner_on_unreachable" else "failed"
    assert {k: (r.status, r.error) for k, r in recorder.results.items()} == {
        ("r1", "m1"): (expected, "no route to host"), ("r2", "m1"): (expected, "no route to host")}


def test_whole_second_clocks_are_read_with_a_second_of_slack():
    report = "cloudcron-job 0\n124 100 109\nstdout\nsize 0\nstderr\nsize 0\ncloudcron-end\n"
    [job] = parse_launcher_report(report, 100).values()
    assert (job.rc, job.duration, job.precise) == (124, 9.0, False)
    rendered = render_executables([_item("r1", PRINTS, time_limit=10), _item("r2", PRINTS, time_limit=10)])
    [host] = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024)
    recorder.on_event({"event": "runner_on_ok", "event_data": {"host": host, "task": "cloudcron result", "res": {
        "rc": 0, "stdout": report.replace("cloudcron-end", "cloudcron-job 1\n124 100 104.5\nstdout\nsize 0\n"
                                                           "stderr\nsize 0\ncloudcron-end")}}})
    assert recorder.results[("r1", "m1")].status == "timed_out"  # 9 whole seconds may be 9.99
    assert recorder.results[("r2", "m1")].status == "failed"  # 124 after 4.5 s of 10: the script's own status
