"""What runs store, through the real server process, on SQLite and PostgreSQL.

Output that is not UTF-8 (or holds NUL) is kept with the bad bytes replaced, and the machine's result stands;
nothing a run stores (its error, its events, each machine's output) holds a secret the run used, in any of
the forms programs print them.
"""
from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from tests.harness.service import start_service, wait_until
from web import make_state
from web.config import load_config
from web.crypto import new_id
from web.models import Cloud, Org

pytestmark = pytest.mark.timeout(600)
MASK = "********"


@pytest.fixture
def served(database_url, tmp_path):
    svc = start_service(tmp_path / "data", env={"CLOUDCRON_DATABASE_URL": database_url})
    try:
        yield svc
    finally:
        svc.stop()


def finished_run(svc, schedule_id, timeout=180):
    def done():
        status, runs = svc.api("GET", f"schedules/{schedule_id}/runs")
        assert status == 200, runs
        return next((r for r in runs if r["status"] not in ("queued", "running")), None)

    run = wait_until(done, timeout, what=f"a finished run of {schedule_id}\n{svc.log()}")
    status, full = svc.api("GET", f"runs/{run['id']}")
    assert status == 200, full
    status, events = svc.api("GET", f"logs?run_id={run['id']}")
    assert status == 200, events
    return full, events


def ssh_machines(svc, hosts):
    status, key = svc.api("POST", "keys", {"name": "lab-key", "private": hosts[0].private_key})
    assert status == 200, key
    status, lab = svc.api("POST", "clouds", {"title": "lab", "provider": "other"})
    assert status == 200, lab
    machines = []
    for i, host in enumerate(hosts):
        status, m = svc.api("POST", f"clouds/{lab['id']}/machines", {
            "name": f"ssh{i}", "host": host.host, "port": host.port, "ssh_user": host.user, "key_id": key["id"]})
        assert status == 200, m
        machines.append(m)
    return machines


def run_script(svc, machines, script, params=""):
    status, scr = svc.api("POST", "scripts", {"name": new_id(), "script": script, "exec_type": "executable"})
    assert status == 200, scr
    status, sch = svc.api("POST", "schedules", {
        "name": new_id(), "script_id": scr["id"], "params": params,
        "selectors": [{"type": "machines", "ids": [m["id"] for m in machines]}],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True})
    assert status == 200, sch
    return finished_run(svc, sch["id"])


# Latin-1 "café" and "été", a NUL, and bytes that are never UTF-8; exits 3 on the machine whose port is $1.
LATIN1_SCRIPT = r"""#!/bin/sh
port=${SSH_CONNECTION##* }
printf 'caf\351 %s\n' "$port"
printf 'nul[\000] bad[\377\376]\n'
printf 'err \351t\351\n' >&2
[ "$port" = "$1" ] && exit 3
exit 0
"""


def test_output_that_is_not_utf8_is_kept_and_each_machines_result_stands(served, sshd_hosts):
    machines = ssh_machines(served, sshd_hosts[:2])
    failing = sshd_hosts[1].port
    run, events = run_script(served, machines, LATIN1_SCRIPT, params=str(failing))

    assert run["status"] == "partial", run
    assert run["error"] == "1 of 2 machine(s) did not succeed"
    by_key = {m["machine_key"]: m for m in run["machines"]}
    for machine, host in zip(machines, sshd_hosts):
        result = by_key[machine["id"]]
        assert result["stdout"] == f"caf\ufffd {host.port}\nnul[\ufffd] bad[\ufffd\ufffd]\n", result
        assert result["stderr"] == "err \ufffdt\ufffd\n", result
        if host.port == failing:
            assert (result["status"], result["rc"], result["error"]) == ("failed", 3, "the script exited with status 3")
        else:
            assert (result["status"], result["rc"], result["error"]) == ("succeeded", 0, None)
    finished = [e for e in events if e["type"] == "script_finished"]
    assert sorted(e["rc"] for e in finished) == [0, 3]


def key_forms(private_key: str) -> list[str]:
    """The private key and the forms a program could print it in."""
    lines = [line for line in private_key.splitlines() if line and not line.startswith("-----")]
    return [private_key.strip(), quote(private_key, safe=""), base64.b64encode(private_key.encode()).decode(), *lines]


def stored_text(run, events) -> str:
    return json.dumps([run, events], ensure_ascii=False)


def test_a_script_printing_the_runs_ssh_key_stores_it_masked(served, sshd_hosts):
    machines = ssh_machines(served, sshd_hosts[:1])
    private_key = sshd_hosts[0].private_key
    forms = key_forms(private_key)
    # The script prints the key's lines, the key percent-encoded and in base64, on stdout and stderr.
    script = "#!/bin/sh\n" + "".join(f"echo 'line {i}: {form}'\necho '{form}' >&2\n" for i, form in enumerate(forms[1:]))
    run, events = run_script(served, machines, script)

    assert run["status"] == "succeeded", run
    [result] = run["machines"]
    assert result["stdout"].count(MASK) == len(forms) - 1, result["stdout"]
    assert "line 0: " + MASK in result["stdout"]
    text = stored_text(run, events)
    for form in forms:
        assert form not in text


def test_a_stored_cloud_secret_that_ansible_quotes_in_an_error_never_reaches_the_run_or_logs(served):
    # Clouds stored before lone surrogates were refused still exist: their secret makes Ansible fail on
    # the extra-variables file and print the line that holds it.
    secret = "S3cr" + secrets.token_hex(8) + "\udce9" + secrets.token_hex(4)
    key = "AKIA" + secrets.token_hex(8).upper()
    state = make_state(load_config(served.env))
    now = datetime.now(timezone.utc)
    with state.db.transaction() as session:
        org_id = session.query(Org.id).filter(Org.name == "test").scalar()
        cloud_id = new_id()
        session.add(Cloud(id=cloud_id, org_id=org_id, title="legacy", provider="ec2",
                          options={"region": "us-east-1", "host": "127.0.0.1", "port": 9, "secure": False},
                          credentials_enc=state.box.seal({"key": key, "secret": secret}), created_at=now, updated_at=now))
    state.db.dispose()
    status, sch = served.api("POST", "schedules", {
        "name": "legacy-stop", "action": "stop", "machines_per_cloud": [[cloud_id, "i-0123456789abcdef0"]],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}, "run_immediately": True})
    assert status == 200, sch
    run, events = finished_run(served, sch["id"])

    assert run["status"] == "failed", run
    text = stored_text(run, events)
    assert "extravars" in text and MASK in text  # Ansible did quote the file, and the values were masked
    head, tail = secret.split("\udce9")
    for value in (key, head, tail):
        assert value not in text
    # The service log does not hold them either.
    log = served.log_path.read_text(errors="replace")
    assert key not in log and head not in log
