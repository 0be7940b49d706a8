"""The collection's modules and inventory plugin run by real ansible-playbook / ansible against the real service.

The service is the real `python -m web serve` process (tests.harness.service); each test module
works in its own org, so what it finds on the server is what its playbooks declared.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.service import CountingProxy

BIN = Path(sys.executable).parent
PLAYBOOK_TIMEOUT = 300

DECLARE = """
- name: Declare what should exist on cloudcron
  hosts: localhost
  gather_facts: false
  tasks:
    - name: SSH hosts
      cloudcron.scheduler.cloud:
        title: lab
        provider: other
        machines:
          - {name: web1, host: 192.0.2.10, tags: {env: dev}}
          - {name: web2, host: 192.0.2.11, port: 2222, ssh_user: deploy, tags: {env: prod}}
    - name: An EC2 region (creating it does not contact AWS)
      cloudcron.scheduler.cloud:
        title: aws-test
        provider: ec2
        credentials: {key: AKIATESTONLY, secret: "{{ ec2_secret }}"}
        options: {region: eu-west-1}
    - name: A script
      cloudcron.scheduler.script:
        name: uptime
        script: "#!/bin/sh\\nuptime\\n"
    - name: Stop the lab at night, dates in Athens time
      cloudcron.scheduler.schedule:
        name: lab-nightly-stop
        action: shutdown
        machines: [{cloud: lab, machine: web1}, {cloud: lab, machine: web2}]
        schedule_type: crontab
        schedule_entry: {minute: 30, hour: 2, day_of_week: MON-FRI}
        timezone: Europe/Athens
        expires: "2030-1-1 10:00"
        description: nightly
    - name: Report uptime of dev machines
      cloudcron.scheduler.schedule:
        name: dev-uptime
        script: uptime
        params: "-p"
        selectors: [{type: tags, include: {env: dev}}]
        schedule_type: interval
        schedule_entry: {every: "2", period: Hours}
        max_run_count: 5
        misfire_grace: 60
        run_timeout: 600
        concurrency: allow
    - name: Reboot an EC2 machine once
      cloudcron.scheduler.schedule:
        name: reboot-once
        action: reboot
        machines: [{cloud: aws-test, machine: i-0123456789abcdef0}]
        schedule_type: one_off
        schedule_entry: "2031-06-01 12:00"
        timezone: America/New_York
        enabled: false
"""
# One schedule of its own per test, on the lab cloud DECLARE creates.
SINGLE = """
- hosts: localhost
  gather_facts: false
  vars: {hour: "2", state: present}
  tasks:
    - cloudcron.scheduler.schedule:
        name: "{{ schedule_name }}"
        state: "{{ state }}"
        action: stop
        machines: [{cloud: lab, machine: web1}]
        schedule_type: crontab
        schedule_entry: {minute: 30, hour: "{{ hour }}"}
        timezone: Europe/Athens
"""
SCHEDULE_TASKS = 3
MODULE_TASKS = 6


class Ansible:
    """Runs ansible-playbook / ansible / ansible-inventory with this checkout as cloudcron.scheduler."""

    def __init__(self, workdir: Path, collections_path: Path, url: str, token: str):
        self.workdir = workdir
        self.collections_path = collections_path
        self.url = url
        self.token = token

    def env(self, **overrides):
        tmp = self.workdir / "ansible-tmp"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "CLOUDCRON_"))}
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(self.collections_path),
            ANSIBLE_LOCAL_TEMP=str(tmp / "local"),
            ANSIBLE_REMOTE_TMP=str(tmp / "remote"),
            ANSIBLE_HOME=str(tmp / "home"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_HOST_KEY_CHECKING="False",
            CLOUDCRON_URL=self.url,
            CLOUDCRON_TOKEN=self.token,
        )
        env.update(overrides)
        return env

    def run(self, tool, *args, **env):
        proc = subprocess.run([str(BIN / tool), *args], cwd=str(self.workdir), env=self.env(**env),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT)
        return proc.returncode, proc.stdout + proc.stderr

    def playbook(self, text: str, *args, **env):
        """Run a playbook on localhost; return (exit code, output)."""
        path = self.workdir / "playbook.yml"
        path.write_text(text)
        return self.run("ansible-playbook", "-i", "localhost,", "-c", "local",
                        "-e", "ansible_python_interpreter=%s" % sys.executable,
                        "-e", "ec2_secret=%s" % EC2_SECRET, str(path), *args, **env)


EC2_SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def recap(output: str) -> dict:
    """The PLAY RECAP counters of localhost."""
    match = re.search(r"localhost\s+:\s+(.*)", output)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def plain(value):
    """ansible-inventory's JSON without its {"__ansible_unsafe": ...} wrappers (2.19 marks plugin data untrusted)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@pytest.fixture(scope="module")
