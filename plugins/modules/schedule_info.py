#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: schedule_info
short_description: Read cloudcron schedules with their next fire time and last runs
description:
  - Returns one schedule found by O(name) or O(id), or every schedule of the token's org.
  - Each schedule carries C(next_run_at) and its most recent runs, newest first.
author:
  - cloudcron contributors (!UNKNOWN)
extends_documentation_fragment:
  - cloudcron.scheduler.connection
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads only, so it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the schedule to return. Mutually exclusive with O(id).
    type: str
  id:
    description:
      - Id of the schedule to return. Mutually exclusive with O(name).
    type: str
  runs:
    description:
      - How many of each schedule's most recent runs to return; V(0) returns none (one request less per schedule).
    type: int
    default: 5
notes:
  - A name or id that matches nothing returns an empty list rather than failing.
seealso:
  - module: cloudcron.scheduler.schedule
"""

EXAMPLES = r"""
- name: When does the nightly stop fire next, and how did its last runs go?
  cloudcron.scheduler.schedule_info:
    name: dev-nightly-stop
  register: info

- name: Show it
  ansible.builtin.debug:
    msg: "next at {{ info.schedules[0].next_run_at }}, last run {{ info.schedules[0].runs[0].status | default('none') }}"

- name: Every schedule of the org, without runs
  cloudcron.scheduler.schedule_info:
    runs: 0
  register: all_schedules
"""

RETURN = r"""
schedules:
  description: The schedules found, newest first, each as the API returns it plus C(runs).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The schedule's id.
      type: str
      returned: always
      sample: 3bb46efc882c4b44b21826e5e98f7c28
    name:
      description: The schedule's name.
      type: str
      returned: always
      sample: dev-nightly-stop
    next_run_at:
      description: When it fires next (ISO 8601 UTC), null when inactive.
      type: str
      returned: always
      sample: "2030-01-07T17:00:00Z"
    runs:
      description: Its most recent runs, newest first (at most O(runs)).
      type: list
      elements: dict
      returned: always
      sample:
        - id: 0c1d6f0f3f2b4f8f9b7f1e2d3c4b5a69
          trigger: schedule
          status: succeeded
          scheduled_for: "2030-01-06T17:00:00Z"
          started_at: "2030-01-06T17:00:00Z"
          finished_at: "2030-01-06T17:00:04Z"
          error: null
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronClient,
    CloudcronError,
    connection_argument_spec,
    quote_id,
)


def read_schedules(client, name=None, id_=None, runs=5):
    """The matching schedules, each with its last `runs` runs."""
    if id_:
        one = client.get_or_none("schedules/" + quote_id(id_))
        found = [one] if one else []
    elif name:
        found = client.get("schedules", query={"name": name}) or []
    else:
        found = client.list_all("schedules")
    out = []
    for schedule in found:
        item = dict(schedule)
        item["runs"] = client.get("schedules/%s/runs" % quote_id(schedule["id"]), query={"limit": runs}) if runs > 0 else []
        out.append(item)
    return out


def main():
    """Run the module."""
    spec = connection_argument_spec()
    spec.update(name=dict(type="str"), id=dict(type="str"), runs=dict(type="int", default=5))
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=[("name", "id")], supports_check_mode=True)
    if module.params["runs"] < 0 or module.params["runs"] > 1000:
        module.fail_json(msg="runs: must be between 0 and 1000")
    try:
        client = CloudcronClient.from_params(module.params)
        schedules = read_schedules(client, module.params["name"], module.params["id"], module.params["runs"])
    except CloudcronError as exc:
        module.fail_json(msg=exc.message, status=exc.status)
    module.exit_json(changed=False, schedules=schedules)


if __name__ == "__main__":
    main()
