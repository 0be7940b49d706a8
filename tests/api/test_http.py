"""HTTP behaviour: bodies read as JSON whatever the Content-Type, malformed and oversized bodies, JSON errors
for every failure (never a 500, even for wrong types in every field), and the OpenAPI description and its page."""
from __future__ import annotations

import json
import re
from urllib.parse import urljoin

import pytest

from web.schemas import ScheduleIn

# ------------------------------------------------------------------ bodies


def test_the_body_is_json_whatever_the_content_type(api, schedule_body):
    # The seed's `curl -d '{...}'` sends application/x-www-form-urlencoded.
    for i, ctype in enumerate(["application/x-www-form-urlencoded", "text/plain", None]):
        headers = {"Content-Type": ctype} if ctype else {}
        status, body, _ = api.call("POST", "schedules", raw=json.dumps(schedule_body(name=f"s{i}")), headers=headers)
        assert status == 200, (ctype, body)
        assert body["name"] == f"s{i}"


def test_an_edit_body_is_json_whatever_the_content_type(api, schedule):
    status, body, _ = api.call("POST", f"schedules/{schedule['id']}", raw=json.dumps({"description": "via curl -d"}),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and body["description"] == "via curl -d"


@pytest.mark.parametrize("method, path", [("POST", "schedules"), ("PATCH", "schedules/{id}"), ("POST", "schedules/preview"),
                                          ("POST", "clouds"), ("POST", "keys"), ("POST", "scripts")])
def test_a_malformed_body_is_a_400(api, schedule, method, path):
    for raw in ("{", "name=x&action=stop", "{'name': 'x'}", "\xff\xfe", "[1, 2]", "\"text\"", "null", "42", "{} {}"):
        status, body, _ = api.call(method, path.format(id=schedule["id"]), raw=raw.encode("latin-1"))
        assert status == 400 and body["error"].startswith("body:"), (raw, body)


def test_a_deeply_nested_body_is_a_400(api):
    status, body, _ = api.call("POST", "schedules", raw=b"[" * 100_000)
    assert status == 400 and body["error"].startswith("body:")


def test_a_body_over_one_mib_is_a_413(api, schedule):
    big = json.dumps({"name": "x", "description": "d" * (1024 * 1024)})
    for method, path in [("POST", "schedules"), ("PATCH", f"schedules/{schedule['id']}"), ("POST", "clouds"),
                         ("POST", "schedules/preview")]:
        status, body, _ = api.call(method, path, raw=big)
        assert status == 413 and "error" in body, path


def test_a_body_just_under_one_mib_is_read(api, schedule_body):
    body = schedule_body()
    body["description"] = ""
    pad = 1024 * 1024 - len(json.dumps(body)) - 10
    raw = json.dumps(body).replace('"description": ""', '"description": ""' + " " * pad)
    assert len(raw) < 1024 * 1024
    assert api.call("POST", "schedules", raw=raw)[0] == 200


def test_an_unknown_route_is_a_404_json_error(api):
    for path in ("/api/v1/nope", "/api/v1/schedules/a/b/c", "/api/v2/schedules", "/"):
        for token in (api.token, None):
            status, body, resp = api.call("GET", path, headers={"Authorization": token})
            assert status == 404 and resp.is_json and "error" in body, path


def test_a_wrong_method_is_a_405_json_error(api):
    status, body, resp = api.call("DELETE", "schedules")
    assert status == 405 and resp.is_json and "error" in body


# ------------------------------------------------------------------ wrong types in every field, never a 500

WRONG = {
    "name": [5, True, [], {}, "x" * 256],
    "description": [5, ["d"], {"d": 1}, "d" * 2001],
    "action": ["explode", 5, ["stop"], True],
    "script_id": [5, ["a"], {}, "s" * 256],
    "params": [5, ["-v"], {}],
    "machines_per_cloud": ["abc", 5, {}, [["c"]], [[1, 2]], [["c", "m", "x"]], ["cm"], [None]],
    "selectors": ["x", 5, [5], [{"type": "nope"}], [{"type": "machines"}], [{"type": "tags", "include": "env"}]],
    "schedule_type": ["weekly", 5, True, ["interval"]],
    "schedule_entry": [5, [], True, "not json", {"every": "2", "period": "minutes"}, {"every": 2, "period": 5}],
    "enabled": ["yes", 1, "true", []],
    "run_immediately": ["true", 0, {}],
    "start_after": ["tomorrow", True, {}, [], "2030-13-45 99:99:99", 1e300, "9999-12-31T23:59:59-05:00"],
    "expires": ["never", False, {"at": 1}, [2030], "2030-02-30"],
    "max_run_count": [0, -1, "3", 1.5, True, [3]],
    "timezone": ["Mars/Olympus", 5, "x" * 65, "../../etc/passwd", []],
    "misfire_grace": [-1, "x", 1.5, 10**12],
    "concurrency": ["sometimes", 5, True],
    "timeout": [0, "x", 86400 * 8, 2.5],
    "cronjob_type": ["weekly", 5],
    "cronjob_entry": [5, "not json"],
    "task_enabled": ["yes", 1],
}
CANONICAL = {"cronjob_type": "schedule_type", "cronjob_entry": "schedule_entry", "task_enabled": "enabled"}


def named(error: str, field: str) -> bool:
    """Whether an error message is about `field` (or the name it is an alias of)."""
    head = re.split(r"[:. ]", error, maxsplit=1)[0]
    return head in (field, CANONICAL.get(field))


@pytest.mark.parametrize("field", sorted(WRONG))
def test_a_wrong_value_in_any_field_is_a_400_naming_it(api, schedule_body, schedule, field):
    for value in WRONG[field]:
        body = {**schedule_body(name="fuzz"), field: value}
        if field in CANONICAL:
            body.pop(CANONICAL[field], None)
        status, answer, _ = api.call("POST", "schedules", raw=json.dumps(body))
        assert status == 400 and named(answer["error"], field), ("create", field, value, status, answer)
        status, answer, _ = api.call("PATCH", f"schedules/{schedule['id']}", raw=json.dumps({field: value}))
        assert status == 400 and named(answer["error"], field), ("edit", field, value, status, answer)
        preview = {"schedule_type": "interval", "schedule_entry": {"every": 1, "period": "hours"}}
        preview.pop(CANONICAL.get(field), None)
        status, answer, _ = api.call("POST", "schedules/preview", raw=json.dumps({**preview, field: value}))
        assert status == 400 and named(answer["error"], field), ("preview", field, value, status, answer)
    assert api.get(f"schedules/{schedule['id']}")[1] == schedule


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_huge_max_run_count_is_a_400(api, schedule, schedule_body, method):
    path, body = ("schedules", schedule_body(name="huge", max_run_count=10**30)) if method == "POST" else \
        (f"schedules/{schedule['id']}", {"max_run_count": 10**30})
    status, answer, _ = api.call(method, path, body)
    assert status == 400 and answer["error"].startswith("max_run_count:")


RESOURCE_WRONG = {
    "clouds": {"title": [5, "t" * 256], "provider": [5, "", "nope"], "credentials": ["k", [1]], "options": ["o", [1]]},
    "keys": {"name": [5, ""], "generate": ["yes", 1], "private": [5, ["k"]]},
    "scripts": {"name": [5, {}], "description": [5], "script": [5, []], "exec_type": ["python", 5]},
    "machines": {"name": [5], "host": [5, "h" * 256], "port": [0, 70000, "22", 2.5], "ssh_user": [5], "key_id": [5, "nokey"],
                 "tags": ["env", {"env": 1}]},
}
RESOURCE_VALID = {"clouds": {"title": "t", "provider": "other"}, "keys": {"name": "k", "generate": True},
                  "scripts": {"name": "s", "script": "x"}, "machines": {"name": "m", "host": "h"}}


@pytest.mark.parametrize("collection", sorted(RESOURCE_WRONG))
def test_a_wrong_value_in_any_resource_field_is_a_400_naming_it(api, cloud, collection):
    path = f"clouds/{cloud['id']}/machines" if collection == "machines" else collection
    for field, values in RESOURCE_WRONG[collection].items():
        for value in values:
            body = {**RESOURCE_VALID[collection], field: value}
            if field == "private":
                body.pop("generate")
            status, answer, _ = api.call("POST", path, raw=json.dumps(body))
            assert status == 400 and named(answer["error"], field), (field, value, status, answer)


# ------------------------------------------------------------------ OpenAPI


def test_the_openapi_description_is_served_without_a_token(api):
    status, doc, resp = api.call("GET", "openapi.json", headers={"Authorization": None})
    assert status == 200 and resp.is_json
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] and doc["info"]["version"]
    for path in ("/schedules", "/schedules/{id}", "/schedules/preview", "/clouds", "/keys", "/scripts"):
        assert path in doc["paths"], path
    assert set(doc["paths"]["/schedules/{id}"]) >= {"get", "patch", "put", "post", "delete"}
    for operations in doc["paths"].values():
        for op in operations.values():
            assert "200" in op["responses"]


