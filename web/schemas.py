"""Request schemas: they validate bodies and are the source of the OpenAPI description."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

from .validation import HOST_RULE, SSH_USER_RULE, is_host, is_ssh_user

Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ShortText = Annotated[str, StringConstraints(max_length=2000)]
LongText = Annotated[str, StringConstraints(max_length=512 * 1024)]
Instant = Annotated[
    Any,
    Field(
        json_schema_extra={
            "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}],
            "description": "'2016-3-24 17:20:00' (in the schedule's timezone), ISO 8601, or epoch seconds",
        }
    ),
]


def _host(value: str) -> str:
    if not is_host(value):
        raise PydanticCustomError("host", HOST_RULE)
    return value


def _ssh_user(value: str) -> str:
    if not is_ssh_user(value):
        raise PydanticCustomError("ssh_user", SSH_USER_RULE)
    return value


# Both reach ssh's command line on the worker.
Host = Annotated[str, StringConstraints(max_length=253), AfterValidator(_host)]
SshUser = Annotated[str, StringConstraints(max_length=64), AfterValidator(_ssh_user)]


class _In(BaseModel):
    # Unknown fields are rejected before validation with a clearer message; forbid is the backstop.
    model_config = ConfigDict(extra="forbid")


class MachinesSelector(_In):
    type: Literal["machines"]
    ids: Annotated[list[Id], Field(min_length=1, max_length=10000)]


class TagsSelector(_In):
    type: Literal["tags"]
    include: Annotated[dict[Annotated[str, StringConstraints(max_length=255)], Annotated[str, StringConstraints(max_length=255)]], Field(min_length=1)]


Selector = Annotated[Union[MachinesSelector, TagsSelector], Field(discriminator="type")]
CloudMachine = Annotated[list[Id], Field(min_length=2, max_length=2, description="[cloud_id, machine_id]")]


class ScheduleIn(_In):
    """A schedule as a client writes it (every field optional here: required ones are checked after merging)."""

    name: Name | None = None
    description: ShortText | None = None
    action: Literal["start", "stop", "shutdown", "reboot", "destroy"] | None = None
    script_id: Id | None = None
    params: ShortText | None = None
    machines_per_cloud: Annotated[list[CloudMachine], Field(max_length=10000)] | None = None
    selectors: Annotated[list[Selector], Field(max_length=100)] | None = None
    schedule_type: Literal["interval", "crontab", "one_off"] | None = None
    schedule_entry: Annotated[
        Any,
        Field(
            json_schema_extra={
                "oneOf": [{"type": "object"}, {"type": "string"}, {"type": "null"}],
                "description": "interval {every, period}, crontab {minute, hour, day_of_week, day_of_month, "
                "month_of_year}, or a one_off date; may also be a string holding JSON",
            }
        ),
    ] = None
    enabled: StrictBool | None = None
    run_immediately: StrictBool | None = None
    start_after: Instant = None
    expires: Instant = None
    max_run_count: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    misfire_grace: Annotated[StrictInt, Field(ge=0, le=86400 * 366)] | None = None
    concurrency: Literal["forbid", "allow"] | None = None
    timeout: Annotated[StrictInt, Field(ge=1, le=86400 * 7)] | None = None
    exclude_calendars: Annotated[list[Id], Field(max_length=20, description="ids of the org's calendars whose "
                                                 "entries exclude fire times")] | None = None
    jitter: Annotated[StrictInt, Field(ge=0, le=86400, description="seconds: each fire is delayed by a stable "
                                       "offset in [0, jitter)")] | None = None
    notify: Annotated[dict[str, Any], Field(json_schema_extra={
        "description": "who hears about its runs: {\"on\": [statuses], \"channels\": [channel ids or names], "
                       "\"after_retries\": true}; null: the org's default channels"})] | None = None
    retries: Annotated[dict[str, Any], Field(json_schema_extra={
        "description": "retries of the machines that failed for a transient reason, as attempts of the same run: "
                       "{\"max\": 0-10, \"delay\": seconds 0-3600 (default 60), \"backoff\": factor 1-10 "
                       "(default 2)}; retry n waits delay * backoff^(n-1); null: none"})] | None = None


class PreviewIn(ScheduleIn):
    """A schedule body (or just its timing fields), the instant to start from, and how many fire times."""

    after: Instant = None
    count: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None
    show_skipped: StrictBool | None = Field(default=None, description="also list the fire times that do not run "
                                            "(calendar, pause, skip_next) with the reason")


Note = Annotated[str, StringConstraints(max_length=2000)]


class PauseIn(_In):
    """Pause a schedule: no fire until `until` (null: until resumed), or skip its next `skip_next` fires."""

    until: Instant = None
    note: Note | None = None
    skip_next: Annotated[StrictInt, Field(ge=1, le=100000)] | None = None


TagMatch = dict[Annotated[str, StringConstraints(max_length=255)], Annotated[str, StringConstraints(max_length=255)]]


class BulkResumeIn(_In):
    """Which schedules a bulk pause or resume acts on: a name prefix, tags a target machine has, or both."""

    # "" means "not given", as everywhere in the API.
    name_prefix: Annotated[str, StringConstraints(max_length=255)] | None = None
    tags: Annotated[TagMatch, Field(min_length=1)] | None = None


class BulkPauseIn(BulkResumeIn, PauseIn):
    """A pause of every schedule matching name_prefix and/or tags."""


# Calendar entries: one model per kind. The API checks an entry against the model of its kind (told by its
# key), then checks dates, days and countries with messages naming the entry (web/calendars.py).
WeeklyPoint = Annotated[str, StringConstraints(min_length=1, max_length=32)]
ShortString = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class DateEntry(_In):
    date: ShortString = Field(description="YYYY-MM-DD: that whole day in the calendar's timezone")


class RangeEntry(_In):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: ShortString = Field(alias="from", description="YYYY-MM-DD (whole days) or 'YYYY-MM-DD HH:MM[:SS]'")
    to: ShortString = Field(description="YYYY-MM-DD (included) or 'YYYY-MM-DD HH:MM[:SS]' (excluded)")


class YearlyEntry(_In):
    yearly: ShortString = Field(description="MM-DD: that day every year")


class WeeklyWindow(_In):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: WeeklyPoint = Field(alias="from", description="day and time, e.g. 'fri 18:00'")
    to: WeeklyPoint = Field(description="day and time, e.g. 'mon 06:00' (excluded)")


class WeeklyEntry(_In):
    weekly: WeeklyWindow


class HolidaysSpec(_In):
    country: ShortString = Field(description="ISO 3166-1 code, e.g. 'GR'")
    subdivision: ShortString | None = Field(default=None, description="a subdivision code of the country, e.g. 'CA'")


class HolidaysEntry(_In):
    holidays: HolidaysSpec


class IcalEntry(_In):
    ical: Annotated[str, StringConstraints(min_length=1, max_length=512 * 1024)] = Field(
        description="the text of an iCalendar (.ics) file; its events (recurrences expanded) are excluded")


CALENDAR_ENTRY_MODELS = {"date": DateEntry, "from": RangeEntry, "yearly": YearlyEntry, "weekly": WeeklyEntry,
                         "holidays": HolidaysEntry, "ical": IcalEntry}


def _inline(schema: dict) -> dict:
    """A model's JSON schema with its $defs put in place, to embed where a $ref cannot point."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return walk(dict(defs[node["$ref"].rsplit("/", 1)[1]]))
        return {k: walk(v) for k, v in node.items()}

    return walk(schema)


