"""Ping, and the OpenAPI description generated from the request schemas, with a page that renders it."""
from __future__ import annotations

import functools

from apispec import APISpec
from flask import Response, jsonify, send_from_directory

from .. import __version__, db
from ..models import Org
from ..schemas import (BulkPauseIn, BulkResumeIn, CalendarIn, CloudIn, KeyIn, MachineIn, PauseIn, PreviewIn,
                       ScheduleIn, ScriptIn)
from . import bp, org_id


@bp.get("/ping")
def ping():
    org = db().get(Org, org_id())
    return jsonify({"ok": True, "org": org.name})


APPLY_ANSWER = "{changed, changed_fields, diff: {before, after}, dry_run, <resource>}; 201 when it created the resource"
# (path, method, summary, request schema or None, answer description)
ROUTES = [
    ("/ping", "get", "Check a token", None, "the token's org"),
    ("/schedules", "get", "List schedules (newest first; limit, offset, name; total in X-Total-Count)", None, "array of schedules"),
    ("/schedules", "post", "Create a schedule", ScheduleIn, "the schedule"),
    ("/schedules/preview", "post", "Preview the next fire times of a schedule body (show_skipped: also the "
     "excluded ones, with the calendar that excluded them)", PreviewIn, "{next_run_times: [...], skipped: [...]}"),
    ("/schedules/pause", "post", "Pause every schedule matching name_prefix and/or tags of its target machines",
     BulkPauseIn, "{count, ids}"),
    ("/schedules/resume", "post", "Resume every schedule matching name_prefix and/or tags of its target machines",
     BulkResumeIn, "{count, ids}"),
    ("/schedules/by-name/{name}", "put", "Apply a schedule's desired state: merged onto the stored one (or created), "
     "checked whole, compared on the server; ?dry_run=true writes nothing; run_immediately counts only at creation",
     ScheduleIn, APPLY_ANSWER),
    ("/schedules/{id}", "get", "Get a schedule", None, "the schedule"),
    ("/schedules/{id}", "patch", "Edit a schedule (fields merged, result checked as a whole)", ScheduleIn, "the schedule"),
    ("/schedules/{id}", "put", "Edit a schedule (same as PATCH)", ScheduleIn, "the schedule"),
    ("/schedules/{id}", "post", "Edit a schedule (same as PATCH, as Mist's examples do)", ScheduleIn, "the schedule"),
    ("/schedules/{id}", "delete", "Delete a schedule", None, "{deleted: id}"),
    ("/schedules/{id}/run", "post", "Start a run now", None, "the run"),
    ("/schedules/{id}/preview", "get", "The next fire times of a stored schedule, pause, skip_next and jitter "
     "included (?count, after, show_skipped)", None, "{next_run_times: [...], skipped: [...]}"),
    ("/schedules/{id}/pause", "post", "Pause until an instant (null: until resumed), or skip the next N fires",
     PauseIn, "the schedule"),
    ("/schedules/{id}/resume", "post", "End a pause and forget fires left to skip", None, "the schedule"),
    ("/schedules/{id}/runs", "get", "Runs of a schedule, newest first", None, "array of runs"),
    ("/runs/{id}", "get", "A run with its per-machine results", None, "the run"),
    ("/logs", "get", "Events (schedule_id, run_id, event_type, start, stop, limit)", None, "array of events"),
    ("/calendars", "get", "List calendars (name; total in X-Total-Count)", None, "array of calendars"),
    ("/calendars", "post", "Add a calendar: a timezone and entries that exclude time", CalendarIn, "the calendar"),
    ("/calendars/by-name/{name}", "put", "Apply a calendar's desired state (?dry_run=true writes nothing)", CalendarIn,
     APPLY_ANSWER),
    ("/calendars/{id}", "get", "Get a calendar", None, "the calendar"),
    ("/calendars/{id}", "patch", "Edit a calendar (the schedules excluding it are recomputed)", CalendarIn,
     "the calendar"),
    ("/calendars/{id}", "delete", "Delete a calendar (409 while a schedule excludes it)", None, "{deleted: id}"),
    ("/clouds", "get", "List clouds", None, "array of clouds"),
    ("/clouds", "post", "Add a cloud (credentials are write-only)", CloudIn, "the cloud"),
    ("/clouds/by-title/{title}", "put", "Apply a cloud's desired state (?dry_run=true writes nothing; credentials are "
     "sent on create, and on an existing cloud only with ?update_secrets=true)", CloudIn, APPLY_ANSWER),
    ("/clouds/{id}", "get", "Get a cloud", None, "the cloud"),
    ("/clouds/{id}", "patch", "Edit a cloud", CloudIn, "the cloud"),
    ("/clouds/{id}", "delete", "Delete a cloud", None, "{deleted: id}"),
    ("/clouds/{id}/machines", "get", "List a cloud's machines (read from the provider for libcloud clouds)", None, "array of machines"),
    ("/clouds/{id}/machines", "post", "Declare a machine of an 'other' cloud", MachineIn, "the machine"),
    ("/clouds/{cid}/machines/{id}", "get", "Get a machine", None, "the machine"),
    ("/clouds/{cid}/machines/{id}", "patch", "Set a machine's SSH overrides", MachineIn, "the machine"),
    ("/clouds/{cid}/machines/{id}", "delete", "Forget a machine", None, "{deleted: id}"),
    ("/keys", "get", "List SSH keys", None, "array of keys"),
    ("/keys", "post", "Add or generate an SSH key (private key is write-only)", KeyIn, "the key with its public half"),
    ("/keys/by-name/{name}", "put", "Apply a key's desired state (?dry_run=true writes nothing; the private key is "
     "used on create, and on an existing key only with ?update_secrets=true)", KeyIn, APPLY_ANSWER),
    ("/keys/{id}", "get", "Get a key", None, "the key"),
    ("/keys/{id}", "patch", "Edit a key", KeyIn, "the key"),
    ("/keys/{id}", "delete", "Delete a key", None, "{deleted: id}"),
    ("/scripts", "get", "List scripts", None, "array of scripts"),
    ("/scripts", "post", "Add a script", ScriptIn, "the script"),
    ("/scripts/by-name/{name}", "put", "Apply a script's desired state (?dry_run=true writes nothing)", ScriptIn,
     APPLY_ANSWER),
    ("/scripts/{id}", "get", "Get a script", None, "the script"),
    ("/scripts/{id}", "patch", "Edit a script", ScriptIn, "the script"),
    ("/scripts/{id}", "delete", "Delete a script", None, "{deleted: id}"),
]

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _oas30(node):
    """Rewrite pydantic's JSON Schema 2020-12 into OpenAPI 3.0's dialect (nullable, enum), which Swagger UI renders."""
    if isinstance(node, list):
        return [_oas30(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _oas30(v) for k, v in node.items()}
    node.pop("propertyNames", None)  # no 3.0 equivalent; the key length is still checked on requests
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if options and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            node["nullable"] = True
            del node[key]
            if len(rest) == 1 and "$ref" not in rest[0]:
                node.update(rest[0])
            elif rest:
                node[key] = rest
    return node


@functools.cache
def openapi_spec() -> dict:
    """The OpenAPI 3 document, built from the pydantic schemas that validate requests."""
    spec = APISpec(title="cloudcron", version=__version__, openapi_version="3.0.3",
                   info={"description": "Schedules for cloud machines; Mist.io v1 compatible."})
    spec.components.security_scheme("token", {"type": "apiKey", "in": "header", "name": "Authorization"})
    spec.components.schema("Error", ERROR_SCHEMA)
    seen = set()
    for model in (ScheduleIn, PreviewIn, PauseIn, BulkPauseIn, BulkResumeIn, CalendarIn, CloudIn, MachineIn, KeyIn,
                  ScriptIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            if name not in seen:
                seen.add(name)
                spec.components.schema(name, _oas30(sub))
        spec.components.schema(model.__name__, _oas30(schema))
    paths: dict = {}
    for path, method, summary, body, answer in ROUTES:
        op = {
            "summary": summary,
            "security": [{"token": []}],
            "responses": {
                "200": {"description": answer},
                "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
        if "/by-" in path:
            op["responses"]["201"] = {"description": "created: " + answer}
            op["parameters"].append({"name": "dry_run", "in": "query", "schema": {"type": "boolean"},
                                     "description": "do everything but write: answer what would be stored"})
            if path.startswith(("/clouds/", "/keys/")):
                op["parameters"].append({"name": "update_secrets", "in": "query", "schema": {"type": "boolean"},
                                         "description": "replace the stored secret of an existing resource"})
        if method in ("patch", "put", "delete") and "{" in path:
            op["parameters"].append({"name": "If-Match", "in": "header", "schema": {"type": "string"},
                                     "description": "the ETag of the resource as last read; 412 if it changed since"})
            op["responses"]["412"] = {"description": "If-Match names another version of the resource"}
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}}
        paths.setdefault(path, {})[method] = op
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    doc = spec.to_dict()
    doc["servers"] = [{"url": "/api/v1"}]
    return doc


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi_spec())


DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cloudcron API</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#ui"});</script>
</body></html>"""


@bp.get("/docs", endpoint="openapi_docs")
@bp.get("/docs/static/<path:name>", endpoint="openapi_docs")
def openapi_docs(name=None):
    if name is None:
        return Response(DOCS_PAGE, mimetype="text/html")
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(swagger_ui_path, name)
