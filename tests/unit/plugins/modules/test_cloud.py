"""cloudcron.scheduler.cloud: one apply per cloud, then its declared machines, answered by the real API in process."""
from __future__ import annotations

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronError
from ansible_collections.cloudcron.scheduler.plugins.modules import cloud as mod

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def params(**given):
    out = dict((name, None) for name in mod.argument_spec())
    out.update(state="present", update_secrets=False, purge_machines=False)
    out.update(given)
    return out


def machine(**given):
    return dict(dict.fromkeys(("name", "machine_id", "host", "port", "ssh_user", "key", "tags")), **given)


def sealed_secret(service, cloud_id):
    from web.models import Cloud

    with service.state.db.session() as session:
        return service.state.box.open(session.get(Cloud, cloud_id).credentials_enc).get("secret")


AWS = dict(title="aws", provider="ec2", credentials={"key": "AKID", "secret": SECRET}, options={"region": "eu-west-1"})


def test_a_new_cloud_sends_its_credentials_once_and_nothing_shows_them(service):
    result = mod.ensure(service.client(), params(**AWS), check_mode=False)
    assert result["changed"] is True and "credentials" in result["changed_fields"]
    assert SECRET not in repr(result)
    assert sealed_secret(service, result["cloud"]["id"]) == SECRET
    assert service.opener.calls == [("PUT", "/api/v1/clouds/by-title/aws")]


def test_other_credentials_are_not_compared_and_update_secrets_sends_them(service):
    cloud_id = mod.ensure(service.client(), params(**AWS), check_mode=False)["cloud"]["id"]
    other = {**AWS, "credentials": {"key": "AKID", "secret": "rotated"}}
    assert mod.ensure(service.client(), params(**other), check_mode=False)["changed"] is False
    assert sealed_secret(service, cloud_id) == SECRET
    result = mod.ensure(service.client(), params(update_secrets=True, **other), check_mode=False)
    assert result["changed_fields"] == ["credentials"] and "rotated" not in repr(result)
    assert sealed_secret(service, cloud_id) == "rotated"


def test_changed_options_are_diffed_and_check_mode_writes_nothing(service):
    mod.ensure(service.client(), params(**AWS), check_mode=False)
    moved = {**AWS, "options": {"region": "us-east-1"}}
    predicted = mod.ensure(service.client(), params(**moved), check_mode=True)
    assert predicted["diff"] == {"before": {"options": {"region": "eu-west-1"}},
                                 "after": {"options": {"region": "us-east-1"}}}
    assert service.api("GET", "clouds?title=aws")[1][0]["options"] == {"region": "eu-west-1"}
    assert mod.ensure(service.client(), params(**moved), check_mode=False)["changed_fields"] == ["options"]


def test_a_provider_cannot_change_and_a_new_cloud_needs_one(service):
    mod.ensure(service.client(), params(**AWS), check_mode=False)
    with pytest.raises(CloudcronError) as err:
        mod.ensure(service.client(), params(title="aws", provider="gce"), check_mode=False)
    assert "provider: cannot be changed" in err.value.message
    with pytest.raises(CloudcronError) as err:
        mod.ensure(service.client(), params(title="new"), check_mode=False)
    assert err.value.message.endswith("provider: is required") and err.value.status == 400


def test_machines_are_only_declared_on_other_clouds(service):
    with pytest.raises(CloudcronError) as err:
        mod.ensure(service.client(), params(machines=[machine(name="x", host="h")], **AWS), check_mode=False)
    assert err.value.message.startswith("machines: only an 'other' cloud")


def test_declared_machines_are_created_updated_purged_and_left_alone_when_equal(service):
    service.api("POST", "keys", {"name": "lab-key", "generate": True})
    task = params(title="lab", provider="other",
                  machines=[machine(name="web1", host="192.0.2.10", tags={"env": "dev"}),
                            machine(name="web2", host="192.0.2.11", port=2222, key="lab-key")])
    first = mod.ensure(service.client(), task, check_mode=False)
    assert first["changed"] is True and {"machines.web1", "machines.web2"} <= set(first["changed_fields"])
    again = mod.ensure(service.client(), task, check_mode=False)
    assert again["changed"] is False
    moved = params(title="lab", machines=[machine(name="web1", host="192.0.2.99")], purge_machines=True)
    predicted = mod.ensure(service.client(), moved, check_mode=True)
    assert set(predicted["changed_fields"]) == {"machines.web1.host", "machines.web2"}
    lab = service.api("GET", "clouds?title=lab")[1][0]
    assert len(service.api("GET", "clouds/%s/machines" % lab["id"])[1]) == 2
    mod.ensure(service.client(), moved, check_mode=False)
    machines = service.api("GET", "clouds/%s/machines" % lab["id"])[1]
    assert [(m["name"], m["host"]) for m in machines] == [("web1", "192.0.2.99")]


def test_absent_deletes_the_cloud(service):
    mod.ensure(service.client(), params(**AWS), check_mode=False)
    assert mod.ensure(service.client(), params(title="aws", state="absent"), check_mode=False)["changed"] is True
    assert service.api("GET", "clouds?title=aws")[1] == []
