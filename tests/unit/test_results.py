"""Collecting results from ansible-runner events, fed recorded event dicts: no sshd, no cloud, no clock."""
from __future__ import annotations

from web.playbooks import CloudTargets, SshTarget, render_power, render_script
from web.results import Recorder

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"


def _ssh(run_id, key, port=22, time_limit=None, host=None):
    # A machine of its own per key unless told: runs that share a machine share a launcher host.
    return SshTarget(run_id=run_id, key=key, host=host or f"{key}.example", port=port, user="root", private_key=KEY,
                     time_limit=time_limit)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _ok(host, res, task="cloudcron result", duration=0.5):
    return {"event": "runner_on_ok", "event_data": {"host": host, "task": task, "res": res, "duration": duration}}


def test_a_shared_cloud_task_result_goes_to_every_run_that_named_the_machine():
    rendered = render_power(None, [
        CloudTargets("run-a", "ec2", {}, {}, {"i-1": "ka1", "i-2": "ka2"}, cloud_id="c", state="stopped"),
        CloudTargets("run-b", "ec2", {}, {}, {"i-2": "kb2"}, cloud_id="c", state="stopped"),
    ])
    [host] = rendered.inventory["all"]["hosts"]  # one task for the cloud, both runs
    groups = []
    recorder = Recorder(rendered, 1024, on_results=groups.append)
    recorder.on_event(_ok(host, {"results": [
        {"machine_id": "i-1", "changed": True, "state": "stopped"},
        {"machine_id": "i-2", "failed": True, "msg": "IncorrectInstanceState"},
    ]}))
    assert len(groups) == 1  # one group per event: one transaction for the caller
    got = {(rid, key): res for rid, key, res in groups[0]}
    assert set(got) == {("run-a", "ka1"), ("run-a", "ka2"), ("run-b", "kb2")}
    assert (got["run-a", "ka1"].status, got["run-a", "ka1"].state) == ("succeeded", "stopped")
    assert got["run-a", "ka2"].status == got["run-b", "kb2"].status == "failed"
    assert got["run-b", "kb2"].error == "IncorrectInstanceState"


def test_clouds_of_different_states_stay_separate_tasks():
    rendered = render_power(None, [
        CloudTargets("run-a", "ec2", {}, {}, {"i-1": "ka"}, cloud_id="c", state="stopped"),
        CloudTargets("run-b", "ec2", {}, {}, {"i-2": "kb"}, cloud_id="c", state="started"),
    ])
    hosts = rendered.inventory["all"]["hosts"].values()
    assert sorted(h["cloudcron_state"] for h in hosts) == ["started", "stopped"]


def test_an_unreachable_cloud_fails_its_machines_in_every_run():
    rendered = render_power("stopped", [
        CloudTargets("run-a", "ec2", {}, {}, {"i-1": "ka"}, cloud_id="c"),
        CloudTargets("run-b", "ec2", {}, {}, {"i-1": "kb"}, cloud_id="c"),
    ])
    [host] = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024)
    recorder.on_event({"event": "runner_on_unreachable", "event_data": {"host": host, "res": {"msg": "no route"}}})
    assert {k: (r.status, r.error) for k, r in recorder.results.items()} == {
        ("run-a", "ka"): ("unreachable", "no route"), ("run-b", "kb"): ("unreachable", "no route")}


def test_each_script_host_gets_its_own_rc_and_output_capped():
    rendered = render_script("executable", "#!/bin/sh\necho\n", "", [_ssh("run-a", "ma"), _ssh("run-b", "mb")])
    ha, hb = rendered.inventory["all"]["hosts"]
    seen = []
    recorder = Recorder(rendered, 64, on_result=lambda *r: seen.append(r))
    recorder.on_event(_ok(ha, {"rc": 0, "stdout": "x" * 200, "stderr": ""}))
    recorder.on_event(_ok(hb, {"rc": 3, "stdout": "", "stderr": "bad"}))
    a, b = recorder.results[("run-a", "ma")], recorder.results[("run-b", "mb")]
    assert a.status == "succeeded" and len(a.stdout.encode()) <= 64 and a.stdout.startswith("x") and "truncated" in a.stdout
    assert (b.status, b.rc, b.error) == ("failed", 3, "the script exited with status 3")
    assert [s[:2] for s in seen] == [("run-a", "ma"), ("run-b", "mb")]


