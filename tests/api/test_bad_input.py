"""Input that cannot be stored or passed on is a 400 naming the field and the rule, never a 500, on SQLite and
PostgreSQL alike: NUL and lone surrogates in any string, path or query; NaN and Infinity; fire times past
year 9999; huge integers; machine addresses and users that ssh would read as options."""
from __future__ import annotations

import json

import pytest

from web.models import Cloud, Key, Machine, Schedule, Script

NUL, SURROGATE = "a\x00b", "caf\udce9"


@pytest.fixture
def world(backend_api):
    """One of each resource on the backend's org: (client, ids)."""
    api = backend_api
    _, cloud = api.post("clouds", {"title": "lab", "provider": "other"})
    _, machine = api.post(f"clouds/{cloud['id']}/machines", {"name": "web1", "host": "127.0.0.1"})
    _, key = api.post("keys", {"name": "k", "generate": True})
    _, script = api.post("scripts", {"name": "s", "script": "#!/bin/sh\ntrue\n"})
    status, schedule = api.post("schedules", schedule_of(cloud["id"]))
    assert status == 200, schedule
    return api, {"cloud": cloud["id"], "machine": machine["id"], "key": key["id"], "script": script["id"],
                 "schedule": schedule["id"]}


def schedule_of(cloud_id, **fields):
    return {"name": "nightly", "action": "stop", "machines_per_cloud": [[cloud_id, "i-1"]],
            "schedule_type": "interval", "schedule_entry": {"every": 2, "period": "minutes"}, **fields}


def send(api, method, path, body):
    """Send `body` as JSON text exactly as json.dumps writes it (lone surrogates as \\udce9 escapes)."""
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    status, answer, _ = api.call(method, path, raw=raw)
    return status, answer


def put(body: dict, dotted: str, value) -> dict:
    """A deep copy of `body` with the value at a dotted path (list indexes as numbers) replaced."""
    body = json.loads(json.dumps(body))
    *parents, last = dotted.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


def counts(api) -> dict:
    with api.state.db.session() as session:
        return {model.__name__: session.query(model).count() for model in (Cloud, Machine, Key, Script, Schedule)}


# ------------------------------------------------------------------ a crontab that fires only after year 9999

LEAP_DAY = {"schedule_type": "crontab", "start_after": "9999-03-01",
            "schedule_entry": {"minute": "0", "hour": "0", "day_of_month": "29", "month_of_year": "2"}}


def test_a_crontab_whose_next_fire_is_after_year_9999_is_a_400_in_create_edit_and_preview(world):
    api, ids = world
    before = counts(api)
    status, answer = api.post("schedules", {**schedule_of(ids["cloud"], name="leap"), **LEAP_DAY})
    assert status == 400 and answer["error"].startswith("schedule_entry:") and "9999" in answer["error"], answer
    status, answer = api.post("schedules/preview", LEAP_DAY)
    assert status == 400 and answer["error"].startswith("schedule_entry:"), answer
    stored = api.get(f"schedules/{ids['schedule']}")[1]
    status, answer = api.patch(f"schedules/{ids['schedule']}", LEAP_DAY)
    assert status == 400 and answer["error"].startswith("schedule_entry:"), answer
    assert api.get(f"schedules/{ids['schedule']}")[1] == stored
    assert counts(api) == before


def test_a_crontab_that_still_fires_in_year_9999_is_accepted(world):
    api, ids = world
    body = {**LEAP_DAY, "start_after": "9999-01-01", "schedule_entry": {"minute": "0", "hour": "0", "day_of_month": "28",
                                                                       "month_of_year": "2"}}
    status, answer = api.post("schedules", {**schedule_of(ids["cloud"], name="late"), **body})
    assert status == 200 and answer["next_run_at"] == "9999-02-28T00:00:00Z", answer
    status, answer = api.post("schedules/preview", {**body, "count": 3})
    assert status == 200 and answer["next_run_times"] == ["9999-02-28T00:00:00Z"], answer


# ------------------------------------------------------------------ NUL and lone surrogates: paths and queries

