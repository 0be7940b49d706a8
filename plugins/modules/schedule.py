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
  - The schedule is found by O(name) within the org of O(token) with one request. Only the fields
    that differ are sent, so applying the same task again reports no change and writes nothing.
  - Options left unset are not managed. A new schedule gets the service's default, an existing one
    keeps its value. Give V("") to clear an optional text or date field.
  - Dates, crontab fields and the V(shutdown) action are compared the way the service stores them
    (dates in UTC, crontab fields as strings with V(*) for missing ones, V(shutdown) as V(stop)).
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
      - Whether a new schedule runs once at creation (when enabled). Has no effect on an existing schedule.
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
seealso:
  - module: cloudcron.scheduler.schedule_info
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
    - The schedule as the service returns it after the task; in check mode, as it would be.
    - Null after O(state=absent).
    - A new schedule predicted in check mode holds only the fields the task gives.
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

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronClient,
    CloudcronError,
    changed_fields,
    connection_argument_spec,
    diff_of,
    quote_id,
)

try:
    from zoneinfo import ZoneInfo
except ImportError:  # Python 3.8: dates without an offset in a named zone are then sent as given
    ZoneInfo = None

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
# option name -> API field, for options compared as they are
SIMPLE_FIELDS = {"enabled": "enabled", "run_immediately": "run_immediately", "timezone": "timezone",
                 "misfire_grace": "misfire_grace", "concurrency": "concurrency", "run_timeout": "timeout",
                 "jitter": "jitter"}
# The service's date forms: Mist's "2016-3-24 17:20:00", ISO 8601, epoch seconds.
_MIST_DATE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(\.\d{1,6})?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)
_EPOCH_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


class Unnormalizable(ValueError):
    """A value this module cannot put in the service's stored form; it is sent as given."""


def format_instant(dt):
    """ISO 8601 UTC with a Z, microseconds only when non-zero: the service's answer format."""
    dt = dt.astimezone(UTC)
    text = dt.replace(tzinfo=None, microsecond=0).isoformat()
    if dt.microsecond:
        text += ".%06d" % dt.microsecond
    return text + "Z"


def _offset(text):
    if text.upper() == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def _from_epoch(value):
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if not number.is_finite():
            raise Unnormalizable("not a date")
        return EPOCH + timedelta(microseconds=int((number * 1000000).to_integral_value()))
    except (InvalidOperation, OverflowError, ValueError):
        raise Unnormalizable("not a date") from None


def _local_to_utc(naive, tz_name):
    """A wall time in a named zone as UTC: in a DST gap the gap's end, when ambiguous the first occurrence."""
    if tz_name == "UTC":
        return naive.replace(tzinfo=UTC)
    if ZoneInfo is None:
        raise Unnormalizable("no zoneinfo on this Python")
    try:
        tz = ZoneInfo(tz_name)
    except Exception:  # an unknown zone is the service's to report, with its message
        raise Unnormalizable("unknown time zone") from None
    first = naive.replace(tzinfo=tz, fold=0)
    back = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if back == naive:
        return first.astimezone(UTC)
    # In a DST gap: the service fires at the transition instant, found to the second between
    # the two readings of the wall time (tzdata transitions are whole seconds).
    whole = naive.replace(microsecond=0)
    after_offset = whole.replace(tzinfo=tz, fold=1).utcoffset()
    hi = whole.replace(tzinfo=tz, fold=0).astimezone(UTC)
    lo = whole.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if lo > hi:
        lo, hi = hi, lo
    one = timedelta(seconds=1)
    while hi - lo > one:
        mid = lo + timedelta(seconds=max(1, (hi - lo) // one // 2))
        if mid.astimezone(tz).utcoffset() == after_offset:
            hi = mid
        else:
            lo = mid
    return hi


def parse_instant(value, tz_name):
    """A date in any form the service takes, as aware UTC; Unnormalizable when it is not one."""
    if isinstance(value, bool) or value is None:
        raise Unnormalizable("not a date")
    if isinstance(value, (int, float)):
        return _from_epoch(value)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if _EPOCH_NUMBER.fullmatch(text):
            return _from_epoch(text)
        match = _MIST_DATE.fullmatch(text)
        try:
            if match:
                year, month, day, hour, minute, second, fraction, offset = match.groups()
                parsed = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                                  int(second or 0), int((fraction or ".0")[1:].ljust(6, "0")))
                if offset:
                    parsed = parsed.replace(tzinfo=_offset(offset))
            else:
                parsed = datetime.fromisoformat(text)
        except ValueError:
            raise Unnormalizable("not a date") from None
    else:
        raise Unnormalizable("not a date")
    try:
        if parsed.tzinfo is None:
            return _local_to_utc(parsed, tz_name)
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, Unnormalizable):
            raise
        raise Unnormalizable("out of range") from None


