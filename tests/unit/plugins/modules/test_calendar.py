"""cloudcron.scheduler.calendar: one apply request per task; entries kept as written, YAML dates as their text."""
from __future__ import annotations

import datetime

from ansible_collections.cloudcron.scheduler.plugins.modules import calendar as mod


def params(**given):
    out = dict((name, None) for name in mod.argument_spec())
    out.update(state="present")
    out.update(given)
    return out


def test_dates_a_yaml_loader_made_into_objects_are_sent_as_text_and_compare_equal(service):
    task = params(name="freeze", timezone="Europe/Athens",
                  entries=[{"from": datetime.date(2026, 12, 24), "to": datetime.date(2027, 1, 2)},
                           {"from": datetime.datetime(2026, 12, 31, 18, 0), "to": "2027-01-01 06:00"}])
    result = mod.ensure(service.client(), task, check_mode=False)
    assert result["calendar"]["entries"] == [{"from": "2026-12-24", "to": "2027-01-02"},
                                             {"from": "2026-12-31 18:00:00", "to": "2027-01-01 06:00"}]
    assert mod.ensure(service.client(), task, check_mode=False)["changed"] is False


def test_changed_entries_are_diffed_and_check_mode_writes_nothing(service):
    mod.ensure(service.client(), params(name="xmas", entries=[{"date": "2026-12-25"}]), check_mode=False)
    task = params(name="xmas", entries=[{"date": "2026-12-25"}, {"date": "2026-12-26"}])
    predicted = mod.ensure(service.client(), task, check_mode=True)
    assert predicted["changed_fields"] == ["entries"]
    assert predicted["diff"]["before"] == {"entries": [{"date": "2026-12-25"}]}
    assert service.api("GET", "calendars?name=xmas")[1][0]["entries"] == [{"date": "2026-12-25"}]
    assert mod.ensure(service.client(), task, check_mode=False)["changed"] is True