PATHS = [
    ("GET", "schedules/{x}"), ("PATCH", "schedules/{x}"), ("PUT", "schedules/{x}"), ("POST", "schedules/{x}"),
    ("DELETE", "schedules/{x}"), ("POST", "schedules/{x}/run"), ("GET", "schedules/{x}/runs"), ("GET", "runs/{x}"),
    ("GET", "clouds/{x}"), ("PATCH", "clouds/{x}"), ("DELETE", "clouds/{x}"), ("GET", "clouds/{x}/machines"),
    ("POST", "clouds/{x}/machines"), ("GET", "clouds/{cloud}/machines/{x}"), ("PATCH", "clouds/{cloud}/machines/{x}"),
    ("DELETE", "clouds/{cloud}/machines/{x}"), ("GET", "keys/{x}"), ("PATCH", "keys/{x}"), ("DELETE", "keys/{x}"),
    ("GET", "scripts/{x}"), ("PATCH", "scripts/{x}"), ("DELETE", "scripts/{x}"), ("GET", "nowhere/{x}"),
]


def test_nul_in_any_path_segment_is_a_400(world):
    api, ids = world
    before = counts(api)
    for method, template in PATHS:
        for segment in ("%00", "a%00b", ids["schedule"] + "%00"):
            path = template.format(x=segment, cloud=ids["cloud"])
            status, answer, _ = api.call(method, path, raw=b"{}" if method in ("POST", "PATCH", "PUT") else None)
            assert status == 400 and answer["error"].startswith("path: ") and "NUL" in answer["error"], \
                (method, path, status, answer)
    assert counts(api) == before


QUERIES = ["schedules?name={v}", "clouds?title={v}", "keys?name={v}", "scripts?name={v}", "logs?schedule_id={v}",
           "logs?run_id={v}", "logs?event_type={v}", "logs?start={v}", "schedules?limit={v}", "schedules?offset={v}",
           "schedules/{schedule}/runs?limit={v}", "clouds/{cloud}/machines?limit={v}"]


def test_nul_in_any_query_value_or_name_is_a_400_naming_it(world):
    api, ids = world
    for template in QUERIES:
        path = template.format(v="a%00b", **ids)
        name = path.split("?")[1].split("=")[0]
        status, answer = api.get(path)
        assert status == 400 and answer["error"].startswith(f"{name}: ") and "NUL" in answer["error"], (path, answer)
    status, answer = api.get("schedules?na%00me=x")
    assert status == 400 and answer["error"].startswith("query: "), answer


# ------------------------------------------------------------------ NUL and lone surrogates in bodies

def body_cases(ids):
    """(method, path, a valid body, dotted field paths of strings in it) for every body the API reads."""
    sched = schedule_of(ids["cloud"], name="other", description="d", timezone="UTC", start_after="2030-01-01",
                        expires="2031-01-01", selectors=[{"type": "tags", "include": {"env": "dev"}}])
    cron = schedule_of(ids["cloud"], name="cron", schedule_type="crontab", schedule_entry={"minute": "5"})
    script_sched = {"name": "scripted", "script_id": ids["script"], "params": "-v",
                    "machines_per_cloud": [[ids["cloud"], "i-1"]], "schedule_type": "one_off",
                    "schedule_entry": "2030-01-01 00:00:00"}
    fields = ["name", "description", "action", "timezone", "start_after", "expires", "schedule_type",
              "machines_per_cloud.0.0", "machines_per_cloud.0.1", "selectors.0.type", "selectors.0.include.env",
              "schedule_entry.period"]
    mid = f"clouds/{ids['cloud']}/machines"
    return [
        ("POST", "schedules", sched, fields),
        ("PATCH", f"schedules/{ids['schedule']}", sched, fields),
        ("POST", "schedules", cron, ["schedule_entry.minute"]),
        ("POST", "schedules", script_sched, ["script_id", "params", "schedule_entry"]),
        ("POST", "schedules/preview", {**cron, "after": "2030-01-01"}, ["after", "timezone", "schedule_entry.minute"]),
        ("POST", "clouds", {"title": "aws", "provider": "ec2", "credentials": {"key": "k", "secret": "s"},
                            "options": {"region": "us-east-1"}},
         ["title", "provider", "credentials.key", "credentials.secret", "options.region"]),
        ("PATCH", f"clouds/{ids['cloud']}", {"title": "lab2", "credentials": {"secret": "s"}}, ["title", "credentials.secret"]),
        ("POST", mid, {"name": "m2", "host": "h", "ssh_user": "u", "machine_id": "m2", "key_id": ids["key"],
                       "tags": {"env": "dev"}}, ["name", "host", "ssh_user", "machine_id", "key_id", "tags.env"]),
        ("PATCH", f"{mid}/{ids['machine']}", {"host": "h", "ssh_user": "u"}, ["host", "ssh_user"]),
        ("POST", "keys", {"name": "k2", "private": "-----BEGIN"}, ["name", "private"]),
        ("PATCH", f"keys/{ids['key']}", {"name": "k3"}, ["name"]),
        ("POST", "scripts", {"name": "s2", "script": "echo", "description": "d", "exec_type": "executable"},
         ["name", "script", "description", "exec_type"]),
        ("PATCH", f"scripts/{ids['script']}", {"script": "echo"}, ["script"]),
    ]


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
def test_nul_or_a_lone_surrogate_in_any_body_string_is_a_400_naming_the_field(world, bad):
    api, ids = world
    before = counts(api)
    rule = "NUL" if bad == NUL else "lone surrogate"
    for method, path, body, fields in body_cases(ids):
        for field in fields:
            status, answer = send(api, method, path, put(body, field, bad))
            assert status == 400 and answer["error"].startswith(f"{field}: ") and rule in answer["error"], \
                (method, path, field, status, answer)
    assert counts(api) == before


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
def test_nul_or_a_lone_surrogate_in_a_key_of_a_body_object_is_a_400(world, bad):
    api, ids = world
    cases = [("POST", f"clouds/{ids['cloud']}/machines", {"name": "m3", "host": "h", "tags": {bad: "x"}}, "tags"),
             ("POST", "clouds", {"title": "t", "provider": "other", "options": {bad: 1}}, "options"),
             ("POST", "schedules", schedule_of(ids["cloud"], name="k", schedule_entry={bad: 2}), "schedule_entry"),
             ("POST", "schedules", {**schedule_of(ids["cloud"], name="k"), bad: 1}, "body")]
    for method, path, body, field in cases:
        status, answer = send(api, method, path, body)
        assert status == 400 and answer["error"].startswith(f"{field}: every key "), (path, answer)


