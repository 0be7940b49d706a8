"""A cloud's credentials and options are driver constructor arguments: none may make libcloud read or write a
file on the worker (keys and certificates by path, token caches), refused at create and edit naming the field."""
from __future__ import annotations

import pytest

GCE_PEM = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("provider, credentials, options, field", [
    # GCE: a key given as a file name is read by libcloud (then parsed, or echoed in its error)
    ("gce", {"user_id": "a@p.iam.gserviceaccount.com", "key": "/etc/cloudcron/secret.key"}, {"project": "p"},
     "credentials.key"),
    ("gce", {"user_id": "a@p.iam.gserviceaccount.com", "key": "~/.ssh/id_rsa"}, {"project": "p"}, "credentials.key"),
    # GCE's token cache file, shared by every org naming the same project
    ("gce", {"user_id": "a@p.iam.gserviceaccount.com", "key": GCE_PEM},
     {"project": "p", "credential_file": "/tmp/tokens"}, "options.credential_file"),
    # the worker's own instance identity, or a prompt on its terminal
    ("gce", {"user_id": "a@p.iam.gserviceaccount.com", "key": GCE_PEM}, {"project": "p", "auth_type": "GCE"},
     "options.auth_type"),
    ("gce", {"user_id": "x.apps.googleusercontent.com", "key": "s"}, {"project": "p", "auth_type": "IA"},
     "options.auth_type"),
    # Azure classic authenticates with a certificate file only
    ("azure", {"subscription_id": "s", "key_file": "/var/lib/cloudcron/secret.key"}, {}, "credentials.key_file"),
    # KubeVirt's client certificate and CA, by path
    ("kubevirt", {"key_file": "/root/.kube/key.pem", "cert_file": "/root/.kube/cert.pem"}, {"host": "k8s.example"},
     "credentials.key_file"),
    ("kubevirt", {"key": "token"}, {"host": "k8s.example", "ca_cert": "/etc/ssl/private/ca.pem"}, "options.ca_cert"),
    # vSphere's CA bundle, by path
    ("vsphere", {"username": "u", "password": "p"}, {"host": "vc.example", "ca_cert": "/etc/shadow"}, "options.ca_cert"),
    # any argument whose name says it is a file, and OpenStack's token cache
    ("openstack", {"key": "u", "secret": "p"}, {"ex_force_auth_url": "https://ks.example", "any_key_path": "/x"},
     "options.any_key_path"),
    ("openstack", {"key": "u", "secret": "p"}, {"ex_force_auth_url": "https://ks.example", "ex_auth_cache": "x"},
     "options.ex_auth_cache"),
])
def test_driver_arguments_naming_files_on_the_worker_are_refused_at_create(api, provider, credentials, options, field):
    status, body = api.post("clouds", {"title": "c", "provider": provider, "credentials": credentials, "options": options})
    assert status == 400 and body["error"].startswith(field + ":"), body
    assert "/etc" not in body["error"] and "/root" not in body["error"] and "~" not in body["error"]
    assert api.get("clouds")[1] == []


def test_and_at_edit(api):
    status, cloud = api.post("clouds", {"title": "g", "provider": "gce", "options": {"project": "p"},
                                        "credentials": {"user_id": "a@p.iam.gserviceaccount.com", "key": GCE_PEM}})
    assert status == 200, cloud
    status, body = api.patch(f"clouds/{cloud['id']}", {"credentials": {"user_id": "a@p.iam.gserviceaccount.com",
                                                                        "key": "/srv/cloudcron/secret.key"}})
    assert status == 400 and body["error"].startswith("credentials.key:"), body
    status, body = api.patch(f"clouds/{cloud['id']}", {"options": {"project": "p", "credential_file": "/tmp/t"}})
    assert status == 400 and body["error"].startswith("options.credential_file:"), body
    assert api.get(f"clouds/{cloud['id']}")[1]["options"] == {"project": "p"}


def test_a_gce_key_given_as_its_content_and_endpoint_paths_are_accepted(api):
    for provider, credentials, options in [
            ("gce", {"user_id": "a@p.iam.gserviceaccount.com", "key": GCE_PEM}, {"project": "p", "auth_type": "SA"}),
            ("gce", {"user_id": "a@p.iam.gserviceaccount.com", "key": '{"private_key": "..."}'}, {"project": "p"}),
            ("cloudstack", {"key": "k", "secret": "s"}, {"host": "cs.example", "path": "/client/api"}),
            ("ec2", {"key": "AKID", "secret": "s"}, {"region": "us-east-1", "signature_version": "4"})]:
        status, body = api.post("clouds", {"title": f"{provider}-{len(options)}", "provider": provider,
                                           "credentials": credentials, "options": options})
        assert status == 200, (provider, body)
