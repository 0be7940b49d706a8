"""Clouds, machines of 'other' clouds, SSH keys and scripts: the resources a schedule points at."""
from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import text

HEX32 = re.compile(r"[0-9a-f]{32}")
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def raw_row(api, table, id_):
    """The row as the database holds it, every column as text."""
    with api.state.db.session() as session:
        row = session.execute(text(f"SELECT * FROM {table} WHERE id = :id"), {"id": id_}).mappings().one()
    return " ".join(str(v) for v in row.values())


def every_answer(api):
    """Everything the API answers to GETs of clouds, machines and keys, as one string."""
    seen = []
    for collection in ("clouds", "keys", "scripts", "schedules"):
        items = api.get(collection)[1]
        seen.append(items)
        for item in items:
            seen.append(api.get(f"{collection}/{item['id']}")[1])
            if collection == "clouds" and item["provider"] == "other":
                seen.append(api.get(f"clouds/{item['id']}/machines")[1])
    return str(seen)


# ------------------------------------------------------------------ every collection

def make(api, collection, cloud):
    bodies = {
        "clouds": {"title": "aws", "provider": "ec2", "credentials": {"key": "AKID", "secret": "s"}},
        "keys": {"name": "deploy", "generate": True},
        "scripts": {"name": "uptime", "script": "#!/bin/sh\nuptime\n"},
        f"clouds/{cloud['id']}/machines": {"name": "db1", "host": "10.0.0.5"},
    }
    return api.post(collection, bodies[collection])


EDIT = {"clouds": {"title": "renamed"}, "keys": {"name": "renamed"}, "scripts": {"name": "renamed"},
        "machines": {"name": "renamed"}}


@pytest.mark.parametrize("collection", ["clouds", "keys", "scripts", "machines"])
def test_every_collection_lists_arrays_creates_objects_and_edits_and_deletes_by_id(api, cloud, collection):
    path = f"clouds/{cloud['id']}/machines" if collection == "machines" else collection
    status, created = make(api, path, cloud)
    assert status == 200 and isinstance(created, dict) and HEX32.fullmatch(created["id"])
    status, listed, resp = api.call("GET", path)
    assert status == 200 and isinstance(listed, list) and created["id"] in [i["id"] for i in listed]
    assert int(resp.headers["X-Total-Count"]) == len(listed)
    assert api.get(f"{path}/{created['id']}") == (200, created)
    status, edited = api.patch(f"{path}/{created['id']}", EDIT[collection])
    assert status == 200 and edited["id"] == created["id"]
    assert api.get(f"{path}/{created['id']}")[1] == edited
    assert edited.get("name", edited.get("title")) == "renamed"
    assert api.delete(f"{path}/{created['id']}") == (200, {"deleted": created["id"]})
    assert api.get(f"{path}/{created['id']}")[0] == 404
    assert api.delete(f"{path}/{created['id']}")[0] == 404


# ------------------------------------------------------------------ clouds

def test_it_rejects_an_unknown_provider_listing_valid_ones(api):
    status, body = api.post("clouds", {"title": "x", "provider": "ec3"})
    assert status == 400
    assert body["error"].startswith("provider:") and "ec3" in body["error"]
    for example in ("ec2", "gce", "openstack", "other"):
        assert example in body["error"]


def test_it_accepts_libcloud_providers_and_other(api):
    for provider in ("ec2", "gce", "openstack", "azure_arm", "digitalocean", "other"):
        status, body = api.post("clouds", {"title": provider, "provider": provider, "options": {"region": "r1"}})
        assert status == 200, body
        assert body["provider"] == provider and body["options"] == {"region": "r1"}


def test_a_cloud_needs_a_title_and_a_provider(api):
    for missing in ("title", "provider"):
        body = {"title": "x", "provider": "other"}
        del body[missing]
        status, answer = api.post("clouds", body)
        assert status == 400 and answer["error"].startswith(f"{missing}:")


def test_cloud_titles_are_unique_in_an_org(api, cloud):
    status, body = api.post("clouds", {"title": cloud["title"], "provider": "other"})
    assert status == 409 and "title" in body["error"]


def test_cloud_credentials_are_encrypted_at_rest_and_never_answered(api):
    status, cloud = api.post("clouds", {"title": "aws", "provider": "ec2",
                                        "credentials": {"key": "AKIDEXAMPLE", "secret": SECRET}})
    assert status == 200 and "credentials" not in cloud and SECRET not in str(cloud)
    status, edited = api.patch(f"clouds/{cloud['id']}", {"credentials": {"key": "AKIDEXAMPLE", "secret": SECRET + "2"}})
    assert status == 200 and SECRET not in str(edited)
    stored = raw_row(api, "clouds", cloud["id"])
    assert SECRET not in stored and "AKIDEXAMPLE" not in stored
    assert SECRET not in every_answer(api)