CalendarEntry = Annotated[dict[str, Any], WithJsonSchema({
    "description": "one of: {date}, {from, to}, {yearly}, {weekly: {from, to}}, {holidays: {country, subdivision}}, "
                   "{ical}",
    "oneOf": [_inline(m.model_json_schema()) for m in CALENDAR_ENTRY_MODELS.values()]})]


class CalendarIn(_In):
    """A calendar: named, in a timezone, with entries that exclude time from the schedules naming it."""

    name: Name | None = None
    description: ShortText | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    entries: Annotated[list[CalendarEntry], Field(max_length=1000)] | None = None


class CloudIn(_In):
    title: Name | None = None
    provider: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    credentials: dict[str, Any] | None = Field(default=None, description="driver constructor arguments; write-only")
    options: dict[str, Any] | None = Field(default=None, description="extra libcloud driver arguments")


class MachineIn(_In):
    name: Name | None = None
    machine_id: Id | None = None
    host: Host | None = None
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    ssh_user: SshUser | None = None
    key_id: Id | None = None
    tags: dict[Annotated[str, StringConstraints(max_length=255)], Annotated[str, StringConstraints(max_length=255)]] | None = None


class KeyIn(_In):
    name: Name | None = None
    private: Annotated[str, StringConstraints(max_length=64 * 1024)] | None = Field(default=None, description="write-only")
    generate: StrictBool | None = None


class ScriptIn(_In):
    name: Name | None = None
    description: ShortText | None = None
    script: LongText | None = None
    exec_type: Literal["executable", "ansible"] | None = None


class TokenIn(_In):
    name: Name | None = None