def test_the_openapi_description_holds_every_schedulein_field(api):
    doc = api.get("openapi.json")[1]
    schema = doc["components"]["schemas"]["ScheduleIn"]
    # Every field, and Mist's legacy names of three of them (one name per field: the `not` says so).
    assert set(schema["properties"]) == set(ScheduleIn.model_fields) | {"cronjob_type", "cronjob_entry", "task_enabled"}
    assert doc["paths"]["/schedules/{id}"]["patch"]["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/ScheduleIn"}
    create = doc["paths"]["/schedules"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create == {"$ref": "#/components/schemas/ScheduleInCreate"}
    created = doc["components"]["schemas"]["ScheduleInCreate"]
    assert created["required"] == ["name"]
    # The timing fields are required by either name (schemathesis found a body with cronjob_type refused by the
    # schema and accepted by the service, rightly).
    assert created["allOf"] == [{"anyOf": [{"required": ["schedule_type"]}, {"required": ["cronjob_type"]}]},
                                {"anyOf": [{"required": ["schedule_entry"]}, {"required": ["cronjob_entry"]}]}]
    assert "required" not in doc["components"]["schemas"]["PreviewInCreate"]


def test_every_api_route_is_in_the_openapi_description(api, app):
    doc = api.get("openapi.json")[1]
    documented = {(re.sub(r"\{[^}]+\}", "{}", path), method) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint in ("api.meta.openapi_json", "api.meta.openapi_docs"):
            continue
        path = re.sub(r"<[^>]+>", "{}", rule.rule.removeprefix("/api/v1"))
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (method, rule.rule)


def test_the_openapi_description_holds_the_calendar_entry_kinds(api):
    doc = api.get("openapi.json")[1]
    entries = doc["components"]["schemas"]["CalendarIn"]["properties"]["entries"]
    entries, empty = entries["anyOf"]  # a list of entries, or "" ("not set", as every field takes)
    assert empty == {"type": "string", "enum": [""]}
    kinds = [next(iter(option["properties"])) for option in entries["items"]["oneOf"]]
    assert kinds == ["date", "from", "yearly", "weekly", "holidays", "ical"]


def test_every_reference_in_the_openapi_description_resolves(api):
    doc = api.get("openapi.json")[1]
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(doc)))
    assert refs
    for ref in refs:
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]


