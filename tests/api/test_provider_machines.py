"""Machines of a libcloud cloud are read from the provider (a real moto EC2 server) and keep stable ids."""
from __future__ import annotations

from sqlalchemy import select

from web.models import Cloud


def ec2_cloud(api, moto_server, **extra):
    status, body = api.post("clouds", {"title": "aws", "provider": "ec2", "credentials": dict(moto_server.credentials),
                                       "options": moto_server.options, **extra})
    assert status == 200, body
    return body


def test_it_lists_machines_from_the_provider_with_stable_ids(api, moto_server):
    ids = moto_server.create_machines(2, tags={"env": "listing"})
    cloud = ec2_cloud(api, moto_server)
    status, first = api.get(f"clouds/{cloud['id']}/machines?limit=1000")
    assert status == 200
    mine = {m["machine_id"]: m for m in first if m["machine_id"] in ids}
    assert set(mine) == set(ids)
    for m in mine.values():
        assert len(m["id"]) == 32 and m["state"] == "running" and m["tags"] == {"env": "listing"}
        assert m["cloud_id"] == cloud["id"] and isinstance(m["private_ips"], list)
    status, again = api.get(f"clouds/{cloud['id']}/machines?limit=1000")
    assert {m["machine_id"]: m["id"] for m in again if m["machine_id"] in ids} == {k: v["id"] for k, v in mine.items()}


def test_creating_a_cloud_does_not_contact_the_provider(api):
    status, body = api.post("clouds", {"title": "nowhere", "provider": "ec2", "credentials": {"key": "k", "secret": "s"},
                                       "options": {"host": "127.0.0.1", "port": 9, "secure": False}})
    assert status == 200, body


def test_an_unreachable_provider_is_a_502_naming_the_cloud_without_its_secret(api):
    secret = "sekrit-value-4711"
    status, cloud = api.post("clouds", {"title": "down", "provider": "ec2", "credentials": {"key": "AKIDEXAMPLE", "secret": secret},
                                        "options": {"host": "127.0.0.1", "port": 9, "secure": False, "region": "us-east-1",
                                                    "signature_version": "4"}})
    status, body = api.get(f"clouds/{cloud['id']}/machines")
    assert status == 502
    assert cloud["id"] in body["error"] and secret not in body["error"]


def test_credentials_are_encrypted_at_rest_and_never_answered(api, moto_server):
    cloud = ec2_cloud(api, moto_server, credentials={"key": "AKIDEXAMPLE", "secret": "wJalrXUtnFEMI-secret"})
    with api.state.db.session() as s:
        stored = s.scalar(select(Cloud.credentials_enc).where(Cloud.id == cloud["id"]))
    assert "wJalrXUtnFEMI" not in stored and "AKIDEXAMPLE" not in stored
    for path in ("clouds", f"clouds/{cloud['id']}"):
        assert "wJalrXUtnFEMI" not in str(api.get(path)[1])