def normalize_date(value, tz_name):
    """A date option as the service answers it: UTC with a Z; '' and None mean unset."""
    if value is None or value == "":
        return None
    try:
        return format_instant(parse_instant(value, tz_name))
    except Unnormalizable:
        return value


def _json_object(value):
    # Mist's clients send entries as strings holding JSON; the service accepts that too.
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def normalize_crontab(entry):
    """All five crontab fields as the service stores them: strings, no spaces, lower case, '*' when missing."""
    entry = _json_object(entry)
    if not isinstance(entry, dict) or any(k not in CRONTAB_FIELDS for k in entry):
        return entry  # not a crontab entry: the service refuses it with a message naming the rule
    out = {}
    for name in CRONTAB_FIELDS:
        value = entry.get(name)
        if value is None:
            out[name] = "*"
        elif isinstance(value, bool) or not isinstance(value, (int, str)):
            return entry
        else:
            out[name] = re.sub(r"\s+", "", str(value)).lower()
    return out


def normalize_interval(entry):
    """An interval entry as the service stores it: {"every": int, "period": lower-case name}."""
    entry = _json_object(entry)
    if not isinstance(entry, dict) or set(entry) != {"every", "period"}:
        return entry
    every, period = entry["every"], entry["period"]
    if isinstance(every, str) and every.strip().isdigit():
        every = int(every.strip())  # templated values arrive as strings
    if isinstance(period, str):
        period = period.strip().lower()
    return {"every": every, "period": period}


def normalize_entry(schedule_type, entry, tz_name):
    """A schedule_entry in the service's stored form for its schedule_type."""
    if schedule_type == "interval":
        return normalize_interval(entry)
    if schedule_type == "crontab":
        return normalize_crontab(entry)
    entry = _json_object(entry)
    if isinstance(entry, dict) and set(entry) == {"entry"}:
        entry = entry["entry"]
    return normalize_date(entry, tz_name)


def normalize_selectors(selectors):
    """Selectors without the unset suboptions Ansible adds, tag values as strings."""
    out = []
    for sel in selectors:
        sel = {k: v for k, v in sel.items() if v is not None}
        if sel.get("type") == "tags" and isinstance(sel.get("include"), dict):
            sel["include"] = {str(k): str(v) for k, v in sel["include"].items()}
        out.append(sel)
    return out


class Resolver:
    """Turns names and titles into ids, asking the service only for what the current schedule does not show."""

    def __init__(self, client, current):
        self.client = client
        self.current = current or {}
        self._clouds = {}

    def script_id(self, value):
        """The id of a script given by name or id."""
        if value == self.current.get("script_id"):
            return value
        return self.client.find("scripts", "name", value, "script")["id"]

    def calendar_id(self, value):
        """The id of a calendar given by name or id; one the schedule already excludes costs no request."""
        if value in (self.current.get("exclude_calendars") or []):
            return value
        return self.client.find("calendars", "name", value, "calendar")["id"]

    def cloud_id(self, value):
        """The id of a cloud given by title or id."""
        known = set(pair[0] for pair in self.current.get("machines_per_cloud") or [] if pair)
        if value in known:
            return value
        if value not in self._clouds:
            self._clouds[value] = self.client.find("clouds", "title", value, "cloud")["id"]
        return self._clouds[value]


