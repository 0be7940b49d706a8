"""cloudcron.scheduler.script: one apply request per task, answered by the real API in process."""
from __future__ import annotations

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronError
from ansible_collections.cloudcron.scheduler.plugins.modules import script as mod


def params(**given):
    out = dict((name, None) for name in mod.argument_spec())
    out.update(state="present")
    out.update(given)
    return out


def test_create_then_unchanged_then_only_the_content_changes(service):
    task = params(name="uptime", script="#!/bin/sh\nuptime\n", description="load")
    assert mod.ensure(service.client(), task, check_mode=False)["changed"] is True
    assert mod.ensure(service.client(), task, check_mode=False)["changed"] is False
    result = mod.ensure(service.client(), params(name="uptime", script="#!/bin/sh\nw\n"), check_mode=False)
    assert result["changed_fields"] == ["script"] and result["script"]["description"] == "load"
    assert [c[0] for c in service.opener.calls] == ["PUT", "PUT", "PUT"]


def test_a_new_script_needs_its_content(service):
    with pytest.raises(CloudcronError) as err:
        mod.ensure(service.client(), params(name="empty"), check_mode=False)
    assert err.value.status == 400 and err.value.message.endswith("script: is required")


def test_check_mode_of_a_new_script_creates_nothing(service):
    result = mod.ensure(service.client(), params(name="x", script="#!/bin/sh\n"), check_mode=True)
    assert result["changed"] is True and result["script"]["id"] is None
    assert service.api("GET", "scripts")[1] == []