def test_a_clouds_provider_cannot_be_changed(api, cloud):
    status, body = api.patch(f"clouds/{cloud['id']}", {"provider": "ec2"})
    assert status == 400 and body["error"].startswith("provider:")


def test_a_cloud_that_a_schedule_targets_cannot_be_deleted(api, cloud, schedule):
    status, body = api.delete(f"clouds/{cloud['id']}")
    assert status == 409 and schedule["name"] in body["error"]


# ------------------------------------------------------------------ machines of 'other' clouds

def test_it_declares_a_machine_of_an_other_cloud(api, cloud):
    status, m = api.post(f"clouds/{cloud['id']}/machines", {"name": "web1", "host": "192.0.2.7", "port": 2200,
                                                            "ssh_user": "ubuntu"})
    assert status == 200, m
    assert HEX32.fullmatch(m["id"]) and m["machine_id"] == "web1" and m["cloud_id"] == cloud["id"]
    assert (m["host"], m["port"], m["ssh_user"]) == ("192.0.2.7", 2200, "ubuntu")


def test_machine_ids_are_unique_across_clouds(api, cloud):
    status, second = api.post("clouds", {"title": "lab2", "provider": "other"})
    a = api.post(f"clouds/{cloud['id']}/machines", {"name": "web1", "host": "h"})[1]
    b = api.post(f"clouds/{second['id']}/machines", {"name": "web1", "host": "h"})[1]
    assert a["machine_id"] == b["machine_id"] and a["id"] != b["id"]


def test_a_machine_cannot_be_declared_on_a_libcloud_cloud(api):
    status, aws = api.post("clouds", {"title": "aws", "provider": "ec2"})
    status, body = api.post(f"clouds/{aws['id']}/machines", {"name": "m", "host": "h"})
    assert status == 400 and "other" in body["error"]


def test_it_sets_ssh_overrides_on_a_machine(api, cloud, machine):
    status, key = api.post("keys", {"name": "k", "generate": True})
    status, m = api.patch(f"clouds/{cloud['id']}/machines/{machine['id']}",
                          {"host": "198.51.100.1", "port": 2022, "ssh_user": "admin", "key_id": key["id"]})
    assert status == 200, m
    assert (m["host"], m["port"], m["ssh_user"], m["key_id"]) == ("198.51.100.1", 2022, "admin", key["id"])
    assert api.get(f"clouds/{cloud['id']}/machines/{machine['id']}")[1] == m


def test_a_key_of_another_org_is_a_400_on_a_machine(api, other_api, cloud, machine):
    status, theirs = other_api.post("keys", {"name": "theirs", "generate": True})
    assert status == 200
    status, body = api.post(f"clouds/{cloud['id']}/machines", {"name": "m2", "host": "h", "key_id": theirs["id"]})
    assert status == 400 and body["error"].startswith("key_id:") and theirs["id"] in body["error"]
    status, body = api.patch(f"clouds/{cloud['id']}/machines/{machine['id']}", {"key_id": theirs["id"]})
    assert status == 400 and body["error"].startswith("key_id:")
    assert api.get(f"clouds/{cloud['id']}/machines/{machine['id']}")[1]["key_id"] is None


def test_a_machine_is_only_found_under_its_own_cloud(api, cloud, machine):
    status, second = api.post("clouds", {"title": "lab2", "provider": "other"})
    assert api.get(f"clouds/{second['id']}/machines/{machine['id']}")[0] == 404


def test_read_only_machine_fields_are_rejected_by_name(api, cloud, machine):
    for field in ("cloud_id", "machine_id", "state", "public_ips", "private_ips", "id", "created_at", "updated_at"):
        status, body = api.patch(f"clouds/{cloud['id']}/machines/{machine['id']}", {field: "x"})
        assert status == 400 and body["error"].startswith(f"{field}:"), field


# ------------------------------------------------------------------ keys

