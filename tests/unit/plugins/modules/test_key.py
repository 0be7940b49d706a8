"""cloudcron.scheduler.key: the private half is sent on create and with update_secrets, never shown."""
from __future__ import annotations

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronError
from ansible_collections.cloudcron.scheduler.plugins.modules import key as mod


def params(**given):
    out = dict((name, None) for name in mod.argument_spec())
    out.update(state="present", update_secrets=False)
    out.update(given)
    return out


def test_a_generated_key_is_kept_until_secrets_are_updated(service):
    first = mod.ensure(service.client(), params(name="deploy", generate=True), check_mode=False)
    assert first["changed"] is True and first["key"]["public"].startswith("ssh-ed25519 ")
    again = mod.ensure(service.client(), params(name="deploy", generate=True), check_mode=False)
    assert again["changed"] is False and again["key"]["public"] == first["key"]["public"]
    rotated = mod.ensure(service.client(), params(name="deploy", generate=True, update_secrets=True), check_mode=False)
    assert rotated["changed"] is True and rotated["key"]["public"] != first["key"]["public"]
    assert "PRIVATE KEY" not in repr(rotated)


def test_a_new_key_needs_private_or_generate(service):
    with pytest.raises(CloudcronError) as err:
        mod.ensure(service.client(), params(name="deploy"), check_mode=False)
    assert "private: is required (or generate: true)" in err.value.message