def org(service):
    """A token of an org of its own for this module."""
    return service.create_token("collection-playbooks")


@pytest.fixture(scope="module")
def ansible(tmp_path_factory, collections_path, service, org):
    return Ansible(tmp_path_factory.mktemp("playbooks"), collections_path, service.url, org)


def by_name(service, org, collection, field, value):
    status, found = service.api("GET", "%s?%s=%s" % (collection, field, value), token=org)
    assert status == 200, found
    return found[0] if found else None


@pytest.fixture(scope="module")
def first_apply(ansible):
    """The first run of the declaring playbook: (exit code, output)."""
    return ansible.playbook(DECLARE, "--diff")


def test_first_run_creates_clouds_script_and_schedules_as_declared(first_apply, service, org):
    rc, output = first_apply
    assert rc == 0, output[-4000:]
    assert recap(output)["changed"] == MODULE_TASKS
    nightly = by_name(service, org, "schedules", "name", "lab-nightly-stop")
    lab = by_name(service, org, "clouds", "title", "lab")
    assert nightly["action"] == "stop"
    assert nightly["machines_per_cloud"] == [[lab["id"], "web1"], [lab["id"], "web2"]]
    assert nightly["schedule_entry"] == {"minute": "30", "hour": "2", "day_of_week": "mon-fri",
                                         "day_of_month": "*", "month_of_year": "*"}
    assert nightly["expires"] == "2030-01-01T08:00:00Z"  # 10:00 in Athens, winter time
    report = by_name(service, org, "schedules", "name", "dev-uptime")
    script = by_name(service, org, "scripts", "name", "uptime")
    assert (report["script_id"], report["params"], report["timeout"]) == (script["id"], "-p", 600)
    assert report["schedule_entry"] == {"every": 2, "period": "hours"}
    once = by_name(service, org, "schedules", "name", "reboot-once")
    assert once["schedule_entry"] == "2031-06-01T16:00:00Z" and once["enabled"] is False
    status, machines = service.api("GET", "clouds/%s/machines" % lab["id"], token=org)
    assert sorted((m["name"], m["port"], m["ssh_user"]) for m in machines) == [("web1", 22, "root"), ("web2", 2222, "deploy")]
    # The cloud's secret went in, and is neither shown by the task nor returned by the API.
    assert EC2_SECRET not in output
    assert "credentials" not in by_name(service, org, "clouds", "title", "aws-test")


def test_second_run_changes_nothing_and_sends_no_write(first_apply, ansible, service, org):
    assert first_apply[0] == 0, first_apply[1][-4000:]
    before = {s["name"]: s["updated_at"] for s in service.api("GET", "schedules", token=org)[1]}
    proxy = CountingProxy(service.url)
    try:
        rc, output = ansible.playbook(DECLARE, CLOUDCRON_URL=proxy.url)
        requests = list(proxy.requests)
    finally:
        proxy.close()
    assert rc == 0, output[-4000:]
    assert recap(output)["changed"] == 0
    # Each task is one apply request (the service resolves the cloud titles and script names and finds
    # nothing to write); the cloud with declared machines also lists them. Nothing else is sent.
    applies = [r for r in requests if r[0] == "PUT" and "/by-" in r[1]]
    assert len(applies) == MODULE_TASKS  # 2 clouds, 1 script, 3 schedules
    assert len([r for r in applies if r[1].startswith("/api/v1/schedules/by-name/")]) == SCHEDULE_TASKS
    listings = [r for r in requests if r[0] == "GET" and "/machines" in r[1]]
    assert len(listings) == 1
    assert sorted(requests) == sorted(applies + listings)
    after = {s["name"]: s["updated_at"] for s in service.api("GET", "schedules", token=org)[1]}
    assert after == before


def test_check_mode_predicts_the_change_and_the_server_keeps_its_value(first_apply, ansible, service, org):
    assert first_apply[0] == 0
    assert ansible.playbook(SINGLE, "-e", "schedule_name=check-me")[0] == 0
    before = by_name(service, org, "schedules", "name", "check-me")
    rc, output = ansible.playbook(SINGLE, "--check", "--diff", "-e", "schedule_name=check-me", "-e", "hour=3")
    assert rc == 0, output[-4000:]
    assert recap(output)["changed"] == 1
    assert re.search(r'^\+\s+"hour": "3"', output, re.M), output[-4000:]
    assert by_name(service, org, "schedules", "name", "check-me") == before