def test_a_schedule_entry_given_as_json_text_follows_the_same_rules(world):
    api, ids = world
    for entry, field in [('{"minute": "a\\u0000"}', "schedule_entry.minute"), ('{"every": NaN, "period": "hours"}',
                                                                              "schedule_entry.every")]:
        kind = "crontab" if "minute" in entry else "interval"
        status, answer = send(api, "POST", "schedules", schedule_of(ids["cloud"], name="j", schedule_type=kind,
                                                                   schedule_entry=entry))
        assert status == 400 and answer["error"].startswith(f"{field}: "), answer


# ------------------------------------------------------------------ NaN, Infinity, and numbers too large for a float

NUMBER_FIELDS = [
    ("POST", "schedules", "schedule_entry.every"), ("POST", "schedules", "max_run_count"),
    ("POST", "schedules", "misfire_grace"), ("POST", "schedules", "timeout"), ("POST", "schedules", "start_after"),
    ("POST", "schedules", "expires"), ("PATCH", "schedules/{schedule}", "timeout"),
    ("POST", "schedules/preview", "count"), ("POST", "schedules/preview", "after"),
    ("POST", "clouds", "options.port"), ("POST", "clouds", "credentials.project"),
    ("POST", "clouds/{cloud}/machines", "port"), ("PATCH", "clouds/{cloud}/machines/{machine}", "port"),
    ("POST", "scripts", "name"), ("POST", "keys", "generate"),
]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_nan_and_infinity_anywhere_in_a_body_are_a_400_naming_the_field(world, literal):
    api, ids = world
    before = counts(api)
    bodies = {"schedules": schedule_of(ids["cloud"], name="n"), "schedules/preview": schedule_of(ids["cloud"]),
              "clouds": {"title": "n", "provider": "other", "options": {}, "credentials": {}},
              "clouds/{cloud}/machines": {"name": "n", "host": "h"}, "scripts": {"script": "x"}, "keys": {"name": "n"}}
    for method, template, field in NUMBER_FIELDS:
        base = bodies.get(template, {})
        raw = json.dumps(put(base, field, "__NUMBER__")).replace('"__NUMBER__"', literal)
        status, answer = send(api, method, template.format(**ids), raw)
        assert status == 400 and answer["error"].startswith(f"{field}: {literal} is not a JSON number"), \
            (method, template, field, answer)
    assert counts(api) == before


# ------------------------------------------------------------------ huge integers

HUGE = [10**30, -10**30, 2**63, -2**63 - 1]


