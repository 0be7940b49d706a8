"""Rendering runs into playbooks: what lands in the playbook, the inventory, the extra variables and files."""
from __future__ import annotations

import yaml

import pytest

from web.playbooks import (
    RESULT_TASK,
    CloudTargets,
    RenderError,
    SshTarget,
    render_power,
    render_script,
)

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretkeymaterial\n-----END OPENSSH PRIVATE KEY-----"


def _targets(n=2, run_id="run-1"):
    return [SshTarget(run_id, f"{i:032x}", f"10.0.0.{i + 1}", 22 + i, "admin", KEY) for i in range(n)]


def _hosts(rendered):
    return rendered.inventory["all"]["hosts"]


def _single_task(rendered):
    plays = yaml.safe_load(rendered.playbook)
    assert len(plays) == 1 and plays[0]["hosts"] == "all" and plays[0]["gather_facts"] is False
    (task,) = plays[0]["tasks"]
    return task


def test_executable_script_runs_one_script_task_per_machine():
    rendered = render_script("executable", "#!/bin/sh\necho hi\n", "--flag 'a b'", _targets())
    task = _single_task(rendered)
    assert task["name"] == RESULT_TASK == rendered.result_task
    assert task["ansible.builtin.script"]["cmd"] == "{{ cloudcron_script_cmd }}"
    assert task["failed_when"] is False
    (script_path,) = [p for p in rendered.files if p.startswith("files/")]
    assert rendered.files[script_path] == ("#!/bin/sh\necho hi\n", 0o600)
    for host in _hosts(rendered).values():
        # Parameters follow the script file name untouched, quoting included.
        assert host["cloudcron_script_cmd"] == script_path.split("/", 1)[1] + " --flag 'a b'"


def test_script_without_params_is_just_the_file_name():
    rendered = render_script("executable", "echo hi", "", _targets(1))
    (host,) = _hosts(rendered).values()
    assert host["cloudcron_script_cmd"].startswith("cloudcron-") and " " not in host["cloudcron_script_cmd"]


def test_each_machine_carries_its_run_id_key_and_own_key_file():
    targets = _targets(3)
    rendered = render_script("executable", "echo hi", "", targets)
    hosts = _hosts(rendered)
    assert rendered.expected == [(t.run_id, t.key) for t in targets]
    assert sorted((h["cloudcron_run_id"], h["cloudcron_machine_key"]) for h in hosts.values()) == sorted(rendered.expected)
    key_files = {h["ansible_ssh_private_key_file"] for h in hosts.values()}
    assert len(key_files) == 3
    for target in targets:
        host = hosts[target.key]
        assert (host["ansible_host"], host["ansible_port"], host["ansible_user"]) == (target.host, target.port, target.user)
        content, mode = rendered.files[host["ansible_ssh_private_key_file"]]
        assert content == KEY + "\n" and mode == 0o600  # ssh rejects a key without its final newline
        assert host["ansible_ssh_use_tty"] is False
        assert "StrictHostKeyChecking=no" in host["ansible_ssh_common_args"]
        assert "IdentitiesOnly=yes" in host["ansible_ssh_common_args"]


def test_secrets_stay_out_of_the_playbook_inventory_and_reprs():
    rendered = render_script("executable", "echo hi", "", _targets())
    assert "secretkeymaterial" not in rendered.playbook
    assert "secretkeymaterial" not in repr(rendered.inventory)
    assert "secretkeymaterial" not in repr(rendered)
    assert "secretkeymaterial" not in repr(_targets(1)[0])


def test_duplicate_or_odd_machine_keys_still_get_distinct_host_names():
    targets = [
        SshTarget("r", "abc", "h1", 22, "u", KEY),
        SshTarget("r2", "abc", "h2", 22, "u", KEY),
        SshTarget("r", "../weird key", "h3", 22, "u", KEY),
        SshTarget("r", "m2", "h4", 22, "u", KEY),  # the name the odd key above would get
    ]
    rendered = render_script("executable", "echo", "", targets)
    hosts = _hosts(rendered)
    assert len(hosts) == 4
    assert sorted((h["cloudcron_run_id"], h["cloudcron_machine_key"]) for h in hosts.values()) == sorted(
        [("r", "abc"), ("r2", "abc"), ("r", "../weird key"), ("r", "m2")])
    # Two entries for one address never share an authenticated ssh master.
    assert len({h["ansible_control_path"] for h in hosts.values()}) == 4


def test_an_ansible_task_list_is_imported_verbatim_into_one_play():
    tasks = "# mine\n- name: say hi\n  ansible.builtin.debug:\n    msg: \"{{ inventory_hostname }}\"\n"
    rendered = render_script("ansible", tasks, "", _targets())
    assert rendered.result_task is None
    task = _single_task(rendered)
    user_file = task["ansible.builtin.import_tasks"]
    assert rendered.files[user_file] == (tasks, 0o600)


def test_an_ansible_playbook_is_pointed_at_the_runs_machines():
    playbook = (
        "- hosts: webservers\n  tasks:\n    - ansible.builtin.debug:\n        msg: !unsafe '{{ not templated }}'\n"
        "- name: second\n  hosts: localhost\n  gather_facts: false\n  tasks: []\n"
    )
    rendered = render_script("ansible", playbook, "", _targets())
    (entry,) = yaml.safe_load(rendered.playbook)
    text, _mode = rendered.files[entry["ansible.builtin.import_playbook"]]
    assert "!unsafe" in text  # the user's tag survives the rewrite
    plays = yaml.load(text, Loader=_IgnoreTags)
    assert [p["hosts"] for p in plays] == ["all", "all"]
    assert plays[0]["tasks"][0]["ansible.builtin.debug"]["msg"] == "{{ not templated }}"
    assert plays[1]["name"] == "second" and plays[1]["gather_facts"] is False


