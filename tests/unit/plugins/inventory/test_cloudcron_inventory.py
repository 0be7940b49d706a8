"""The machines inventory plugin: host variables from a machine, and which clouds it reads."""
from __future__ import annotations

import pytest

from ansible_collections.cloudcron.scheduler.plugins.inventory.machines import fetch, host_vars
from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronError

LAB = {"id": "b" * 32, "title": "lab", "provider": "other", "options": {}}
AWS = {"id": "a" * 32, "title": "aws", "provider": "ec2", "options": {}}


class ListingClient:
    """Lists clouds and machines from memory; a cloud id in `unreachable` answers like a provider outage (502)."""

    def __init__(self, clouds, machines, unreachable=()):
        self.clouds, self.machines, self.unreachable = clouds, machines, set(unreachable)
        self.paths = []

    def list_all(self, path):
        self.paths.append(path)
        if path == "clouds":
            return list(self.clouds)
        cloud_id = path.split("/")[1]
        if cloud_id in self.unreachable:
            raise CloudcronError("GET %s failed (502): cloud 'aws' could not be reached" % path, status=502)
        return list(self.machines.get(cloud_id, []))


def test_ssh_settings_become_connection_variables():
    machine = {"id": "1" * 32, "machine_id": "web1", "name": "web1", "host": "127.0.0.1", "port": 2201,
               "ssh_user": "deploy", "state": "unknown", "tags": {"env": "dev"}, "public_ips": ["127.0.0.1"],
               "private_ips": [], "key_id": None}
    out = host_vars(machine, LAB)
    assert (out["ansible_host"], out["ansible_port"], out["ansible_user"]) == ("127.0.0.1", 2201, "deploy")
    assert out["cloudcron_cloud_title"] == "lab" and out["cloudcron_tags"] == {"env": "dev"}


def test_a_provider_machine_without_ssh_host_is_reached_at_its_first_address():
    machine = {"id": "2" * 32, "machine_id": "i-1", "name": "i-1", "host": None, "port": None, "ssh_user": None,
               "public_ips": [], "private_ips": ["10.0.0.5"]}
    out = host_vars(machine, AWS)
    assert out["ansible_host"] == "10.0.0.5"
    assert "ansible_port" not in out and "ansible_user" not in out


def test_a_cloud_whose_provider_is_down_is_skipped_with_a_warning():
    warnings = []
    client = ListingClient([LAB, AWS], {LAB["id"]: [{"id": "1" * 32}]}, unreachable=[AWS["id"]])
    data = fetch(client, [], warnings.append)
    assert [c["title"] for c in data["clouds"]] == ["lab"]
    assert len(warnings) == 1 and "'aws'" in warnings[0]


def test_only_the_named_clouds_are_listed():
    client = ListingClient([LAB, AWS], {})
    data = fetch(client, ["lab"], lambda m: None)
    assert [c["title"] for c in data["clouds"]] == ["lab"]
    assert "clouds/%s/machines" % AWS["id"] not in client.paths


def test_an_unknown_cloud_in_the_filter_is_an_error():
    with pytest.raises(CloudcronError) as err:
        fetch(ListingClient([LAB], {}), ["nowhere"], lambda m: None)
    assert "nowhere" in err.value.message