def openssh_private(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def public_of(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_it_generates_a_key_and_answers_only_its_public_half(api):
    status, key = api.post("keys", {"name": "gen", "generate": True})
    assert status == 200, key
    assert key["public"].startswith("ssh-ed25519 ")
    assert "private" not in key and "PRIVATE" not in str(key)


def test_it_stores_a_given_private_key_and_answers_its_public_half(api):
    private = ed25519.Ed25519PrivateKey.generate()
    status, key = api.post("keys", {"name": "given", "private": openssh_private(private)})
    assert status == 200, key
    assert key["public"] == public_of(private)


@pytest.mark.parametrize("fmt", ["TraditionalOpenSSL", "PKCS8"])
def test_it_accepts_a_pem_private_key(api, fmt):
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(serialization.Encoding.PEM, getattr(serialization.PrivateFormat, fmt),
                                serialization.NoEncryption()).decode()
    status, key = api.post("keys", {"name": "pem", "private": pem})
    assert status == 200, key
    assert key["public"] == public_of(private)


@pytest.mark.parametrize("private", ["hello", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"])
def test_it_rejects_an_invalid_private_key(api, private):
    status, body = api.post("keys", {"name": "bad", "private": private})
    assert status == 400 and body["error"].startswith("private:")


def test_a_key_needs_exactly_one_of_private_or_generate(api):
    for body in ({"name": "k"}, {"name": "k", "generate": False}, {"name": "k", "generate": True, "private": "x"}):
        status, answer = api.post("keys", body)
        assert status == 400 and "private" in answer["error"], body


def test_private_keys_are_encrypted_at_rest_and_never_answered(api, cloud):
    private = ed25519.Ed25519PrivateKey.generate()
    text_key = openssh_private(private)
    body_line = text_key.splitlines()[1]
    status, key = api.post("keys", {"name": "given", "private": text_key})
    api.post(f"clouds/{cloud['id']}/machines", {"name": "m", "host": "h", "key_id": key["id"]})
    status, edited = api.patch(f"keys/{key['id']}", {"name": "renamed"})
    assert status == 200 and "PRIVATE" not in str(edited)
    assert body_line not in raw_row(api, "keys", key["id"])
    answers = every_answer(api)
    assert body_line not in answers and "PRIVATE KEY" not in answers


# ------------------------------------------------------------------ scripts

def test_it_stores_a_script_of_each_exec_type(api):
    for exec_type, script in [("executable", "#!/bin/sh\necho hi\n"), ("ansible", "- ansible.builtin.ping:\n")]:
        status, body = api.post("scripts", {"name": exec_type, "description": "d", "script": script, "exec_type": exec_type})
        assert status == 200, body
        assert (body["name"], body["description"], body["script"], body["exec_type"]) == (exec_type, "d", script, exec_type)


def test_without_the_sandbox_an_ansible_script_is_refused_naming_the_opt_out(api):
    api.state.config.sandbox = "off"  # as CLOUDCRON_SANDBOX=off, or a host without bubblewrap
    status, answer = api.post("scripts", {"name": "a", "script": "- ansible.builtin.ping:\n", "exec_type": "ansible"})
    assert status == 400 and answer["error"].startswith("exec_type: Ansible scripts run only in the bubblewrap sandbox")
    assert "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE=1" in answer["error"]
    assert api.get("scripts")[1] == []
    status, script = api.post("scripts", {"name": "e", "script": "#!/bin/sh\ntrue\n"})
    assert status == 200
    status, answer = api.patch(f"scripts/{script['id']}", {"exec_type": "ansible", "script": "- ansible.builtin.ping:\n"})
    assert status == 400 and answer["error"].startswith("exec_type:")
    assert api.get(f"scripts/{script['id']}")[1]["exec_type"] == "executable"


def test_the_unsafe_opt_out_lets_ansible_scripts_in_without_the_sandbox(api):
    api.state.config.sandbox = "off"
    api.state.config.unsafe_unsandboxed_ansible = True
    status, body = api.post("scripts", {"name": "a", "script": "- ansible.builtin.ping:\n", "exec_type": "ansible"})
    assert status == 200 and body["exec_type"] == "ansible"


def test_a_script_is_executable_by_default(api):
    assert api.post("scripts", {"name": "s", "script": "true"})[1]["exec_type"] == "executable"


def test_it_rejects_a_bad_script(api):
    for body, field in [({"script": "x"}, "name"), ({"name": "s"}, "script"),
                        ({"name": "s", "script": "x", "exec_type": "python"}, "exec_type")]:
        status, answer = api.post("scripts", body)
        assert status == 400 and answer["error"].startswith(f"{field}:"), body


def test_script_names_are_unique_in_an_org(api):
    api.post("scripts", {"name": "s", "script": "x"})
    assert api.post("scripts", {"name": "s", "script": "y"})[0] == 409


def test_a_script_a_schedule_uses_cannot_be_deleted(api, schedule_body):
    status, script = api.post("scripts", {"name": "s", "script": "x"})
    status, sched = api.post("schedules", schedule_body(action=..., script_id=script["id"]))
    assert status == 200, sched
    status, body = api.delete(f"scripts/{script['id']}")
    assert status == 409 and sched["name"] in body["error"]
