"""plugins.module_utils._libcloud against a real moto EC2 server."""

from __future__ import annotations

import socket

import pytest

from plugins.module_utils import _libcloud


@pytest.fixture
def driver(moto_server):
    return _libcloud.get_driver("ec2", moto_server.credentials, moto_server.options)


class CountingListings:
    """Wraps a real driver and counts its listings and power calls (the calls still go to moto)."""

    def __init__(self, driver):
        self._driver = driver
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(self._driver, name)
        if name in ("list_nodes", "start_node", "stop_node", "reboot_node", "destroy_node"):
            def counted(*args, **kwargs):
                self.calls.append(name)
                return attr(*args, **kwargs)
            return counted
        return attr


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_provider_names_are_libclouds_compute_providers():
    names = _libcloud.provider_names()
    assert {"ec2", "gce", "openstack", "azure_arm"} <= set(names)
    assert all(isinstance(n, str) for n in names)


def test_it_rejects_an_unknown_provider():
    with pytest.raises(ValueError, match="no-such-cloud"):
        _libcloud.get_driver("no-such-cloud", {"key": "k"}, {})


def test_it_rejects_options_the_driver_does_not_take():
    # libcloud's dummy driver takes one argument only; EC2's swallows unknown ones.
    with pytest.raises(ValueError, match="not_an_option"):
        _libcloud.get_driver("dummy", {"creds": 0}, {"not_an_option": 1})


def test_it_rejects_options_that_repeat_a_credential(moto_server):
    with pytest.raises(ValueError, match="secret"):
        _libcloud.get_driver("ec2", moto_server.credentials, dict(moto_server.options, secret="x"))


def test_it_rejects_an_unknown_state(driver):
    with pytest.raises(ValueError, match="hibernated"):
        _libcloud.power(driver, ["i-0123456789abcdef0"], "hibernated")


def test_list_nodes_describes_machines_with_tags_and_addresses(moto_server, driver):
    (machine_id,) = moto_server.create_machines(1, tags={"Name": "web-1", "team": "blue"})
    nodes = {n["machine_id"]: n for n in _libcloud.list_nodes(driver)}
    node = nodes[machine_id]
    assert node["name"] == "web-1"
    assert node["state"] == "running"
    assert node["tags"] == {"Name": "web-1", "team": "blue"}
    assert node["private_ips"] and all(isinstance(ip, str) for ip in node["private_ips"])


def test_fifty_machines_cost_one_listing_and_one_call_each(moto_server, driver):
    ids = moto_server.create_machines(50)
    counting = CountingListings(driver)
    results = _libcloud.power(counting, ids, "stopped")
    assert counting.calls.count("list_nodes") == 1
    assert counting.calls.count("stop_node") == 50
    assert all(r["changed"] and not r["failed"] for r in results)
    assert {moto_server.state(i) for i in ids} == {"stopped"}


def test_repeated_ids_are_acted_on_once(moto_server, driver):
    (machine_id,) = moto_server.create_machines(1)
    counting = CountingListings(driver)
    results = _libcloud.power(counting, [machine_id, machine_id], "restarted")
    assert [r["machine_id"] for r in results] == [machine_id]
    assert counting.calls.count("reboot_node") == 1


def test_check_mode_lists_but_calls_no_action(moto_server, driver):
    ids = moto_server.create_machines(2)
    counting = CountingListings(driver)
    results = _libcloud.power(counting, ids, "absent", check_mode=True)
    assert counting.calls == ["list_nodes"]
    assert [r["changed"] for r in results] == [True, True]
    assert [r["state"] for r in results] == ["running", "running"]
    assert {moto_server.state(i) for i in ids} == {"running"}


def test_a_terminated_machine_cannot_be_started_but_is_already_absent(moto_server, driver):
    (machine_id,) = moto_server.create_machines(1)
    moto_server.ec2.terminate_instances(InstanceIds=[machine_id])

    (start,) = _libcloud.power(driver, [machine_id], "started")
    assert start["failed"] is True and start["changed"] is False
    assert machine_id in start["msg"]

    (absent,) = _libcloud.power(driver, [machine_id], "absent")
    assert absent["failed"] is False and absent["changed"] is False
    assert absent["state"] == "terminated"


def test_an_unlisted_machine_fails_except_when_asked_to_be_absent(driver):
    missing = "i-0feedface0000000"
    (stop,) = _libcloud.power(driver, [missing], "stopped")
    assert stop["failed"] is True
    assert stop["msg"] == "machine %s not found" % missing
    (absent,) = _libcloud.power(driver, [missing], "absent")
    assert absent["failed"] is False and absent["changed"] is False


def test_an_unreachable_cloud_fails_every_machine_after_bounded_retries(monkeypatch):
    # Nothing listens on this port, so every attempt is refused: a transient error.
    monkeypatch.setattr(_libcloud, "RETRY_DELAYS", (0.0, 0.0))
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    options = {"host": "127.0.0.1", "port": _free_port(), "secure": False, "region": "us-east-1", "signature_version": "4"}
    driver = _libcloud.get_driver("ec2", {"key": "AKIAIOSFODNN7EXAMPLE", "secret": secret}, options)
    counting = CountingListings(driver)

    results = _libcloud.power(counting, ["i-1", "i-2"], "stopped")
    assert counting.calls == ["list_nodes"] * (len(_libcloud.RETRY_DELAYS) + 1)
    assert [r["failed"] for r in results] == [True, True]
    assert all("listing machines failed" in r["msg"] for r in results)
    assert all(secret not in r["msg"] for r in results)


def test_a_short_credential_is_hidden_only_where_it_is_a_whole_word(monkeypatch):
    # A secret "list" used to turn "listing machines failed" into "********ing machines failed".
    monkeypatch.setattr(_libcloud, "RETRY_DELAYS", ())
    options = {"host": "127.0.0.1", "port": _free_port(), "secure": False, "region": "us-east-1", "signature_version": "4"}
    driver = _libcloud.get_driver("ec2", {"key": "list", "secret": "list"}, options)
    (result,) = _libcloud.power(driver, ["i-1"], "stopped")
    assert result["failed"] is True
    assert result["msg"].startswith("listing machines failed: "), result["msg"]
    assert "********ing" not in result["msg"]
