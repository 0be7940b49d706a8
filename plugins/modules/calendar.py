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

from ansible_collections.cloudcron.scheduler.plugins.module_utils._module import CloudcronModule, absent, present


def desired_body(params):
    """The options given, as the API's fields (entries as written: the service keeps them so)."""
    return dict((field, params[field]) for field in ("timezone", "description", "entries")
                if params.get(field) is not None)


def ensure(client, params, check_mode):
    """Bring the calendar to the requested state with one apply (or a delete); return the module's result."""
    if params["state"] == "absent":
        return absent(client, "calendars", "calendar", "name", params["name"], check_mode)
    return present(client, "calendars", "calendar", params["name"], desired_body(params), check_mode)


def argument_spec():
    """The module's own options (the connection options come from the module base)."""
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        description=dict(type="str"),
        timezone=dict(type="str"),
        entries=dict(type="list", elements="dict"),
    )


def main():
    """Run the module."""
    CloudcronModule(argument_spec()).run(ensure)


if __name__ == "__main__":
    main()
