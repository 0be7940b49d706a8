"""cloudcron.scheduler.channel: one apply request per task; url and secret sent on create and with update_secrets."""
from __future__ import annotations

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronError
from ansible_collections.cloudcron.scheduler.plugins.modules import channel as mod

HOOK = dict(kind="webhook", channel_url="https://hooks.example.com/cron/T0KEN", secret="s3cret-s3cret-s3cret")


def params(**given):
    out = dict((name, None) for name in mod.argument_spec())
    out.update(state="present", update_secrets=False)
    out.update(given)
    return out


def hook(**change):
    """The params of a task declaring the webhook channel `ops`, with `change` on top."""
    out = params(name="ops")
    out.update(HOOK)
    out.update(change)
    return out


def test_a_channel_is_created_then_unchanged_and_never_shows_its_url_or_secret(service):
    first = mod.ensure(service.client(), hook(), check_mode=False)
    assert first["changed"] is True and first["channel"]["url"] == "https://hooks.example.com/…"
    assert "T0KEN" not in repr(first) and "s3cret" not in repr(first)
    again = mod.ensure(service.client(), hook(), check_mode=False)
    assert again["changed"] is False and again["channel"] == first["channel"]
    assert [c["name"] for c in service.api("GET", "channels")[1]] == ["ops"]


def test_one_request_per_task(service):
    client = service.client()
    mod.ensure(client, hook(), check_mode=False)
    assert [(method, path.split("?")[0]) for method, path in service.opener.calls] == [
        ("PUT", "/api/v1/channels/by-name/ops")]


def test_check_mode_predicts_the_change_and_writes_nothing(service):
    mod.ensure(service.client(), hook(), check_mode=False)
    predicted = mod.ensure(service.client(), hook(default=True), check_mode=True)
    assert predicted["changed"] is True and predicted["changed_fields"] == ["default"]
    assert predicted["diff"] == {"before": {"default": False}, "after": {"default": True}}
    assert service.api("GET", "channels?name=ops")[1][0]["default"] is False


def test_a_new_secret_is_sent_only_with_update_secrets(service):
    mod.ensure(service.client(), hook(), check_mode=False)
    rotated = "another-secret-16chars"
    assert mod.ensure(service.client(), hook(secret=rotated), check_mode=False)["changed"] is False
    result = mod.ensure(service.client(), hook(secret=rotated, update_secrets=True), check_mode=False)
    assert result["changed"] is True and result["changed_fields"] == ["secret", "url"]
    assert "another" not in repr(result)


def test_absent_deletes_and_stays_deleted(service):
    mod.ensure(service.client(), hook(), check_mode=False)
    gone = mod.ensure(service.client(), params(name="ops", state="absent"), check_mode=False)
    assert gone["changed"] is True and gone["channel"] is None
    assert service.api("GET", "channels")[1] == []
    assert mod.ensure(service.client(), params(name="ops", state="absent"), check_mode=False)["changed"] is False


def test_a_rule_the_service_enforces_fails_naming_the_field(service):
    with pytest.raises(CloudcronError) as err:
        mod.ensure(service.client(), hook(secret="short"), check_mode=False)
    assert "(400): secret: must be at least 16 characters" in err.value.message and err.value.status == 400
