"""The REST API, /api/v1: every route but the OpenAPI description needs a token."""
from __future__ import annotations

import logging
import sqlite3

from flask import Blueprint, jsonify, request
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from werkzeug.routing import PathConverter

from .. import db
from ..auth import authenticate
from ..backoff import one_line
from ..errors import BadRequest, NotFound, PreconditionFailed
from ..validation import json_body, query_int

class NameConverter(PathConverter):
    """<name:...>: the rest of the path, any character (a name may hold a newline, which <path:> refuses)."""

    regex = "(?s:.+)"
    part_isolating = False  # it spans '/' (werkzeug would infer True from a regex without one)


PUBLIC_ENDPOINTS = {"api.meta.openapi_json", "api.meta.openapi_docs"}
log = logging.getLogger(__name__)


# SQLite reports a missing table or a syntax error as OperationalError too: those are faults, not unavailability.
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o")


def _unavailable(exc: OperationalError) -> bool:
    """Whether the database could not be used (down, unreachable, locked), rather than refusing a statement."""
    if isinstance(exc.orig, sqlite3.OperationalError):
        return any(words in str(exc.orig).lower() for words in _SQLITE_UNAVAILABLE)
    return True  # psycopg: OperationalError is the connection's or the server's state; bad SQL is ProgrammingError


def _database_unavailable(exc: OperationalError):
    """503 with Retry-After when the database cannot be reached or is busy (PostgreSQL down, SQLite locked past its
    busy timeout): a condition that passes, not a fault of the request. One log line; the URL is not in it.
    Any other OperationalError is the internal error it is (logged with its traceback, 500)."""
    if not _unavailable(exc):
        log.exception("unhandled error")
        return jsonify(error="internal error; see the service log"), 500
    log.warning("API request failed: the database cannot be reached: %s", one_line(exc))
    return jsonify(error="the database cannot be reached; try again shortly"), 503, {"Retry-After": "5"}


def _authenticate():
    if request.method == "OPTIONS" and request.url_rule is not None:
        # Flask's automatic answer unites the methods of every rule the path fits (/schedules/pause also
        # fits /schedules/<id_>); Allow names those of the route that answers it.
        from flask import current_app

        same = [r for r in current_app.url_map.iter_rules() if r.rule == request.url_rule.rule]
        methods = sorted(set().union(*(r.methods for r in same)) - {"OPTIONS"}) + ["OPTIONS"]
        return "", 200, {"Allow": ", ".join(methods)}
    if request.endpoint not in PUBLIC_ENDPOINTS:
        authenticate(db())


def body(model, read_only: set[str], data: dict | None = None) -> dict:
    """The request's JSON body as the fields a client gave, checked against `model` (a pydantic request schema):
    {field: typed value, None where the client sent null or "" to mean "not set"}.

    The one body parser of the resources' create, edit and apply views (schedules read theirs through
    schedules.parse_fields, which also takes Mist's field names). 400 naming the field for JSON that is not an
    object, text no database stores, an unknown or read-only field (`read_only`), or a value the schema refuses.
    data: the body already read (an apply view adds the name its path gives)."""
    from ..resources import fields

    return fields(model, json_body() if data is None else data, read_only)


def org_id() -> str:
    from flask import g

    return g.org_id


def get_owned(model, id_: str, what: str):
    """A row of the request's org, or 404: another org's row is answered as if it did not exist."""
    row = db().get(model, id_)
    if row is None or row.org_id != org_id():
        raise NotFound(f"{what} '{id_}' not found")
    return row


def get_by_name(model, column, name: str):
    """The request's org's row whose `column` (name, or a cloud's title) is `name`, or None."""
    return db().scalar(select(model).where(model.org_id == org_id(), column == name))


def query_flag(name: str) -> bool:
    """A boolean query parameter (?dry_run=true): absent, 0, false or no is false; 1, true or yes is true; else
    (an empty value too, as OpenAPI's boolean) 400."""
    if name not in request.args:
        return False
    raw = request.args[name].strip().lower()
    if raw in ("0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise BadRequest(f"{name}: must be true or false")


def _version_column(model):
    """The column an ETag names: `version` where the table has one, else `updated_at` (channels: every edit sets
    it, and nothing but a client's edit does)."""
    return model.version if hasattr(model, "version") else model.updated_at


def etag(row) -> str:
    """The ETag of a stored resource: its version, which every client edit (API, console, apply) increments.

    It names the state clients write, not the derived fields the dispatcher advances (next_run_at,
    last_run_at), so a fire between a read and an edit does not make the edit fail. A table without a
    version (channels) answers its updated_at in microseconds since the epoch."""
    if hasattr(type(row), "version"):
        return f'"{row.version or 1}"'
    stamp = row.updated_at
    return f'"{int(stamp.timestamp()) * 1_000_000 + stamp.microsecond}"'


def with_etag(resp, row):
    """`resp` with the row's ETag header (a JSON answer of one resource)."""
    resp.headers["ETag"] = etag(row)
    return resp


def check_if_match(row) -> None:
    """Honour If-Match on a write (PATCH, PUT, DELETE, apply): 412 unless it names the row's current ETag (or is *).

    The version is checked again by a conditional UPDATE in the request's transaction, which on
    PostgreSQL also locks the row until the commit, so an edit that lands in between is caught too.
    No If-Match header: no check (last write wins, as before). A row that does not exist matches nothing.
    """
    if "If-Match" not in request.headers:
        return
    wanted = request.if_match
    if row is None:
        raise PreconditionFailed("If-Match: there is no such resource to match")
    if not wanted.star_tag and not wanted.contains(etag(row).strip('"')):
        raise PreconditionFailed(f"If-Match: the resource is at ETag {etag(row)}, not {request.headers['If-Match']}; "
                                 "read it again and retry")
    model = type(row)
    column = _version_column(model)
    claimed = db().execute(update(model).where(model.id == row.id, column == getattr(row, column.key))
                           .values({column.key: column}).execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        raise PreconditionFailed("If-Match: the resource was edited meanwhile; read it again and retry")


def apply_response(applied, key: str):
    """The answer of an apply: 201 when it created the resource, else 200; the stored resource's ETag."""
    resp = jsonify(applied.to_json(key))
    resp.status_code = 201 if applied.created and not applied.dry_run else 200
    if applied.row is not None:
        with_etag(resp, applied.row)
    return resp


def list_response(query, to_json, order_by):
    """A JSON array page (limit, offset) with the total in X-Total-Count, as Mist's clients expect arrays."""
    limit = query_int("limit", 100, 1, 1000)
    offset = query_int("offset", 0, 0, 10**9)
    session = db()
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(*order_by).limit(limit).offset(offset)).all()
    resp = jsonify([to_json(r) for r in rows])
    resp.headers["X-Total-Count"] = str(total)
    return resp


def blueprint(children) -> Blueprint:
    """The /api/v1 Blueprint around `children`, one Blueprint per API module (web.api.schedules.bp, ...).

    What every API route shares is set here once: the token check before each request (the OpenAPI
    description and its docs page excepted), the 503 for a database that cannot be reached, the <name:...>
    converter of the apply routes. A new Blueprint per app: Flask allows no change to a registered one."""
    bp = Blueprint("api", __name__, url_prefix="/api/v1")
    # Before the children's routes are added: the app's url_map must know the converter then.
    bp.record_once(lambda setup: setup.app.url_map.converters.setdefault("name", NameConverter))
    bp.register_error_handler(OperationalError, _database_unavailable)
    bp.before_request(_authenticate)
    for child in children:
        bp.register_blueprint(child)
    return bp
