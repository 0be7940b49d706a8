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
    # Equinix Metal's driver names its arguments; EC2's swallows unknown ones.
    with pytest.raises(ValueError, match="not_an_option"):
        _libcloud.get_driver("equinixmetal", {"key": "k"}, {"not_an_option": 1})


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
class _JsonProvider:
    """A driver whose provider answers ids such as "0", numbers, or none: what libcloud hands back as Nodes.

    (libcloud's Node keeps a falsy id as None: a provider's numeric 0 arrives as no id at all.)"""

    def __init__(self, ids):
        from libcloud.compute.base import Node
        from libcloud.compute.types import NodeState

        self.nodes = [Node(id=i, name=f"n{i}", state=NodeState.RUNNING, public_ips=[], private_ips=[], driver=None)
                      for i in ids]

    def list_nodes(self):
        return self.nodes


def test_machine_ids_are_text_even_when_a_provider_answers_0_or_nothing():
    assert [n["machine_id"] for n in _libcloud.list_nodes(_JsonProvider(["0", 7, None, 0]))] == ["0", "7", "", ""]
    (result,) = _libcloud.power(_JsonProvider(["0"]), ["0"], "started")
    assert result["failed"] is False and result["msg"] == "machine 0 is already running"


def test_libclouds_test_driver_is_not_a_provider():
    assert "dummy" not in _libcloud.provider_names()
    with pytest.raises(ValueError, match="test driver"):
        _libcloud.get_driver("dummy", {"creds": 3}, {})


@pytest.mark.parametrize("value, allowed", [
    ("http://ec2.example.com/", True), ("HTTPS://ec2.example.com:8443/x", True), ("ec2.example.com:8443", True),
    ("localhost:8443", True), ("us-east-1", True), ("2001:db8::1", True),
    ("file:///etc/passwd", False), ("file:relative", False), ("ftp://x/", False), ("qemu:///system", False),
    ("http://169.254.169.254/", False), ("https://[fd00:ec2::254]/", False), ("http://user@169.254.1.1:80", False),
])
def test_url_like_options_must_be_http_to_an_allowed_address(value, allowed):
    if allowed:
        _libcloud.check_endpoint_options({"url": value})
    else:
        with pytest.raises(ValueError, match="^options.url: "):
            _libcloud.check_endpoint_options({"url": value})


def test_a_secret_with_a_colon_is_not_taken_for_a_url():
    _libcloud.check_endpoint_options({"secret": "abc:def/ghi"}, prefix="credentials", secrets=True)
    with pytest.raises(ValueError, match="^credentials.uri: the scheme 'qemu[+]ssh'"):
        _libcloud.check_endpoint_options({"uri": "qemu+ssh://root@host/system"}, prefix="credentials", secrets=True)


def test_every_connection_goes_to_a_checked_address(moto_server):
    # The moto server listens on 127.0.0.1: with loopback denied, a name that resolves there is refused
    # before anything is sent, while the same driver allowed loopback lists machines.
    options = dict(moto_server.options, host="localhost")
    denied = _libcloud.get_driver("ec2", moto_server.credentials, options, denied_networks=["127.0.0.0/8", "::1/128"])
    with pytest.raises(_libcloud.LibcloudActionError, match="refused to connect to localhost.*127.0.0.1") as caught:
        _libcloud.list_nodes(denied)
    assert caught.value.permanent
    allowed = _libcloud.get_driver("ec2", moto_server.credentials, options, denied_networks=[])
    assert isinstance(_libcloud.list_nodes(allowed), list)


def test_the_call_timeout_bounds_retries_and_lowers_the_drivers_timeout():
    import time

    from tests.harness.endpoints import BlackHole

    with BlackHole() as hole:
        driver = _libcloud.get_driver("ec2", {"key": "AKIDEXAMPLE", "secret": "x" * 20}, hole.options(timeout=3600),
                                      call_timeout=1.5)
        started = time.monotonic()
        with pytest.raises(_libcloud.LibcloudActionError, match="timed out after 1.5 s"):
            _libcloud.list_nodes(driver)
        assert time.monotonic() - started < 20  # not the driver's 3600 s, nor three attempts of it
        assert hole.accepted == 1  # no retry once the time is spent


class RecordingListings(CountingListings):
    """Also records what each listing asked for and how many machines it brought back."""

    def __init__(self, driver):
        super().__init__(driver)
        self.listings = []

    def __getattr__(self, name):
        if name != "list_nodes":
            return super().__getattr__(name)
        real = self._driver.list_nodes

        def listing(*args, **kwargs):
            self.calls.append(name)
            nodes = real(*args, **kwargs)
            self.listings.append((kwargs.get("ex_filters"), len(nodes)))
            return nodes
        return listing