def desired_fields(params, current, resolver):
    """The fields the task manages, in the service's stored form."""
    current = current or {}
    want = {}
    tz_name = params.get("timezone") or current.get("timezone") or "UTC"
    for option, field in SIMPLE_FIELDS.items():
        if params.get(option) is not None:
            want[field] = params[option]
    if params.get("description") is not None:
        want["description"] = params["description"] or None
    if params.get("max_run_count") is not None:
        want["max_run_count"] = params["max_run_count"] or None
    if params.get("action"):
        want["action"] = "stop" if params["action"] == "shutdown" else params["action"]
        want["script_id"] = None
        want["params"] = None  # the service takes params only with a script
    if params.get("script"):
        want["script_id"] = resolver.script_id(params["script"])
        want["action"] = None
    if params.get("params") is not None:
        want["params"] = params["params"] or None
    targets = [params.get(k) is not None for k in ("machines", "machines_per_cloud", "selectors")]
    if any(targets):
        pairs = [list(p) for p in params.get("machines_per_cloud") or []]
        for item in params.get("machines") or []:
            pairs.append([resolver.cloud_id(item["cloud"]), item["machine"]])
        want["machines_per_cloud"] = pairs
        want["selectors"] = normalize_selectors(params.get("selectors") or [])
    if params.get("schedule_type") is not None:
        want["schedule_type"] = params["schedule_type"]
        want["schedule_entry"] = normalize_entry(params["schedule_type"], params["schedule_entry"], tz_name)
    for field in ("start_after", "expires"):
        if params.get(field) is not None:
            want[field] = normalize_date(params[field], tz_name)
    if params.get("exclude_calendars") is not None:
        ids = [resolver.calendar_id(value) for value in params["exclude_calendars"]]
        want["exclude_calendars"] = [i for n, i in enumerate(ids) if i not in ids[:n]]  # the service drops repeats
    if params.get("retries") is not None:
        want["retries"] = normalize_retries(params["retries"])
    return want


def normalize_retries(value):
    """The retries option in the service's stored form: its defaults filled in, and max 0 as none (None)."""
    if not value.get("max"):
        return None
    return {"max": value["max"], "delay": 60 if value.get("delay") is None else value["delay"],
            "backoff": 2 if value.get("backoff") is None else value["backoff"]}


def missing_for_create(want):
    """What a new schedule lacks, as a message, or None."""
    missing = []
    if not want.get("schedule_type"):
        missing.append("schedule_type and schedule_entry")
    if not want.get("action") and not want.get("script_id"):
        missing.append("action or script")
    if not want.get("machines_per_cloud") and not want.get("selectors"):
        missing.append("machines, machines_per_cloud or selectors")
    return ", ".join(missing) or None


def creation_body(name, want):
    """The POST body of a new schedule: the managed fields that are set."""
    body = {k: v for k, v in want.items() if v is not None}
    body["name"] = name
    return body


def find_schedule(client, name):
    """The schedule named `name` in the token's org, or None: one GET."""
    return client.find_one("schedules", "name", name)


def ensure(client, params, check_mode):
    """Bring the schedule to the requested state; return the module's result dict."""
    name = params["name"]
    current = find_schedule(client, name)
    if params["state"] == "absent":
        if current is None:
            return dict(changed=False, schedule=None, changed_fields=[], diff=dict(before={}, after={}))
        if not check_mode:
            client.delete("schedules/" + quote_id(current["id"]))
        return dict(changed=True, schedule=None, changed_fields=["state"],
                    diff=dict(before=current, after={}))

    want = desired_fields(params, current, Resolver(client, current))
    if current is None:
        missing = missing_for_create(want)
        if missing:
            raise CloudcronError("schedule '%s' does not exist; to create it give %s" % (name, missing))
        body = creation_body(name, want)
        fields = sorted(body)
        created = dict(body) if check_mode else client.post("schedules", body)
        return dict(changed=True, schedule=created, changed_fields=fields, diff=diff_of(fields, {}, created))

    fields = changed_fields(want, current)
    if not fields:
        return dict(changed=False, schedule=current, changed_fields=[], diff=dict(before={}, after={}))
    patch = {k: want[k] for k in fields}
    if "schedule_entry" in patch or "schedule_type" in patch:
        # The service reads an entry by its type: the two always travel together.
        patch["schedule_type"] = want["schedule_type"]
        patch["schedule_entry"] = want["schedule_entry"]
    if check_mode:
        after = dict(current, **patch)
    else:
        after = client.patch("schedules/" + quote_id(current["id"]), patch)
    return dict(changed=True, schedule=after, changed_fields=fields, diff=diff_of(fields, current, after))


def argument_spec():
    """The module's options."""
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        description=dict(type="str"),
        action=dict(type="str", choices=["start", "stop", "shutdown", "reboot", "destroy"]),
        script=dict(type="str"),
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
    )
    return spec


def main():
    """Run the module."""
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("action", "script"), ("machines", "machines_per_cloud")],
        required_together=[("schedule_type", "schedule_entry")],
        supports_check_mode=True,
    )
    try:
        client = CloudcronClient.from_params(module.params)
        result = ensure(client, module.params, module.check_mode)
    except CloudcronError as exc:
        module.fail_json(msg=exc.message, status=exc.status)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
