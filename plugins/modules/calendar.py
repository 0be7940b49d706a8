#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: calendar
short_description: Declare a cloudcron calendar of dates, windows and holidays that schedules skip
description:
  - Makes sure a calendar of the cloudcron service exists with the given entries, or does not exist.
  - A schedule that names the calendar in its C(exclude_calendars) does not fire at an instant the
    calendar excludes (M(cloudcron.scheduler.schedule) option O(cloudcron.scheduler.schedule#module:exclude_calendars)).
  - The calendar is found by O(name) within the org of O(token); only differing fields are sent.
    The service keeps entries exactly as given, so the same task again writes nothing.
author:
  - cloudcron contributors (!UNKNOWN)
extends_documentation_fragment:
  - cloudcron.scheduler.connection
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the calendar, unique within the org.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the calendar; V(absent) deletes it (refused while a schedule excludes it).
    type: str
    choices: [present, absent]
    default: present
  description:
    description:
      - Free text about the calendar. V("") clears it.
    type: str
  timezone:
    description:
      - IANA time zone in which the entries' dates and times are read, for example V(Europe/Athens).
      - The service's default is V(UTC).
    type: str
  entries:
    description:
      - What the calendar excludes; the whole list is set. Each entry is a dict of one kind.
      - "C({date: YYYY-MM-DD}) excludes that whole day."
      - "C({from: YYYY-MM-DD, to: YYYY-MM-DD}) excludes those whole days, both included; with times
        (C(YYYY-MM-DD HH:MM)) it excludes that span, C(to) excluded."
      - "C({yearly: MM-DD}) excludes that day every year."
      - "C({weekly: {from: fri 18:00, to: mon 06:00}}) excludes that span every week."
      - "C({holidays: {country: GR, subdivision: null}}) excludes the public holidays of a country, from the
        C(holidays) package."
      - "C({ical: <the text of an .ics file>}) excludes its events, recurrences included."
      - Quote dates in YAML (V("2026-12-25")) so they stay text.
    type: list
    elements: dict
seealso:
  - module: cloudcron.scheduler.schedule
"""

EXAMPLES = r"""
- name: Greek public holidays and the Christmas change freeze
  cloudcron.scheduler.calendar:
    name: greek-holidays
    timezone: Europe/Athens
    entries:
      - holidays:
          country: GR
      - from: "2026-12-24"
        to: "2027-01-02"

- name: No changes over the weekend
  cloudcron.scheduler.calendar:
    name: weekends
    timezone: Europe/Berlin
    entries:
      - weekly:
          from: fri 18:00
          to: mon 06:00

- name: The team's shared calendar of maintenance windows
  cloudcron.scheduler.calendar:
    name: maintenance
    entries:
      - ical: "{{ lookup('ansible.builtin.file', 'files/maintenance.ics') }}"
"""

RETURN = r"""
calendar:
  description: The calendar as the service returns it; null after O(state=absent).
  returned: always
  type: dict
  sample:
    id: 1f0a6e7c2b9d4e35a8c7d6b5a4f3e2d1
    name: greek-holidays
    description: null
    timezone: Europe/Athens
    entries:
      - holidays: {country: GR}
    created_at: "2030-01-01T10:00:00Z"
    updated_at: "2030-01-01T10:00:00Z"
changed_fields:
  description: Names of the fields that changed (or would, in check mode).
  returned: always
  type: list
  elements: str
  sample: [entries]
"""

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronClient,
    CloudcronError,
    changed_fields,
    connection_argument_spec,
    diff_of,
    quote_id,
)


def _as_sent(value):
    """An entry as JSON carries it: dates that a YAML loader turned into objects go back to their text."""
    if isinstance(value, dict):
        return dict((str(k), _as_sent(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_as_sent(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def desired_fields(params):
    """The fields the task manages, as the service stores them."""
    want = {}
    if params.get("timezone") is not None:
        want["timezone"] = params["timezone"]
    if params.get("description") is not None:
        want["description"] = params["description"] or None
    if params.get("entries") is not None:
        want["entries"] = _as_sent(params["entries"])
    return want


def ensure(client, params, check_mode):
    """Bring the calendar to the requested state; return the module's result."""
    name = params["name"]
    current = client.find_one("calendars", "name", name)
    if params["state"] == "absent":
        if current is None:
            return dict(changed=False, calendar=None, changed_fields=[], diff=dict(before={}, after={}))
        if not check_mode:
            client.delete("calendars/" + quote_id(current["id"]))
        return dict(changed=True, calendar=None, changed_fields=["state"], diff=dict(before=current, after={}))
    want = desired_fields(params)
    if current is None:
        body = dict((k, v) for k, v in want.items() if v is not None)
        body["name"] = name
        fields = sorted(body)
        created = dict(body) if check_mode else client.post("calendars", body)
        return dict(changed=True, calendar=created, changed_fields=fields, diff=diff_of(fields, {}, created))
    fields = changed_fields(want, current)
    if not fields:
        return dict(changed=False, calendar=current, changed_fields=[], diff=dict(before={}, after={}))
    patch = dict((f, want[f]) for f in fields)
    after = dict(current, **patch) if check_mode else client.patch("calendars/" + quote_id(current["id"]), patch)
    return dict(changed=True, calendar=after, changed_fields=fields, diff=diff_of(fields, current, after))


def argument_spec():
    """The module's options."""
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        description=dict(type="str"),
        timezone=dict(type="str"),
        entries=dict(type="list", elements="dict"),
    )
    return spec


def main():
    """Run the module."""
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        client = CloudcronClient.from_params(module.params)
        result = ensure(client, module.params, module.check_mode)
    except CloudcronError as exc:
        module.fail_json(msg=exc.message, status=exc.status)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
