"""plugins.module_utils._libcloud's guard: driver arguments, address forms, time and size bounds of provider calls.

Drivers are libcloud's real ones; what they contact is a real server on loopback (or nothing at all)."""
from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from plugins.module_utils import _libcloud

EVERYWHERE = ("0.0.0.0/0", "::/0")  # a call that tries to connect anywhere is refused, before any byte is sent


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_a_gce_driver_never_reads_a_token_another_org_left_in_the_workers_cache(tmp_path, monkeypatch):
    # libcloud caches GCE tokens in ~/.google_libcloud_auth.<project>: a second org naming the same project
    # with any key of its own would be handed the first org's token, without the provider ever seeing it.
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".google_libcloud_auth.victim-project"
    planted = {"access_token": "VICTIM-TOKEN", "token_type": "Bearer", "expire_time": "2999-01-01T00:00:00Z"}
    cache.write_text(json.dumps(planted))
    with pytest.raises(_libcloud.LibcloudActionError) as caught:
        # Without a cached token the driver must ask Google for one; every address is denied, so that fails.
        _libcloud.get_driver("gce", {"user_id": "attacker@attacker.iam.gserviceaccount.com", "key": _pem()},
                             {"project": "victim-project"}, call_timeout=10, denied_networks=EVERYWHERE)
    assert "VICTIM-TOKEN" not in str(caught.value)
    assert json.loads(cache.read_text()) == planted
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.name]  # and it leaves no cache of its own


@pytest.mark.parametrize("provider, credentials, options, field", [
    ("gce", {"user_id": "a@p.iam.gserviceaccount.com", "key": "/etc/passwd"}, {"project": "p"}, "credentials.key"),
    ("gce", {"user_id": "a@p.iam.gserviceaccount.com", "key": "k"}, {"project": "p", "credential_file": "/x"},
     "options.credential_file"),
    ("azure", {"subscription_id": "s", "key_file": "/etc/passwd"}, {}, "credentials.key_file"),
    ("kubevirt", {"key": "t"}, {"host": "h", "cert_file": "/c", "key_file": "/k"}, "options.cert_file"),
    ("vsphere", {"username": "u", "password": "p"}, {"host": "h", "ca_cert": "/etc/passwd"}, "options.ca_cert"),
])
def test_a_stored_cloud_naming_a_file_is_refused_before_its_driver_is_built(provider, credentials, options, field):
    # Clouds stored before the rule are refused when used, not only at create.
    with pytest.raises(ValueError, match="^" + field.replace(".", r"\.") + ":"):
        _libcloud.get_driver(provider, credentials, options, call_timeout=5, denied_networks=EVERYWHERE)


def test_names_that_are_files_and_names_that_are_not():
    refused = ("key_file", "cert_file", "ca_cert", "keyfile", "certfile", "cafile", "token_file", "ssh_key_path",
               "state_dir", "files", "credential_file", "ex_auth_cache")
    allowed = ("key", "secret", "path", "host", "profile", "region", "project", "ex_force_auth_url", "user_id")
    for name in refused:
        with pytest.raises(ValueError, match="options." + name):
            _libcloud.check_driver_arguments("openstack", {}, {name: "x"})
    _libcloud.check_driver_arguments("openstack", {}, {name: "x" for name in allowed})


@pytest.mark.parametrize("address", [
    "169.254.169.254", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "::169.254.169.254", "64:ff9b::a9fe:a9fe",
    "64:ff9b::169.254.169.254", "2002:a9fe:a9fe::", "2002:a9fe:a9fe:1::5", "fe80::1", "fd00:ec2::254"])
def test_ipv6_forms_of_a_denied_ipv4_address_are_refused_as_that_address(address):
    assert _libcloud.Policy().refuses(address)


@pytest.mark.parametrize("address", [
    "8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::", "::1", "::", "2001:db8::a9fe:a9fe",
    "64:ff9b:0:0:1::a9fe"])
def test_other_addresses_are_not(address):
    assert not _libcloud.Policy().refuses(address)


def test_a_denied_loopback_is_refused_in_every_form_and_at_create():
    policy = _libcloud.Policy(["127.0.0.0/8"])
    for host in ("127.0.0.1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::"):
        assert policy.refuses(host), host
        with pytest.raises(ValueError, match="options.host: .*denied networks"):
            _libcloud.check_endpoint_options({"host": host}, policy)
        with pytest.raises(ValueError, match="options.url: .*denied networks"):
            _libcloud.check_endpoint_options({"url": f"http://[{host}]:8080/x" if ":" in host else f"http://{host}/"},
                                             policy)