def test_the_openapi_description_passes_a_spec_validator(api):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(api.get("openapi.json")[1])


def test_the_docs_page_renders_the_description_with_served_assets(api):
    status, _, resp = api.call("GET", "docs", headers={"Authorization": None})
    assert status == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
    assert "openapi.json" in html
    for asset in assets:
        url = urljoin("/api/v1/docs", asset)
        status, _, served = api.call("GET", url, headers={"Authorization": None})
        assert status == 200 and len(served.get_data()) > 1000, url


def test_the_docs_assets_do_not_escape_their_directory(api):
    status, _, _ = api.call("GET", "/api/v1/docs/static/../../../web/config.py", headers={"Authorization": None})
    assert status == 404


def test_a_405_and_options_name_the_methods_of_the_route_in_allow(api):
    status, body, resp = api.call("TRACE", "scripts")
    assert status == 405 and set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert "allowed: " in body["error"]
    # /schedules/pause also fits /schedules/<id>: Allow names only the bulk pause's own method.
    status, _, resp = api.call("OPTIONS", "schedules/pause")
    assert status == 200 and resp.headers["Allow"] == "POST, OPTIONS"
    status, _, resp = api.call("OPTIONS", "calendars")
    assert resp.headers["Allow"] == "GET, HEAD, POST, OPTIONS"


def test_each_create_links_to_the_operations_taking_its_id(api):
    doc = api.get("openapi.json")[1]
    links = doc["paths"]["/schedules"]["post"]["responses"]["200"]["links"]
    assert links["delete_schedules_id"] == {"operationId": "delete_schedules_id", "parameters": {"id": "$response.body#/id"}}
    assert {"get_schedules_id_runs", "post_schedules_id_run", "post_schedules_id_pause"} <= set(links)
    applied = doc["paths"]["/schedules/by-name/{name}"]["put"]["responses"]["201"]["links"]
    assert applied["get_schedules_id"]["parameters"] == {"id": "$response.body#/schedule/id"}
    ops = {op["operationId"] for operations in doc["paths"].values() for op in operations.values()}
    for operations in doc["paths"].values():
        for op in operations.values():
            for status in ("200", "201"):
                for link in op["responses"].get(status, {}).get("links", {}).values():
                    assert link["operationId"] in ops
            assert "401" in op["responses"]


def test_a_locked_sqlite_database_is_a_503_and_a_statement_fault_stays_a_500(api, monkeypatch):
    """Busy or unreachable is a condition that passes (503, Retry-After); a missing table is a fault (500)."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from web.api import schedules as schedules_api

    def failing(message):
        def list_schedules(*_args, **_kwargs):
            raise OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))
        return list_schedules

    monkeypatch.setattr(schedules_api, "list_response", failing("database is locked"))
    status, body, resp = api.call("GET", "/api/v1/schedules")
    assert status == 503 and resp.headers["Retry-After"] == "5" and "cannot be reached" in body["error"]
    monkeypatch.setattr(schedules_api, "list_response", failing("no such table: schedules"))
    status, body, _ = api.call("GET", "/api/v1/schedules")
    assert status == 500 and body == {"error": "internal error; see the service log"}
