#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: schedule
short_description: Declare a cloudcron schedule that starts, stops, reboots or destroys machines, or runs a script
description:
  - Makes sure a schedule of the cloudcron service exists with the given fields, or does not exist.
  - One request per task, C(PUT /api/v1/schedules/by-name/<name>). The service merges the options given
    onto the stored schedule (or creates it), checks the result with the same rules as every other
    write, compares, and writes only a change. Applying the same task again reports no change and
    writes nothing. In check mode the same request is a dry run, so the prediction (including
    C(next_run_at)) is the service's own.
  - Options left unset are not managed. A new schedule gets the service's default, an existing one
    keeps its value. Give V("") to clear an optional text or date field.
  - Dates, crontab fields and the V(shutdown) action are compared the way the service stores them,
    by the service.
author:
  - cloudcron contributors (!UNKNOWN)
extends_documentation_fragment:
  - cloudcron.scheduler.connection
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Writes nothing and reports exactly whether the task would change the schedule.
  diff_mode:
    support: full
    details: Shows the changed fields before and after.
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the schedule, unique within the org.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the schedule; V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  description:
    description:
      - Free text about the schedule.
    type: str
  action:
    description:
      - The power action each run performs on the target machines. V(shutdown) is stored as V(stop).
      - Mutually exclusive with O(script). Giving it turns a script schedule into an action schedule.
    type: str
    choices: [start, stop, shutdown, reboot, destroy]
  script:
    description:
      - The script each run executes on the target machines, by name or by id.
      - Mutually exclusive with O(action).
    type: str
    aliases: [script_id]
  params:
    description:
      - Arguments passed to O(script), as one string.
    type: str
  machines:
    description:
      - Target machines by cloud and provider machine id; a friendlier form of O(machines_per_cloud).
      - Giving any of O(machines), O(machines_per_cloud) or O(selectors) sets the whole target list, and
        the ones not given become empty.
    type: list
    elements: dict
    suboptions:
      cloud:
        description:
          - The cloud, by title or by id.
        type: str
        required: true
      machine:
        description:
          - The provider's id of the machine (for example an EC2 instance id), or the name of a machine
            declared on an V(other) cloud.
        type: str
        required: true
  machines_per_cloud:
    description:
      - Target machines as the API takes them, a list of C([cloud_id, machine_id]) pairs.
      - Mutually exclusive with O(machines).
    type: list
    elements: list
  selectors:
    description:
      - Target machines chosen by our machine ids or by tags; a run acts on the machines that match then.
    type: list
    elements: dict
    suboptions:
      type:
        description:
          - V(machines) selects by cloudcron machine id, V(tags) by tag values.
        type: str
        required: true
        choices: [machines, tags]
      ids:
        description:
          - Cloudcron machine ids, with O(selectors[].type=machines).
        type: list
        elements: str
      include:
        description:
          - Tags a machine must all have, with O(selectors[].type=tags).
        type: dict
  schedule_type:
    description:
      - How the schedule fires. Required to create a schedule; give it together with O(schedule_entry).
    type: str
    choices: [interval, crontab, one_off]
  schedule_entry:
    description:
      - For V(interval), a dict C({every, period}) with period V(days), V(hours), V(minutes), V(seconds) or V(microseconds).
      - For V(crontab), a dict with any of C(minute), C(hour), C(day_of_week), C(day_of_month) and
        C(month_of_year) (missing ones are C(*)), read in O(timezone) with Celery's semantics.
      - For V(one_off), a date such as V(2030-11-10 20:20:00) (in O(timezone)), ISO 8601, or epoch seconds.
    type: raw
  enabled:
    description:
      - Whether the schedule fires. A new schedule is enabled unless this is V(false).
    type: bool
  run_immediately:
    description:
      - Whether a new schedule runs once at creation (when enabled). Has no effect on an existing schedule
        and never counts as a change of one.
    type: bool
  start_after:
    description:
      - No fire before this date (in O(timezone) unless it carries an offset). V("") clears it.
    type: raw
  expires:
    description:
      - No fire at or after this date (in O(timezone) unless it carries an offset). V("") clears it.
    type: raw
  max_run_count:
    description:
      - Stop after this many scheduled runs. V(0) clears the limit.
    type: int
  timezone:
    description:
      - IANA time zone of crontab entries and of dates given without an offset, for example V(Europe/Athens).
      - The service's default is V(UTC).
    type: str
  misfire_grace:
    description:
      - Seconds a missed fire may still run late (service default 300).
    type: int
  concurrency:
    description:
      - V(forbid) skips a fire while the previous run is still going; V(allow) runs them side by side.
    type: str
    choices: [forbid, allow]
  run_timeout:
    description:
      - Seconds after which a run is stopped (service default 3600), the API's C(timeout) field.
      - Named so because O(timeout) is the connection's timeout.
    type: int
  exclude_calendars:
    description:
      - Calendars, by name or by id, whose entries (dates, weekly windows, public holidays, iCalendar events)
        exclude fire times of this schedule. See M(cloudcron.scheduler.calendar).
      - V([]) removes them all.
    type: list
    elements: str
  jitter:
    description:
      - Seconds. Each fire is delayed by a stable pseudo-random offset below this, derived from the schedule
        and the fire time, so many schedules due at the same time do not call a cloud in the same second.
      - At most the shortest time between two fires of the schedule. The service's default is V(0).
    type: int
  retries:
    description:
      - Retries of a run's machines that failed for a transient reason (provider throttling or 5xx, insufficient
        capacity, connection refused or timed out, SSH unreachable, a power state not reached in time), as
        attempts of the same run. Retry n waits O(retries.delay) times O(retries.backoff) to the power n-1.
      - A O(retries.max) of V(0) removes them. The service's default is no retries.
    type: dict
    suboptions:
      max:
        description:
          - How many more attempts, 0 to 10.
        type: int
        required: true
      delay:
        description:
          - Seconds before the first retry, 0 to 3600. The service's default is V(60).
        type: float
      backoff:
        description:
          - The factor each further wait grows by, 1 to 10. The service's default is V(2).
        type: float
  notify:
    description:
      - Who hears about this schedule's runs, and about which outcomes. The whole setting is replaced.
      - Without it the stored setting is kept; a schedule that never had one notifies the org's default
        channels (M(cloudcron.scheduler.channel) with O(cloudcron.scheduler.channel#module:default=true)).
    type: dict
    suboptions:
      "on":
        description:
          - The run statuses to notify. The service's default is
            V(failed), V(partial), V(missed), V(timed_out) and V(interrupted).
        type: list
        elements: str
        choices: [succeeded, failed, partial, skipped, missed, interrupted, timed_out]
      channels:
        description:
          - Channels, by name or by id, to notify. Without it, the org's default channels.
        type: list
        elements: str
      after_retries:
        description:
          - V(true) (the service's default), notify once a run's retries are over, with its final status.
          - V(false), also notify each failed attempt that will be retried, before its retry (a C(run.retrying)
            event), when the status the run would have at that point is in O(notify.on).
        type: bool
seealso:
  - module: cloudcron.scheduler.schedule_info
  - module: cloudcron.scheduler.channel
  - module: cloudcron.scheduler.calendar
  - module: cloudcron.scheduler.cloud
  - module: cloudcron.scheduler.script
"""

EXAMPLES = r"""
- name: Stop the dev machines every weekday evening
  cloudcron.scheduler.schedule:
    url: http://127.0.0.1:8080
    token: "{{ cloudcron_token }}"
    name: dev-nightly-stop
    action: stop
    machines:
      - cloud: aws-dev
        machine: i-0123456789abcdef0
    schedule_type: crontab
    schedule_entry:
      minute: "0"
      hour: "19"
      day_of_week: mon-fri
    timezone: Europe/Athens

- name: Run a script every 2 hours on the machines tagged env=dev (URL and token from module_defaults)
  module_defaults:
    group/cloudcron.scheduler.all:
      url: "{{ cloudcron_url }}"
      token: "{{ cloudcron_token }}"
  cloudcron.scheduler.schedule:
    name: uptime-report
    script: uptime
    selectors:
      - type: tags
        include:
          env: dev
    schedule_type: interval
    schedule_entry:
      every: 2
      period: hours
    expires: "2030-11-10 20:20:00"

- name: Stop the dev machines at 19:00 on working days only, not all in the same minute
  cloudcron.scheduler.schedule:
    name: dev-evening-stop
    action: stop
    selectors:
      - type: tags
        include:
          env: dev
    schedule_type: crontab
    schedule_entry:
      minute: "0"
      hour: "19"
    timezone: Europe/Athens
    exclude_calendars:
      - greek-holidays
    jitter: 300
    notify:
      "on": [failed, partial, missed]
      channels: [ops-slack]

- name: Destroy a machine once
  cloudcron.scheduler.schedule:
    name: destroy-scratch
    action: destroy
    machines_per_cloud:
      - [b48a696e84554275a52fbe6278f6df56, i-781daaf3]
    schedule_type: one_off
    schedule_entry: "2030-01-31 18:00:00"

- name: Remove a schedule
  cloudcron.scheduler.schedule:
    name: dev-nightly-stop
    state: absent
"""

RETURN = r"""
schedule:
  description:
    - The schedule as the service returns it after the task; in check mode, as the service would store it
      (a new schedule then has no C(id)).
    - Null after O(state=absent).
  returned: always
  type: dict
  sample:
    id: 3bb46efc882c4b44b21826e5e98f7c28
    name: dev-nightly-stop
    description: null
    action: stop
    script_id: null
    params: null
    machines_per_cloud: [[b48a696e84554275a52fbe6278f6df56, i-0123456789abcdef0]]
    selectors: []
    schedule_type: crontab
    schedule_entry: {minute: "0", hour: "19", day_of_week: mon-fri, day_of_month: "*", month_of_year: "*"}
    enabled: true
    run_immediately: false
    start_after: null
    expires: null
    max_run_count: null
    timezone: Europe/Athens
    misfire_grace: 300
    concurrency: forbid
    timeout: 3600
    exclude_calendars: []
    jitter: 0
    retries: {max: 2, delay: 60, backoff: 2}
    notify: null
    paused: false
    paused_until: null
    pause_note: null
    skip_next: 0
    active: true
    next_run_at: "2030-01-07T17:00:00Z"
    total_run_count: 0
    last_run_at: null
    last_error: null
    created_at: "2029-12-31T10:00:00Z"
    updated_at: "2029-12-31T10:00:00Z"
changed_fields:
  description: Names of the fields the task changed (or would change in check mode).
  returned: always
  type: list
  elements: str
  sample: [schedule_entry, enabled]
"""

from ansible_collections.cloudcron.scheduler.plugins.module_utils._module import CloudcronModule, absent, present

# option name -> API field, for options sent as they are
SIMPLE_FIELDS = {"description": "description", "enabled": "enabled", "run_immediately": "run_immediately",
                 "timezone": "timezone", "misfire_grace": "misfire_grace", "concurrency": "concurrency",
                 "run_timeout": "timeout", "jitter": "jitter", "start_after": "start_after", "expires": "expires",
                 "params": "params", "exclude_calendars": "exclude_calendars"}


def _entry(schedule_type, entry):
    """The entry as given, but an interval's `every` templated into a string ("{{ n }}") sent as the number it is."""
    if schedule_type == "interval" and isinstance(entry, dict) and isinstance(entry.get("every"), str) \
            and entry["every"].strip().isdigit():
        entry = dict(entry, every=int(entry["every"].strip()))
    return entry


def desired_body(params):
    """The options given, as the API's fields; names of clouds, scripts and calendars are resolved by the service."""
    body = {}
    for option, field in SIMPLE_FIELDS.items():
        if params.get(option) is not None:
            body[field] = params[option]
    if params.get("max_run_count") is not None:
        body["max_run_count"] = params["max_run_count"] or None  # 0 clears the limit
    if params.get("action"):
        body.update(action=params["action"], script_id=None)  # an action replaces a script
        if params.get("params") is None:
            body["params"] = None  # the service takes params only with a script
    if params.get("script"):
        body.update(script_id=params["script"], action=None)
    if any(params.get(k) is not None for k in ("machines", "machines_per_cloud", "selectors")):
        pairs = [list(p) for p in params.get("machines_per_cloud") or []]
        pairs += [[item["cloud"], item["machine"]] for item in params.get("machines") or []]
        body["machines_per_cloud"] = pairs
        # Ansible fills unset suboptions with None; tag values are strings to the API.
        selectors = []
        for sel in params.get("selectors") or []:
            sel = dict((k, v) for k, v in sel.items() if v is not None)
            if isinstance(sel.get("include"), dict):
                sel["include"] = dict((str(k), str(v)) for k, v in sel["include"].items())
            selectors.append(sel)
        body["selectors"] = selectors
    if params.get("notify") is not None:
        # Ansible fills unset suboptions with None: the service's defaults apply to those.
        body["notify"] = dict((k, v) for k, v in params["notify"].items() if v is not None)
    if params.get("schedule_type") is not None:
        body["schedule_type"] = params["schedule_type"]
        body["schedule_entry"] = _entry(params["schedule_type"], params["schedule_entry"])
    if params.get("retries") is not None:  # the service fills in delay and backoff, and takes max 0 as none
        body["retries"] = dict((k, v) for k, v in params["retries"].items() if v is not None)
    return body


def ensure(client, params, check_mode):
    """Bring the schedule to the requested state with one apply (or a delete); return the module's result."""
    if params["state"] == "absent":
        return absent(client, "schedules", "schedule", "name", params["name"], check_mode)
    return present(client, "schedules", "schedule", params["name"], desired_body(params), check_mode)


def argument_spec():
    """The module's own options (the connection options come from the module base)."""
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        description=dict(type="str"),
        action=dict(type="str", choices=["start", "stop", "shutdown", "reboot", "destroy"]),
        script=dict(type="str", aliases=["script_id"]),
        params=dict(type="str"),
        machines=dict(type="list", elements="dict", options=dict(
            cloud=dict(type="str", required=True),
            machine=dict(type="str", required=True),
        )),
        machines_per_cloud=dict(type="list", elements="list"),
        selectors=dict(type="list", elements="dict", options=dict(
            type=dict(type="str", required=True, choices=["machines", "tags"]),
            ids=dict(type="list", elements="str"),
            include=dict(type="dict"),
        )),
        schedule_type=dict(type="str", choices=["interval", "crontab", "one_off"]),
        schedule_entry=dict(type="raw"),
        enabled=dict(type="bool"),
        run_immediately=dict(type="bool"),
        start_after=dict(type="raw"),
        expires=dict(type="raw"),
        max_run_count=dict(type="int"),
        timezone=dict(type="str"),
        misfire_grace=dict(type="int"),
        concurrency=dict(type="str", choices=["forbid", "allow"]),
        run_timeout=dict(type="int"),
        exclude_calendars=dict(type="list", elements="str"),
        jitter=dict(type="int"),
        retries=dict(type="dict", options=dict(
            max=dict(type="int", required=True),
            delay=dict(type="float"),
            backoff=dict(type="float"),
        )),
        notify=dict(type="dict", options={
            "on": dict(type="list", elements="str",
                       choices=["succeeded", "failed", "partial", "skipped", "missed", "interrupted", "timed_out"]),
            "channels": dict(type="list", elements="str"),
            "after_retries": dict(type="bool"),
        }),
    )


def main():
    """Run the module."""
    CloudcronModule(
        argument_spec(),
        mutually_exclusive=[("action", "script"), ("machines", "machines_per_cloud")],
        required_together=[("schedule_type", "schedule_entry")],
    ).run(ensure)


if __name__ == "__main__":
    main()