def test_diff_names_the_changed_field_and_the_change_is_applied(first_apply, ansible, service, org):
    assert first_apply[0] == 0
    assert ansible.playbook(SINGLE, "-e", "schedule_name=diff-me")[0] == 0
    rc, output = ansible.playbook(SINGLE, "--diff", "-e", "schedule_name=diff-me", "-e", "hour=4")
    assert rc == 0, output[-4000:]
    assert recap(output)["changed"] == 1
    assert re.search(r'^-\s+"hour": "2"', output, re.M) and re.search(r'^\+\s+"hour": "4"', output, re.M), output[-4000:]
    assert "schedule_entry" in output
    assert by_name(service, org, "schedules", "name", "diff-me")["schedule_entry"]["hour"] == "4"


def test_absent_removes_the_schedule_and_stays_removed(first_apply, ansible, service, org):
    assert first_apply[0] == 0
    assert ansible.playbook(SINGLE, "-e", "schedule_name=remove-me")[0] == 0
    assert by_name(service, org, "schedules", "name", "remove-me") is not None
    rc, output = ansible.playbook(SINGLE, "-e", "schedule_name=remove-me", "-e", "state=absent")
    assert rc == 0, output[-4000:]
    assert recap(output)["changed"] == 1
    assert by_name(service, org, "schedules", "name", "remove-me") is None
    rc, output = ansible.playbook(SINGLE, "-e", "schedule_name=remove-me", "-e", "state=absent")
    assert rc == 0 and recap(output)["changed"] == 0, output[-4000:]


CALENDARS = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Holidays, a freeze given with unquoted YAML dates, and weekends
      cloudcron.scheduler.calendar:
        name: office-closed
        timezone: Europe/Athens
        entries:
          - holidays: {country: GR}
          - {from: 2026-12-24, to: 2027-01-02}
          - weekly: {from: fri 18:00, to: mon 06:00}
    - name: Stop the lab at 19:00 on working days, spread over five minutes
      cloudcron.scheduler.schedule:
        name: lab-evening-stop
        action: stop
        machines: [{cloud: lab, machine: web1}]
        schedule_type: crontab
        schedule_entry: {minute: 0, hour: 19}
        timezone: Europe/Athens
        exclude_calendars: [office-closed]
        jitter: 300
"""


def test_a_calendar_and_a_schedule_excluding_it_are_declared_once(first_apply, ansible, service, org):
    assert first_apply[0] == 0
    rc, output = ansible.playbook(CALENDARS)
    assert rc == 0, output[-4000:]
    assert recap(output)["changed"] == 2
    calendar = by_name(service, org, "calendars", "name", "office-closed")
    assert calendar["entries"][1] == {"from": "2026-12-24", "to": "2027-01-02"}
    schedule = by_name(service, org, "schedules", "name", "lab-evening-stop")
    assert (schedule["exclude_calendars"], schedule["jitter"]) == ([calendar["id"]], 300)
    rc, output = ansible.playbook(CALENDARS)
    assert rc == 0 and recap(output)["changed"] == 0, output[-4000:]


CHANNELS = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: A signed webhook
      cloudcron.scheduler.channel:
        name: ops-hook
        kind: webhook
        channel_url: https://hooks.example.com/cron/T0KEN-in-path
        secret: s3cret-s3cret-s3cret
        default: "{{ default | default(false) }}"
    - name: A schedule that notifies it when a run fails
      cloudcron.scheduler.schedule:
        name: lab-notified-stop
        action: stop
        machines: [{cloud: lab, machine: web1}]
        schedule_type: crontab
        schedule_entry: {minute: 0, hour: 20}
        notify:
          "on": [failed, partial]
          channels: [ops-hook]
"""


def test_a_channel_and_a_schedule_notifying_it_are_declared_once_and_check_mode_writes_nothing(
        first_apply, ansible, service, org):
    assert first_apply[0] == 0
    rc, output = ansible.playbook(CHANNELS, "--diff", "-v")
    assert rc == 0, output[-4000:]
    assert recap(output)["changed"] == 2
    assert "T0KEN" not in output and "s3cret" not in output
    channel = by_name(service, org, "channels", "name", "ops-hook")
    assert (channel["kind"], channel["url"], channel["default"]) == ("webhook", "https://hooks.example.com/…", False)
    schedule = by_name(service, org, "schedules", "name", "lab-notified-stop")
    assert schedule["notify"] == {"on": ["failed", "partial"], "channels": [channel["id"]], "after_retries": True}
    rc, output = ansible.playbook(CHANNELS)
    assert rc == 0 and recap(output)["changed"] == 0, output[-4000:]
    rc, output = ansible.playbook(CHANNELS, "--check", "--diff", "-e", "default=true")
    assert rc == 0 and recap(output)["changed"] == 1, output[-4000:]
    assert '"default": true' in output, output[-4000:]
    assert by_name(service, org, "channels", "name", "ops-hook") == channel