def test_a_run_past_its_own_deadline_times_out_alone():
    clock = Clock()
    rendered = render_script("executable", "#!/bin/sh\n", "", [_ssh("fast", "m1"), _ssh("slow", "m2")])
    h1, _ = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024, run_timeouts={"fast": 60, "slow": 5}, clock=clock)
    assert not recorder.should_stop()
    clock.now += 6
    assert not recorder.should_stop()  # slow timed out; fast still has its machine to hear from
    assert recorder.run_timeouts == {"slow": "the run timed out after 5 s"}
    assert recorder.results[("slow", "m2")].status == "timed_out"
    recorder.on_event(_ok(h1, {"rc": 0, "stdout": "done"}))
    assert recorder.results[("fast", "m1")].status == "succeeded"


def test_a_run_whose_machines_all_ended_in_time_is_not_timed_out_while_the_playbook_goes_on():
    clock = Clock()
    rendered = render_script("executable", "#!/bin/sh\n", "", [_ssh("quick", "m1"), _ssh("long", "m2")])
    h1, _ = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024, run_timeouts={"quick": 5, "long": 60}, clock=clock)
    recorder.on_event(_ok(h1, {"rc": 0, "stdout": "done"}))
    clock.now += 6
    assert not recorder.should_stop()  # long still has its machine to hear from
    assert recorder.run_timeouts == {} and recorder.results[("quick", "m1")].status == "succeeded"


def test_once_every_machine_is_known_after_a_run_timed_out_the_playbook_stops():
    clock = Clock()
    rendered = render_script("executable", "#!/bin/sh\n", "", [_ssh("fast", "m1"), _ssh("slow", "m2")])
    h1, _ = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024, run_timeouts={"fast": 60, "slow": 5}, clock=clock)
    recorder.on_event(_ok(h1, {"rc": 0}))
    clock.now += 6
    assert recorder.should_stop() and recorder.done_early and not recorder.timed_out


def test_a_script_stopped_at_its_time_limit_times_out_only_its_run():
    rendered = render_script("executable", "#!/bin/sh\n", "",
                             [_ssh("limited", "m1", time_limit=10), _ssh("other", "m2")])
    h1, h2 = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024)
    recorder.on_event(_ok(h1, {"rc": 124}, duration=10.2))
    recorder.on_event(_ok(h2, {"rc": 0}))
    assert recorder.results[("limited", "m1")].status == "timed_out"
    assert recorder.results[("other", "m2")].status == "succeeded"
    assert set(recorder.run_timeouts) == {"limited"} and not recorder.all_runs_timed_out()


def test_an_ansible_script_result_is_known_from_the_stats_at_the_end():
    rendered = render_script("ansible", "- ansible.builtin.ping:\n", "", [_ssh("run-a", "ma"), _ssh("run-b", "mb")])
    ha, hb = rendered.inventory["all"]["hosts"]
    recorder = Recorder(rendered, 1024)
    recorder.on_event(_ok(ha, {"changed": False}, task="ping"))
    recorder.on_event({"event": "runner_on_failed", "event_data": {"host": hb, "task": "ping",
                                                                  "res": {"msg": "boom"}}})
    assert recorder.results == {}  # a rescue block could still save them
    recorder.on_event({"event": "playbook_on_stats", "event_data": {"failures": {hb: 1}, "ok": {ha: 1}}})
    recorder.finish_from_stats()
    assert recorder.results[("run-a", "ma")].status == "succeeded"
    assert (recorder.results[("run-b", "mb")].status, recorder.results[("run-b", "mb")].error) == (
        "failed", "boom")


def test_a_failing_caller_stops_the_playbook():
    rendered = render_script("executable", "#!/bin/sh\n", "", [_ssh("run-a", "ma")])
    [ha] = rendered.inventory["all"]["hosts"]

    def broken(results):
        raise RuntimeError("database gone")

    recorder = Recorder(rendered, 1024, on_results=broken)
    recorder.on_event(_ok(ha, {"rc": 0}))
    assert isinstance(recorder.callback_error, RuntimeError) and recorder.should_stop()
