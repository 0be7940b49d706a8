"""The schedule form: from a stored schedule to the form's strings, and from a posted form to the
fields the API would have received, so the console writes through the same parse_fields/store path.

Only what a person changed is sent on an edit (the form's value differs from the stored one's),
exactly as a PATCH with those fields: an unchanged `expires` that has since passed is not
re-checked, as the API does not re-check values a request does not send.
"""
from __future__ import annotations

from zoneinfo import ZoneInfo

from ..timemath import CRONTAB_FIELDS, parse_instant

ACTIONS = ("start", "stop", "reboot", "destroy")
PERIODS = ("days", "hours", "minutes", "seconds")
TYPES = ("interval", "crontab", "one_off")
CONCURRENCY = ("forbid", "allow")
# Plain fields: form name = API field name.
TEXT_FIELDS = ("name", "description", "params", "timezone", "concurrency")
INT_FIELDS = ("max_run_count", "misfire_grace", "timeout")
DATE_FIELDS = ("start_after", "expires")
ENTRY_FIELDS = ("every", "period", *CRONTAB_FIELDS, "one_off")
LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S"  # what <input type="datetime-local" step="1"> sends and shows


def _local(dt, tz: str) -> str:
    return "" if dt is None else dt.astimezone(ZoneInfo(tz or "UTC")).strftime(LOCAL_FORMAT)


def initial(schedule=None) -> dict:
    """The form's values (all strings, targets a list of "cloud_id machine_id") for a stored schedule or a new one."""
    if schedule is None:
        return {"name": "", "description": "", "kind": "action", "action": "stop", "script_id": "", "params": "",
                "targets": [], "schedule_type": "interval", "every": "1", "period": "days",
                **{f: "*" for f in CRONTAB_FIELDS}, "minute": "0", "hour": "2", "one_off": "",
                "timezone": "UTC", "start_after": "", "expires": "", "max_run_count": "", "misfire_grace": "300",
                "concurrency": "forbid", "timeout": "3600", "enabled": "on", "run_immediately": ""}
    s = schedule
    tz = s.timezone or "UTC"
    values = {
        "name": s.name, "description": s.description or "", "kind": "script" if s.script_id else "action",
        "action": s.action or "", "script_id": s.script_id or "", "params": s.params or "",
        "targets": [f"{c} {m}" for c, m in s.machines_per_cloud or []], "schedule_type": s.schedule_type,
        "every": "", "period": "days", **{f: "*" for f in CRONTAB_FIELDS}, "one_off": "", "timezone": tz,
        "start_after": _local(s.start_after, tz), "expires": _local(s.expires, tz),
        "max_run_count": "" if s.max_run_count is None else str(s.max_run_count),
        "misfire_grace": str(s.misfire_grace), "concurrency": s.concurrency, "timeout": str(s.timeout),
        "enabled": "on" if s.enabled else "", "run_immediately": "on" if s.run_immediately else "",
    }
    if s.schedule_type == "interval":
        values.update(every=str(s.schedule_entry["every"]), period=s.schedule_entry["period"])
    elif s.schedule_type == "crontab":
        values.update({f: str(s.schedule_entry.get(f, "*")) for f in CRONTAB_FIELDS})
    else:
        values["one_off"] = _local(parse_instant(s.schedule_entry, "UTC"), tz)
    return values


def posted(form) -> dict:
    """A posted form's values in the shape initial() gives (missing checkboxes are "")."""
    values = {k: (form.get(k) or "").strip() for k in initial() if k != "targets"}
    values["targets"] = [t for t in form.getlist("targets") if t.strip()]
    for box in ("enabled", "run_immediately"):
        values[box] = "on" if form.get(box) else ""
    return values


def _number(text: str):
    """An integer when the text is one; otherwise the text itself, so the API's type rule names the field."""
    try:
        return int(text)
    except ValueError:
        return text


def _pairs(targets: list[str]) -> list[list[str]]:
    return [t.split(" ", 1) if " " in t else [t, ""] for t in targets]


def _entry(values: dict):
    kind = values["schedule_type"]
    if kind == "interval":
        return {"every": _number(values["every"]) if values["every"] else None, "period": values["period"] or None}
    if kind == "crontab":
        return {f: values[f] for f in CRONTAB_FIELDS}
    return values["one_off"] or None


def to_fields(values: dict, before: dict | None = None) -> dict:
    """The API body the form stands for: every field for a new schedule, only the changed ones against `before`.

    The result goes through schedules.parse_fields like a JSON body, so each error reads as the API's.
    """
    def changed(*names: str) -> bool:
        return before is None or any(values[n] != before[n] for n in names)

    body: dict = {}
    for name in TEXT_FIELDS + DATE_FIELDS:
        if changed(name):
            body[name] = values[name] or None
    for name in INT_FIELDS:
        if changed(name):
            body[name] = _number(values[name]) if values[name] else None
    if changed("enabled"):
        body["enabled"] = values["enabled"] == "on"
    if before is None:
        body["run_immediately"] = values["run_immediately"] == "on"
    if changed("kind", "action", "script_id"):
        script = values["kind"] == "script"
        body["action"] = None if script else (values["action"] or None)
        body["script_id"] = (values["script_id"] or None) if script else None
    if values["kind"] != "script" and changed("kind"):
        body["params"] = None
    if before is None or sorted(values["targets"]) != sorted(before["targets"]):
        body["machines_per_cloud"] = _pairs(values["targets"])
    kind = values["schedule_type"]
    entry_names = {"interval": ("every", "period"), "crontab": CRONTAB_FIELDS, "one_off": ("one_off",)}.get(kind, ())
    if changed("schedule_type", *entry_names):
        body["schedule_type"] = kind or None
        body["schedule_entry"] = _entry(values) if kind in TYPES else None
    return body


# Where an API error is shown: the field named before the colon ("expires: ... is not in the future").
_ERROR_FIELD = {
    "action": "action", "script_id": "script_id", "machines_per_cloud": "targets", "selectors": "targets",
    "schedule_type": "schedule_type", "cronjob_type": "schedule_type",
    "schedule_entry.every": "every", "schedule_entry.period": "period",
    **{f"schedule_entry.{f}": f for f in CRONTAB_FIELDS},
}


def error_field(message: str, values: dict) -> str | None:
    """The form field an API error message names, or None when it names none of the form's fields."""
    head = message.split(":", 1)[0]
    first = head.split(",")[0].split(" (")[0].strip()
    if first.startswith("machines_per_cloud") or first.startswith("selectors"):
        return "targets"
    if first in _ERROR_FIELD:
        return _ERROR_FIELD[first]
    if first.startswith("schedule_entry"):
        return {"interval": "every", "crontab": "minute", "one_off": "one_off"}.get(values.get("schedule_type"))
    if first == "params" or first in TEXT_FIELDS or first in INT_FIELDS or first in DATE_FIELDS or first in (
            "name", "enabled", "run_immediately"):
        return first
    return None