def test_a_wrong_token_fails_the_task_with_the_services_message(ansible):
    wrong = "not-a-valid-token-0123456789abcdef"
    rc, output = ansible.playbook(DECLARE, CLOUDCRON_TOKEN=wrong)
    assert rc != 0
    assert "rejected the token (401): Authorization: unknown or revoked token" in output
    assert "Traceback" not in output
    assert wrong not in output


def test_an_unreachable_service_fails_the_task_clearly(ansible):
    from tests.harness.service import free_port

    url = "http://127.0.0.1:%d" % free_port()
    rc, output = ansible.playbook(DECLARE, CLOUDCRON_URL=url)
    assert rc != 0
    assert "cannot reach the cloudcron service at %s/api/v1" % url in output
    assert "Traceback" not in output


def test_a_refused_value_fails_with_the_field_named(first_apply, ansible):
    assert first_apply[0] == 0
    play = """
- hosts: localhost
  gather_facts: false
  tasks:
    - cloudcron.scheduler.schedule:
        name: bad-zone
        action: stop
        machines: [{cloud: lab, machine: web1}]
        schedule_type: interval
        schedule_entry: {every: 1, period: hours}
        timezone: Mars/Olympus
"""
    rc, output = ansible.playbook(play)
    assert rc != 0
    assert "PUT schedules/by-name/bad-zone failed (400): timezone:" in output, output[-3000:]
    assert "Traceback" not in output


def test_inventory_lists_the_machines_of_an_other_cloud_and_ping_reaches_one(ansible, sshd_hosts, tmp_path, service, org):
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(sshd_hosts[0].private_key)
    key_file.chmod(0o600)
    machines = "\n".join(
        "          - {name: ssh%d, host: %s, port: %d, ssh_user: %s, key: sshd-key, tags: {role: web}}"
        % (i, h.host, h.port, h.user) for i, h in enumerate(sshd_hosts))
    play = """
- hosts: localhost
  gather_facts: false
  tasks:
    - cloudcron.scheduler.key:
        name: sshd-key
        private: "{{ lookup('ansible.builtin.file', '%s') }}"
    - cloudcron.scheduler.cloud:
        title: ssh-lab
        provider: other
        machines:
%s
""" % (key_file, machines)
    rc, output = ansible.playbook(play)
    assert rc == 0, output[-4000:]
    assert sshd_hosts[0].private_key.strip().splitlines()[1] not in output

    inventory = ansible.workdir / "lab.cloudcron.yml"
    inventory.write_text(json.dumps({
        "plugin": "cloudcron.scheduler.machines",
        "clouds": ["ssh-lab"],
        "compose": {"ansible_python_interpreter": repr(sys.executable)},
        "keyed_groups": [{"key": "cloudcron_tags.role", "prefix": "role"}],
        "cache": True, "cache_plugin": "ansible.builtin.jsonfile",
        "cache_connection": str(tmp_path / "inventory-cache"), "cache_timeout": 3600,
    }))
    rc, output = ansible.run("ansible-inventory", "-i", str(inventory), "--list")
    assert rc == 0, output[-3000:]
    listed = plain(json.loads(output[output.index("{"):]))
    hostvars = listed["_meta"]["hostvars"]
    assert sorted(hostvars) == ["ssh0", "ssh1", "ssh2"]
    assert {(v["ansible_host"], v["ansible_port"], v["ansible_user"]) for v in hostvars.values()} == \
        {(h.host, h.port, h.user) for h in sshd_hosts}
    assert sorted(listed["cloud_ssh_lab"]["hosts"]) == ["ssh0", "ssh1", "ssh2"]
    assert sorted(listed["tag_role_web"]["hosts"]) == ["ssh0", "ssh1", "ssh2"]
    assert sorted(listed["role_web"]["hosts"]) == ["ssh0", "ssh1", "ssh2"]

    # The cache answers a second listing without asking the service.
    from tests.harness.service import free_port

    rc, cached = ansible.run("ansible-inventory", "-i", str(inventory), "--list",
                             CLOUDCRON_URL="http://127.0.0.1:%d" % free_port())
    assert rc == 0, cached[-3000:]
    assert plain(json.loads(cached[cached.index("{"):]))["_meta"]["hostvars"] == hostvars

    rc, output = ansible.run("ansible", "-i", str(inventory), "ssh1", "-m", "ansible.builtin.ping",
                             "--private-key", str(key_file))
    assert rc == 0, output[-3000:]
    assert re.search(r"ssh1 \| SUCCESS", output) and '"ping": "pong"' in output, output[-3000:]
