"""Ping, and the OpenAPI description generated from the request schemas, with a page that renders it."""
from __future__ import annotations

import functools

from apispec import APISpec
from flask import Blueprint, jsonify, Response, send_from_directory

from .. import __version__, db
from ..models import Org
from ..channels import ChannelIn
from ..schemas import (BulkPauseIn, BulkResumeIn, CalendarIn, CloudIn, KeyIn, MachineIn, PauseIn, PreviewIn,
                       ScheduleIn, ScriptIn)
from . import org_id

bp = Blueprint("meta", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)


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
    ("/runs/{id}", "get", "A run with its per-machine results and its notifications' deliveries", None, "the run"),
    ("/logs", "get", "Events (schedule_id, run_id, event_type, start, stop, limit)", None, "array of events"),
    ("/status", "get", "The backlog (this org's runs and every org's: queued, running, oldest queued age in s), "
     "live workers and their slots, the dispatchers' last tick", None, "{org, all_orgs, workers, dispatchers}"),
    ("/calendars", "get", "List calendars (name; total in X-Total-Count)", None, "array of calendars"),
    ("/calendars", "post", "Add a calendar: a timezone and entries that exclude time", CalendarIn, "the calendar"),
    ("/calendars/by-name/{name}", "put", "Apply a calendar's desired state (?dry_run=true writes nothing)", CalendarIn,
     APPLY_ANSWER),
    ("/calendars/{id}", "get", "Get a calendar", None, "the calendar"),
    ("/calendars/{id}", "patch", "Edit a calendar (the schedules excluding it are recomputed)", CalendarIn,
     "the calendar"),
    ("/calendars/{id}", "delete", "Delete a calendar (409 while a schedule excludes it)", None, "{deleted: id}"),
    ("/channels", "get", "List notification channels (name; total in X-Total-Count)", None, "array of channels"),
    ("/channels", "post", "Add a channel: an Apprise URL, or a webhook signed with a secret (url and secret are "
     "write-only)", ChannelIn, "the channel"),
    ("/channels/by-name/{name}", "put", "Apply a channel's desired state (?dry_run=true writes nothing; url and "
     "secret are sent on create, and on an existing channel only with ?update_secrets=true or a change of kind)",
     ChannelIn, APPLY_ANSWER),
    ("/channels/{id}", "get", "Get a channel", None, "the channel"),
    ("/channels/{id}", "patch", "Edit a channel (url and secret kept unless given)", ChannelIn, "the channel"),
    ("/channels/{id}", "delete", "Delete a channel (409 while a schedule notifies it)", None, "{deleted: id}"),
    ("/channels/{id}/test", "post", "Send a test notification now", None, "the delivery, with its attempt"),
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
    ("/audit", "get", "The audit log, newest first: who changed which resource, when, and each field's before/after "
     "(secrets masked). Filters: resource, id (a resource id), token (a token id or label), action, since "
     "(inclusive), until (exclusive); limit, offset; total in X-Total-Count", None, "array of audit entries"),
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