def test_ec2_is_asked_only_for_the_machines_acted_on(moto_server, driver):
    moto_server.create_machines(30)  # the rest of the account
    ids = moto_server.create_machines(2)
    missing = "i-0feedface0000001"
    recording = RecordingListings(driver)
    results = _libcloud.power(recording, [*ids, missing], "stopped")
    assert recording.listings == [({"instance-id": [*ids, missing]}, 2)]
    assert [(r["machine_id"], r["failed"]) for r in results] == [(ids[0], False), (ids[1], False), (missing, True)]
    assert {moto_server.state(i) for i in ids} == {"stopped"}


def test_more_ids_than_one_filter_takes_are_asked_in_chunks(moto_server, driver, monkeypatch):
    monkeypatch.setattr(_libcloud, "FILTER_CHUNK", 2)
    ids = moto_server.create_machines(5)
    recording = RecordingListings(driver)
    results = _libcloud.power(recording, ids, "stopped", check_mode=True)
    assert [len(f["instance-id"]) for f, _ in recording.listings] == [2, 2, 1]
    assert [r["machine_id"] for r in results] == ids and all(r["changed"] for r in results)


def test_machines_are_acted_on_concurrently_each_thread_with_its_own_driver(moto_server, driver):
    ids = moto_server.create_machines(12)
    made = []

    def factory():
        made.append(_libcloud.get_driver("ec2", moto_server.credentials, moto_server.options))
        return made[-1]

    results = _libcloud.power(driver, ids, "stopped", concurrency=4, driver_factory=factory)
    assert [r["machine_id"] for r in results] == ids  # the order asked for, whatever order they finished in
    assert all(r["changed"] and not r["failed"] for r in results)
    assert {moto_server.state(i) for i in ids} == {"stopped"}
    assert 1 <= len(made) <= 4 and len({id(d) for d in made}) == len(made)


class _Throttled:
    """A provider that throttles its first `throttled` calls, as EC2 does (HTTP 400 RequestLimitExceeded)."""

    type = "other"

    def __init__(self, throttled):
        self.throttled = throttled
        self.calls = 0

    def list_nodes(self):
        from libcloud.common.exceptions import BaseHTTPError

        self.calls += 1
        if self.calls <= self.throttled:
            raise BaseHTTPError(400, "RequestLimitExceeded: Request limit exceeded.")
        return []


def test_throttling_answers_are_retried_with_backoff(monkeypatch):
    # Nothing real throttles on this machine (moto never does): a stand-in raising libcloud's own error.
    pauses = []
    monkeypatch.setattr(_libcloud.time, "sleep", pauses.append)
    provider = _Throttled(throttled=3)
    (result,) = _libcloud.power(provider, ["i-1"], "stopped")
    assert provider.calls == 4 and result["msg"] == "machine i-1 not found"
    assert len(pauses) == 3 and pauses == sorted(pauses) and pauses[-1] <= _libcloud.THROTTLE_DELAYS[2]


def test_throttling_that_never_ends_fails_after_the_last_retry(monkeypatch):
    monkeypatch.setattr(_libcloud.time, "sleep", lambda _: None)
    provider = _Throttled(throttled=100)
    (result,) = _libcloud.power(provider, ["i-1"], "stopped")
    assert provider.calls == len(_libcloud.THROTTLE_DELAYS) + 1
    assert result["failed"] and "HTTP 400" in result["msg"]


class AcceptsButNeverActs:
    """A cloud that accepts power calls and leaves the machines as they are (the listing is moto's)."""

    def __init__(self, driver):
        self._driver = driver

    def __getattr__(self, name):
        if name in ("start_node", "stop_node", "reboot_node", "destroy_node"):
            return lambda node: True
        return getattr(self._driver, name)


def test_verification_passes_once_the_cloud_lists_the_end_state(moto_server, driver):
    ids = moto_server.create_machines(2)
    results = _libcloud.power(driver, ids, "stopped", verify_seconds=10)
    assert [r["failed"] for r in results] == [False, False]
    assert [r["state"] for r in results] == ["stopped", "stopped"]
    assert all(r["msg"].endswith("it is stopped") for r in results)
    results = _libcloud.power(driver, ids, "started", verify_seconds=10)
    assert [(r["failed"], r["state"]) for r in results] == [(False, "running"), (False, "running")]


def test_a_machine_that_never_reaches_its_state_fails_verification(moto_server, driver):
    [machine] = moto_server.create_machines(1)
    [result] = _libcloud.power(AcceptsButNeverActs(driver), [machine], "stopped", verify_seconds=0.5)
    assert result["failed"] and result["changed"]
    assert result["msg"] == "machine %s did not reach stopped within 0.5 s (it is running)" % machine
    from web.retries import is_transient
    assert is_transient("failed", result["msg"])


def test_without_verification_an_accepted_call_is_success(moto_server, driver):
    [machine] = moto_server.create_machines(1)
    [result] = _libcloud.power(AcceptsButNeverActs(driver), [machine], "stopped")
    assert not result["failed"] and result["state"] == "stopped"
