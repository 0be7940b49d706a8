"""The REST API, /api/v1: every route but the OpenAPI description needs a token."""
from __future__ import annotations

import logging
import sqlite3

from flask import Blueprint, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from .. import db
from ..auth import authenticate
from ..backoff import one_line
from ..errors import NotFound
from ..validation import query_int

bp = Blueprint("api", __name__, url_prefix="/api/v1")
PUBLIC_ENDPOINTS = {"api.openapi_json", "api.openapi_docs"}
log = logging.getLogger(__name__)


# SQLite reports a missing table or a syntax error as OperationalError too: those are faults, not unavailability.
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o")


def _unavailable(exc: OperationalError) -> bool:
    """Whether the database could not be used (down, unreachable, locked), rather than refusing a statement."""
    if isinstance(exc.orig, sqlite3.OperationalError):
        return any(words in str(exc.orig).lower() for words in _SQLITE_UNAVAILABLE)
    return True  # psycopg: OperationalError is the connection's or the server's state; bad SQL is ProgrammingError


@bp.errorhandler(OperationalError)
def _database_unavailable(exc: OperationalError):
    """503 with Retry-After when the database cannot be reached or is busy (PostgreSQL down, SQLite locked past its
    busy timeout): a condition that passes, not a fault of the request. One log line; the URL is not in it.
    Any other OperationalError is the internal error it is (logged with its traceback, 500)."""
    if not _unavailable(exc):
        log.exception("unhandled error")
        return jsonify(error="internal error; see the service log"), 500
    log.warning("API request failed: the database cannot be reached: %s", one_line(exc))
    return jsonify(error="the database cannot be reached; try again shortly"), 503, {"Retry-After": "5"}


@bp.before_request
def _authenticate():
    if request.endpoint not in PUBLIC_ENDPOINTS:
        authenticate(db())


def org_id() -> str:
    from flask import g

    return g.org_id


def get_owned(model, id_: str, what: str):
    """A row of the request's org, or 404: another org's row is answered as if it did not exist."""
    row = db().get(model, id_)
    if row is None or row.org_id != org_id():
        raise NotFound(f"{what} '{id_}' not found")
    return row


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


from . import audit, calendars, channels, meta, resources, runs, schedules, status  # noqa: E402,F401