# Fields a create needs (the service checks them after merging: PATCH and apply need none).
REQUIRED = {
    ("/schedules", "post"): ["name", "schedule_type", "schedule_entry"],
    ("/schedules/preview", "post"): ["schedule_type", "schedule_entry"],
    ("/calendars", "post"): ["name"],
    ("/clouds", "post"): ["title", "provider"],
    ("/clouds/{id}/machines", "post"): ["name", "host"],
    ("/keys", "post"): ["name"],
    ("/scripts", "post"): ["name", "script"],
}
# Mist's legacy names of schedule fields, accepted in bodies (never both names of one field).
SCHEDULE_ALIASES = {"cronjob_type": "schedule_type", "cronjob_entry": "schedule_entry", "task_enabled": "enabled"}
# Where each create's id goes: (path prefix of the operations that take it, JSON pointer of the id in the answer).
CREATES = {
    ("/schedules", "post"): ("/schedules/{id}", "/id"),
    ("/schedules/by-name/{name}", "put"): ("/schedules/{id}", "/schedule/id"),
    ("/calendars", "post"): ("/calendars/{id}", "/id"),
    ("/calendars/by-name/{name}", "put"): ("/calendars/{id}", "/calendar/id"),
    ("/channels", "post"): ("/channels/{id}", "/id"),
    ("/channels/by-name/{name}", "put"): ("/channels/{id}", "/channel/id"),
    ("/clouds", "post"): ("/clouds/{id}", "/id"),
    ("/clouds/by-title/{title}", "put"): ("/clouds/{id}", "/cloud/id"),
    ("/keys", "post"): ("/keys/{id}", "/id"),
    ("/keys/by-name/{name}", "put"): ("/keys/{id}", "/key/id"),
    ("/scripts", "post"): ("/scripts/{id}", "/id"),
    ("/scripts/by-name/{name}", "put"): ("/scripts/{id}", "/script/id"),
    ("/schedules/{id}/run", "post"): ("/runs/{id}", "/id"),
}
# Answers beyond 200 and the error statuses every operation may give (401; 413 and 400 with a body).
STATUS_TEXT = {
    400: "a malformed body, or a field that breaks a rule (named in the error)",
    401: "no token, or an unknown or revoked one",
    404: "no such resource in the token's org",
    409: "a duplicate name, or a resource in use",
    412: "If-Match names another version of the resource",
    413: "a body over 1 MiB",
    429: "too many machine listings in progress; see Retry-After",
    502: "the cloud provider could not be reached or refused",
}


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}").replace("-", "_") for w in path.strip("/").split("/")]
    return method + "_" + "_".join(words)


def _error_statuses(path: str, method: str, body) -> list[int]:
    statuses = {400, 401}  # a bad query string or path is a 400 on every route
    if body is not None:
        statuses.add(413)
    if "{" in path and "/by-" not in path:
        statuses.add(404)
    if method in ("post", "put", "patch", "delete") and path != "/schedules/preview":
        statuses.add(409)
    if method in ("put", "patch", "delete") or (method == "post" and path == "/schedules/{id}"):
        statuses.add(412)
    if path == "/clouds/{id}/machines" and method == "get":
        statuses.update({429, 502})
    return sorted(statuses)


def _body_schema(spec: APISpec, path: str, method: str, body) -> str:
    """The name of the component that describes this operation's body: the model's, with the create's
    required fields, or without the name an apply takes from its path."""
    name = body.__name__
    required = REQUIRED.get((path, method))
    apply_name = path.rsplit("/", 1)[-1].strip("{}") if "/by-" in path else None
    if not required and not apply_name:
        return name
    schema = _oas30(body.model_json_schema(ref_template="#/components/schemas/{model}"))
    schema.pop("$defs", None)
    _empty_is_unset(schema)
    if body in (ScheduleIn, PreviewIn):
        schema = _with_aliases(schema)
    if required:
        name += "Create"
        schema["required"] = required
        if body in (ScheduleIn, PreviewIn):
            # A required field given by its Mist name (cronjob_type for schedule_type) is given: the service reads both.
            by_field = {field: alias for alias, field in SCHEDULE_ALIASES.items()}
            schema["required"] = [f for f in required if f not in by_field]
            schema["allOf"] = [{"anyOf": [{"required": [f]}, {"required": [by_field[f]]}]}
                               for f in required if f in by_field]
            if not schema["required"]:
                del schema["required"]
    if apply_name:
        name += "Apply"
        schema["properties"].pop(apply_name, None)
        schema["description"] = (f"The desired state; the {apply_name} is the path's. " + schema.get("description", "")).strip()
    if name not in spec.components.schemas:
        spec.components.schema(name, schema)
    return name


EMPTY = {"type": "string", "enum": [""]}


def _empty_is_unset(schema: dict) -> None:
    """Every top-level field of a body takes "" too: the service reads it as "not set" (validation.check_fields),
    as Mist's clients send it (`"script_id": ""`)."""
    props = schema.get("properties", {})
    for name, prop in list(props.items()):
        if prop.get("type") == "string" and "enum" not in prop:
            prop.pop("minLength", None)
        elif prop.get("type") == "string":
            prop["enum"] = [*prop["enum"], ""] if "" not in prop["enum"] else prop["enum"]
        elif "type" in prop or "$ref" in prop or "oneOf" in prop or "anyOf" in prop:
            keep = {k: prop.pop(k) for k in ("description", "title", "nullable", "default") if k in prop}
            props[name] = {"anyOf": [prop, EMPTY], **keep}


