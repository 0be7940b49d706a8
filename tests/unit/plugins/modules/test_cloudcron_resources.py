"""Decision logic of the cloud, script and key modules: what each sends, and that secrets are never compared or shown."""
from __future__ import annotations

import copy
import itertools

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronError
from ansible_collections.cloudcron.scheduler.plugins.modules import cloud as cloud_mod
from ansible_collections.cloudcron.scheduler.plugins.modules import key as key_mod
from ansible_collections.cloudcron.scheduler.plugins.modules import script as script_mod

SECRET = "AKIA-secret-never-shown"
PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n"


class PathClient:
    """An in-memory API keyed by collection path ("clouds", "clouds/<id>/machines", "keys", "scripts")."""

    def __init__(self, **collections):
        self.items = {k.replace("__", "/"): [copy.deepcopy(i) for i in v] for k, v in collections.items()}
        self.calls = []
        self._ids = ("%032x" % n for n in itertools.count(1))

    @property
    def writes(self):
        return [c for c in self.calls if c[0] != "GET"]

    def _split(self, path):
        collection, ident = path.rsplit("/", 1)
        return collection, ident

    def find_one(self, collection, field, value):
        self.calls.append(("GET", collection, {field: value}))
        found = [i for i in self.items.get(collection, []) if i.get(field) == value]
        return copy.deepcopy(found[0]) if found else None

    def find(self, collection, field, value, what):
        item = self.find_one(collection, field, value)
        if item is None:
            raise CloudcronError("%s: no %s with %s or id '%s' in this org" % (what, what, field, value), status=404)
        return item

    def list_all(self, collection):
        self.calls.append(("GET", collection, None))
        return copy.deepcopy(self.items.get(collection, []))

    def post(self, collection, body):
        self.calls.append(("POST", collection, copy.deepcopy(body)))
        item = dict(body, id=next(self._ids))
        item.pop("credentials", None)
        item.pop("private", None)
        item.pop("generate", None)
        self.items.setdefault(collection, []).append(item)
        return copy.deepcopy(item)

    def patch(self, path, body):
        self.calls.append(("PATCH", path, copy.deepcopy(body)))
        collection, ident = self._split(path)
        item = next(i for i in self.items[collection] if i["id"] == ident)
        item.update((k, v) for k, v in body.items() if k not in ("credentials", "private", "generate"))
        return copy.deepcopy(item)

    def delete(self, path):
        self.calls.append(("DELETE", path, None))
        collection, ident = self._split(path)
        self.items[collection] = [i for i in self.items[collection] if i["id"] != ident]
        return {"deleted": ident}


def cloud_params(**given):
    out = dict(title="lab", state="present", provider=None, credentials=None, options=None, update_secrets=False,
               machines=None, purge_machines=False)
    out.update(given)
    return out


def machine(**given):
    """A machines option entry as AnsibleModule fills it in."""
    out = dict(name=None, machine_id=None, host=None, port=None, ssh_user=None, key=None, tags=None)
    out.update(given)
    return out


AWS = {"id": "a" * 32, "title": "aws", "provider": "ec2", "options": {"region": "eu-west-1"}}
LAB = {"id": "b" * 32, "title": "lab", "provider": "other", "options": {}}
WEB1 = {"id": "1" * 32, "machine_id": "web1", "name": "web1", "host": "192.0.2.10", "port": 22, "ssh_user": "root",
        "key_id": None, "tags": {"env": "dev"}}


def test_a_new_cloud_sends_its_credentials_once_and_the_diff_hides_them():
    client = PathClient()
    result = cloud_mod.ensure(client, cloud_params(title="aws", provider="ec2", credentials={"secret": SECRET},
                                                   options={"region": "eu-west-1"}), check_mode=False)
    assert len(client.writes) == 1
    body = client.writes[0][2]
    assert body["credentials"] == {"secret": SECRET}
    assert result["changed"] is True
    assert SECRET not in repr(result)


def test_the_same_credentials_again_are_neither_compared_nor_sent():
    client = PathClient(clouds=[AWS])
    result = cloud_mod.ensure(client, cloud_params(title="aws", provider="ec2", credentials={"secret": SECRET},
                                                   options={"region": "eu-west-1"}), check_mode=False)
    assert result["changed"] is False and client.writes == []


def test_update_secrets_sends_them_and_reports_a_change_without_showing_them():
    client = PathClient(clouds=[AWS])
    result = cloud_mod.ensure(client, cloud_params(title="aws", credentials={"secret": SECRET}, update_secrets=True),
                              check_mode=False)
    assert client.writes == [("PATCH", "clouds/" + "a" * 32, {"credentials": {"secret": SECRET}})]
    assert result["changed_fields"] == ["credentials"]
    assert SECRET not in repr(result)


def test_changed_options_are_patched_and_diffed():
    client = PathClient(clouds=[AWS])
    result = cloud_mod.ensure(client, cloud_params(title="aws", options={"region": "us-east-1"}), check_mode=False)
    assert client.writes == [("PATCH", "clouds/" + "a" * 32, {"options": {"region": "us-east-1"}})]
    assert result["diff"] == {"before": {"options": {"region": "eu-west-1"}}, "after": {"options": {"region": "us-east-1"}}}