class _IgnoreTags(yaml.SafeLoader):
    pass


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


@pytest.mark.parametrize("text, words", [
    ("- hosts: all\n  tasks: []\n- name: a task\n  ansible.builtin.ping:\n", "mixes plays and tasks"),
    ("key: value\n", "list of tasks"),
    ("[]\n", "list of tasks"),
    ("- [unbalanced\n", "not valid YAML"),
    ("- ansible.builtin.import_playbook: other.yml\n", "may not import"),
])
def test_bad_ansible_scripts_are_refused_with_a_reason(text, words):
    with pytest.raises(RenderError, match=words):
        render_script("ansible", text, "", _targets(1))


def test_unknown_exec_type_and_empty_targets_are_refused():
    with pytest.raises(RenderError, match="exec_type"):
        render_script("python", "print(1)", "", _targets(1))
    with pytest.raises(RenderError, match="at least one machine"):
        render_script("executable", "echo", "", [])


@pytest.mark.parametrize("host, user", [("-oProxyCommand=touch /tmp/x", "u"), ("h 1", "u"), ("h", "-oX"), ("h", "a b")])
def test_a_host_or_user_ssh_could_read_as_an_option_is_refused(host, user):
    with pytest.raises(RenderError, match="not a plain host name"):
        render_script("executable", "echo", "", [SshTarget("r", "k", host, 22, user, KEY)])


def _clouds():
    return [
        CloudTargets("run-1", "ec2", {"key": "AKIA", "secret": "s3cr3t-value"}, {"region": "eu-west-1"},
                     {"i-1": "k1", "i-2": "k2"}),
        CloudTargets("run-1", "gce", {"key": "svc", "secret": "other-s3cr3t"}, {}, {"vm-9": "k9"}),
    ]


def test_power_runs_one_machine_task_per_cloud_with_results_keyed_by_machine():
    rendered = render_power("stopped", _clouds())
    task = _single_task(rendered)
    assert task["name"] == rendered.result_task
    assert "no_log" not in task  # it would hide the per-machine results
    args = task["cloudcron.scheduler.machine"]
    assert set(args) == {"provider", "credentials", "driver_options", "machine_ids", "state", "call_timeout",
                         "denied_networks", "concurrency", "verify_seconds"}
    # the module's defaults unless given
    assert "omit" in args["call_timeout"] and "omit" in args["denied_networks"] and "omit" in args["concurrency"]
    hosts = _hosts(rendered)
    assert len(hosts) == 2
    by_provider = {h["cloudcron_provider"]: h for h in hosts.values()}
    ec2 = by_provider["ec2"]
    assert ec2["ansible_connection"] == "local"
    assert ec2["cloudcron_machine_ids"] == ["i-1", "i-2"]
    assert ec2["cloudcron_machines"] == {"i-1": "k1", "i-2": "k2"}
    assert ec2["cloudcron_state"] == "stopped"
    assert ec2["cloudcron_driver_options"] == {"region": "eu-west-1"}
    assert sorted(rendered.expected) == [("run-1", "k1"), ("run-1", "k2"), ("run-1", "k9")]


def test_power_passes_the_verification_bound_only_when_it_is_set():
    checked = render_power("stopped", _clouds(), verify_seconds=120)
    assert {h["cloudcron_verify_seconds"] for h in _hosts(checked).values()} == {120.0}
    assert "omit" in _single_task(checked)["cloudcron.scheduler.machine"]["verify_seconds"]
    for bound in (None, 0):
        trusted = render_power("stopped", _clouds(), verify_seconds=bound)
        assert all("cloudcron_verify_seconds" not in h for h in _hosts(trusted).values())


def test_power_passes_the_servers_provider_limits_to_every_cloud_task():
    rendered = render_power("stopped", _clouds(), call_timeout=7, denied_networks=("10.0.0.0/8",))
    for host in _hosts(rendered).values():
        assert host["cloudcron_call_timeout"] == 7.0
        assert host["cloudcron_denied_networks"] == ["10.0.0.0/8"]
    # An empty list is passed as such: it allows every address, unlike the module's default.
    for host in _hosts(render_power("stopped", _clouds(), denied_networks=())).values():
        assert host["cloudcron_denied_networks"] == []


def test_power_credentials_go_only_to_the_extra_variables():
    rendered = render_power("absent", _clouds())
    hosts = _hosts(rendered)
    creds = rendered.extravars["cloudcron_credentials"]
    assert {creds[name]["secret"] for name in hosts} == {"s3cr3t-value", "other-s3cr3t"}
    for where in (rendered.playbook, repr(rendered.inventory), repr(rendered), repr(_clouds())):
        assert "s3cr3t" not in where


@pytest.mark.parametrize("state", ["running", "", "reboot"])
def test_power_refuses_states_the_module_does_not_know(state):
    with pytest.raises(RenderError, match="state"):
        render_power(state, _clouds())


def test_power_refuses_an_empty_cloud():
    with pytest.raises(RenderError, match="no machines"):
        render_power("started", [CloudTargets("r", "ec2", {}, {}, {})])