def test_huge_integers_in_bounded_fields_are_a_400_naming_the_field(world):
    api, ids = world
    before = counts(api)
    cases = [("POST", "schedules", schedule_of(ids["cloud"], name="h"),
              ["max_run_count", "misfire_grace", "timeout", "start_after", "expires", "schedule_entry.every"]),
             ("POST", "schedules", schedule_of(ids["cloud"], name="h", schedule_type="crontab",
                                               schedule_entry={"minute": 0}), ["schedule_entry.minute"]),
             ("POST", "schedules/preview", schedule_of(ids["cloud"]), ["count", "after"]),
             ("POST", f"clouds/{ids['cloud']}/machines", {"name": "h", "host": "h"}, ["port"]),
             ("PATCH", f"clouds/{ids['cloud']}/machines/{ids['machine']}", {}, ["port"])]
    for method, path, body, fields in cases:
        for field in fields:
            for value in HUGE:
                status, answer = send(api, method, path, put(body, field, value))
                assert status == 400 and answer["error"].startswith(field.split(".")[0]), (path, field, value, answer)
    for query in ("limit", "offset"):
        status, answer = api.get(f"schedules?{query}={10**30}")
        assert status == 400 and answer["error"].startswith(f"{query}: "), answer
    assert counts(api) == before


def test_huge_integers_in_free_form_driver_options_are_stored_not_a_500(world):
    api, _ = world
    status, cloud = api.post("clouds", {"title": "big", "provider": "other", "options": {"port": 10**30}})
    assert status == 200, cloud
    assert api.get(f"clouds/{cloud['id']}")[1]["options"] == {"port": 10**30}


# ------------------------------------------------------------------ machine addresses and users reach ssh

BAD_HOSTS = ["-oProxyCommand=touch /tmp/pwned", "-host", "-", "a b", "a\tb", "a\nb", " host", "host ", "host\x7f",
             "ho;st", "$(id)", "`id`", "a..b", ".", "[::1]", "fe80::1%-o x", "h" * 254, "host\u200b", "caf\u00e9.example"]
GOOD_HOSTS = ["web-1.example.com", "example.com.", "localhost", "my_host", "10.0.0.1", "::1", "2001:db8::7",
              "fe80::1%eth0", "a" * 63 + ".example"]
BAD_USERS = ["-oProxyCommand=x", "-root", "a b", "root;id", "a\nb", "$(id)", "u" * 65, "r\u00f6ot", ""]
GOOD_USERS = ["root", "ec2-user", "user@corp.example", "svc_1.x", "_apt"]


def test_a_machine_host_or_user_that_ssh_could_read_as_an_option_is_a_400(world):
    api, ids = world
    path = f"clouds/{ids['cloud']}/machines"
    before = api.get(f"{path}/{ids['machine']}")[1]
    for host in BAD_HOSTS:
        status, answer = send(api, "POST", path, {"name": "evil", "host": host})
        assert status == 400 and answer["error"].startswith("host: "), (host, answer)
        status, answer = send(api, "PATCH", f"{path}/{ids['machine']}", {"host": host})
        assert status == 400 and answer["error"].startswith("host: "), (host, answer)
    for user in BAD_USERS[:-1]:
        status, answer = send(api, "POST", path, {"name": "evil", "host": "h", "ssh_user": user})
        assert status == 400 and answer["error"].startswith("ssh_user: "), (user, answer)
        status, answer = send(api, "PATCH", f"{path}/{ids['machine']}", {"ssh_user": user})
        assert status == 400 and answer["error"].startswith("ssh_user: "), (user, answer)
    assert api.get(f"{path}/{ids['machine']}")[1] == before
    assert len(api.get(path)[1]) == 1


def test_host_names_ip_addresses_and_usual_user_names_are_accepted(world):
    api, ids = world
    path = f"clouds/{ids['cloud']}/machines"
    for i, host in enumerate(GOOD_HOSTS):
        status, answer = send(api, "POST", path, {"name": f"ok{i}", "host": host, "ssh_user": GOOD_USERS[i % len(GOOD_USERS)]})
        assert status == 200 and answer["host"] == host, (host, answer)
    for user in GOOD_USERS:
        status, answer = send(api, "PATCH", f"{path}/{ids['machine']}", {"ssh_user": user})
        assert status == 200 and answer["ssh_user"] == user, (user, answer)


@pytest.mark.parametrize("body", [" ", "\n", "\t \r\n"])
def test_a_body_of_white_space_alone_is_refused_as_not_json(api, body):
    """An empty body means no field given; white space alone is not a JSON document (found by schemathesis)."""
    status, calendar = api.post("calendars", {"name": "ws", "entries": []})
    assert status in (200, 201), calendar
    resp = api.flask.patch(f"/api/v1/calendars/{calendar['id']}", data=body,
                           headers={"Authorization": api.token, "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.get_json()["error"].startswith("body:"), resp.get_data(as_text=True)