def _with_aliases(schema: dict) -> dict:
    """ScheduleIn's schema with Mist's legacy names described, and the rule that a field comes by one name only."""
    props = schema["properties"]
    for alias, field in SCHEDULE_ALIASES.items():
        props[alias] = dict(props[field], description=f"Mist's name of {field} (give one of the two)")
        props[alias].pop("title", None)
    schema["not"] = {"anyOf": [{"required": [alias, field]} for alias, field in SCHEDULE_ALIASES.items()]}
    return schema


@functools.cache
def openapi_spec() -> dict:
    """The OpenAPI 3 document, built from the pydantic schemas that validate requests.

    Every operation has an operationId, its error statuses (each answered as {"error": ...}), and each
    create links to the operations that take the id it answers (OpenAPI links)."""
    spec = APISpec(title="cloudcron", version=__version__, openapi_version="3.0.3",
                   info={"description": "Schedules for cloud machines; Mist.io v1 compatible."})
    spec.components.security_scheme("token", {"type": "apiKey", "in": "header", "name": "Authorization"})
    spec.components.schema("Error", ERROR_SCHEMA)
    seen = set()
    for model in (ScheduleIn, PreviewIn, PauseIn, BulkPauseIn, BulkResumeIn, CalendarIn, CloudIn, MachineIn, KeyIn,
                  ScriptIn, ChannelIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            if name not in seen:
                seen.add(name)
                spec.components.schema(name, _oas30(sub))
        schema = _oas30(schema)
        _empty_is_unset(schema)
        if model in (ScheduleIn, PreviewIn):
            schema = _with_aliases(schema)
        spec.components.schema(model.__name__, schema)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    paths: dict = {}
    for path, method, summary, body, answer in ROUTES:
        op = {
            "operationId": _operation_id(method, path),
            "summary": summary,
            "security": [{"token": []}],
            "responses": {"200": {"description": answer}},
        }
        for status in _error_statuses(path, method, body):
            op["responses"][str(status)] = {"description": STATUS_TEXT[status], "content": error}
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
        if method == "get" and "{" in path and path.count("/") == 2:
            op["responses"]["200"]["headers"] = {"ETag": {"description": "the resource's version; send it back in "
                                                                          "If-Match to edit or delete", "schema": {"type": "string"}}}
        if method in ("put", "patch", "delete") or (method == "post" and path == "/schedules/{id}"):
            op["description"] = ("Honours If-Match: with the ETag of an earlier GET, a resource edited since is a "
                                 "412 and nothing is written.")
        if "/by-" in path:
            op["responses"]["201"] = {"description": "created: " + answer}
            op["parameters"].append({"name": "dry_run", "in": "query", "schema": {"type": "boolean"},
                                     "description": "do everything but write: answer what would be stored"})
            if path.startswith(("/clouds/", "/keys/", "/channels/")):
                op["parameters"].append({"name": "update_secrets", "in": "query", "schema": {"type": "boolean"},
                                         "description": "replace the stored secret of an existing resource"})
        if not op["parameters"]:
            del op["parameters"]
        if body is not None:
            name = _body_schema(spec, path, method, body)
            # Only a create needs a body: an edit or apply without one changes nothing.
            op["requestBody"] = {"required": (path, method) in REQUIRED, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
        paths.setdefault(path, {})[method] = op
    for (path, method), (target, pointer) in CREATES.items():
        links = {}
        for other_path, operations in paths.items():
            if other_path == target or other_path.startswith(target + "/"):
                for other_method, other in operations.items():
                    params = {"id": f"$response.body#{pointer}"}
                    if "{cid}" in other_path:
                        continue
                    links[other["operationId"]] = {"operationId": other["operationId"], "parameters": params}
        for status in ("200", "201"):
            if status in paths[path][method]["responses"]:
                paths[path][method]["responses"][status]["links"] = links
    machine_links = {}
    for other_path in ("/clouds/{cid}/machines/{id}",):
        for other_method, other in paths[other_path].items():
            machine_links[other["operationId"]] = {"operationId": other["operationId"], "parameters": {
                "cid": "$response.body#/cloud_id", "id": "$response.body#/id"}}
    paths["/clouds/{id}/machines"]["post"]["responses"]["200"]["links"] = machine_links
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