def test_a_provider_cannot_change():
    with pytest.raises(CloudcronError) as err:
        cloud_mod.ensure(PathClient(clouds=[AWS]), cloud_params(title="aws", provider="gce"), check_mode=False)
    assert "cannot become 'gce'" in err.value.message


def test_machines_are_only_declared_on_other_clouds():
    with pytest.raises(CloudcronError) as err:
        cloud_mod.ensure(PathClient(clouds=[AWS]), cloud_params(title="aws", machines=[machine(name="x", host="h")]),
                         check_mode=False)
    assert err.value.message.startswith("machines: only an 'other' cloud")


def test_declared_machines_are_created_updated_and_left_alone_when_equal():
    client = PathClient(clouds=[LAB], clouds__bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb__machines=[WEB1],
                        keys=[{"id": "k" * 32, "name": "lab-key"}])
    task = cloud_params(machines=[machine(name="web1", host="192.0.2.10", tags={"env": "dev"}),
                                  machine(name="web2", host="192.0.2.11", port=2222, key="lab-key")])
    result = cloud_mod.ensure(client, task, check_mode=False)
    assert client.writes == [("POST", "clouds/%s/machines" % ("b" * 32), {
        "machine_id": "web2", "name": "web2", "host": "192.0.2.11", "port": 2222, "key_id": "k" * 32})]
    assert result["changed_fields"] == ["machines.web2"]
    again = cloud_mod.ensure(client, task, check_mode=False)
    assert again["changed"] is False and len(client.writes) == 1


def test_a_changed_machine_is_patched_field_by_field():
    client = PathClient(clouds=[LAB], clouds__bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb__machines=[WEB1])
    result = cloud_mod.ensure(client, cloud_params(machines=[machine(name="web1", host="192.0.2.99")]), check_mode=False)
    assert client.writes == [("PATCH", "clouds/%s/machines/%s" % ("b" * 32, "1" * 32), {"host": "192.0.2.99"})]
    assert result["diff"]["before"]["machines"] == {"web1": {"host": "192.0.2.10"}}


def test_purge_forgets_unlisted_machines_and_check_mode_only_predicts_it():
    client = PathClient(clouds=[LAB], clouds__bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb__machines=[WEB1])
    task = cloud_params(machines=[], purge_machines=True)
    assert cloud_mod.ensure(client, task, check_mode=True)["changed_fields"] == ["machines.web1"]
    assert client.writes == []
    cloud_mod.ensure(client, task, check_mode=False)
    assert client.writes == [("DELETE", "clouds/%s/machines/%s" % ("b" * 32, "1" * 32), None)]


def test_a_new_cloud_needs_a_provider():
    with pytest.raises(CloudcronError) as err:
        cloud_mod.ensure(PathClient(), cloud_params(title="x"), check_mode=False)
    assert err.value.message == "cloud 'x' does not exist; to create it give provider"


# ------------------------------------------------------------------ scripts


UPTIME = {"id": "5" * 32, "name": "uptime", "description": None, "script": "#!/bin/sh\nuptime\n", "exec_type": "executable"}


def script_params(**given):
    out = dict(name="uptime", state="present", script=None, exec_type=None, description=None)
    out.update(given)
    return out


def test_an_unchanged_script_writes_nothing():
    client = PathClient(scripts=[UPTIME])
    result = script_mod.ensure(client, script_params(script=UPTIME["script"], exec_type="executable"), check_mode=False)
    assert result["changed"] is False and client.writes == []


def test_a_changed_script_sends_only_its_content():
    client = PathClient(scripts=[UPTIME])
    result = script_mod.ensure(client, script_params(script="#!/bin/sh\nw\n", description=""), check_mode=False)
    assert client.writes == [("PATCH", "scripts/" + "5" * 32, {"script": "#!/bin/sh\nw\n"})]
    assert result["changed_fields"] == ["script"]


def test_a_new_script_needs_its_content():
    with pytest.raises(CloudcronError):
        script_mod.ensure(PathClient(), script_params(), check_mode=False)


# ------------------------------------------------------------------ keys


def key_params(**given):
    out = dict(name="lab-key", state="present", private=None, generate=None, update_secrets=False)
    out.update(given)
    return out


def test_a_new_key_sends_its_private_half_and_never_shows_it():
    client = PathClient()
    result = key_mod.ensure(client, key_params(private=PRIVATE), check_mode=False)
    assert client.writes == [("POST", "keys", {"private": PRIVATE, "name": "lab-key"})]
    assert PRIVATE not in repr(result)


def test_an_existing_key_is_not_compared_unless_secrets_are_updated():
    client = PathClient(keys=[{"id": "k" * 32, "name": "lab-key", "public": "ssh-ed25519 AAAA"}])
    assert key_mod.ensure(client, key_params(private=PRIVATE), check_mode=False)["changed"] is False
    assert client.writes == []
    result = key_mod.ensure(client, key_params(generate=True, update_secrets=True), check_mode=False)
    assert result["changed"] is True
    assert client.writes == [("PATCH", "keys/" + "k" * 32, {"generate": True})]


def test_a_new_key_needs_private_or_generate():
    with pytest.raises(CloudcronError) as err:
        key_mod.ensure(PathClient(), key_params(), check_mode=True)
    assert "give private or generate: true" in err.value.message
