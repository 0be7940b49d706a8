"""The audit log (/api/v1/audit): who changed which of the org's resources, when, field by field."""
from __future__ import annotations

from flask import Blueprint, request

from .. import audit
from ..errors import BadRequest
from ..models import AuditEntry
from ..timemath import TimeSpecError, parse_instant
from . import list_response, org_id

bp = Blueprint("audit", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)


def _instant(name: str):
    """?since= / ?until= as an aware UTC instant (ISO 8601; without an offset, UTC), or None; 400 naming it."""
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return parse_instant(raw, "UTC", field=name)
    except TimeSpecError as exc:
        # timemath's hint is written for schedule fields; here a date without an offset is read in UTC.
        raise BadRequest(str(exc).replace("(in the schedule's timezone)", "(UTC)")) from None


def _choice(name: str, allowed) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        raise BadRequest(f"{name}: '{value}' is not one of {', '.join(allowed)}")
    return value


@bp.get("/audit")
def list_audit():
    """Entries newest first; filters resource, id, token (id or label), action, since (inclusive), until (exclusive)."""
    since, until = _instant("since"), _instant("until")
    if since is not None and until is not None and since >= until:
        raise BadRequest("since, until: since must be before until")
    query = audit.query(org_id(), resource=_choice("resource", sorted(set(audit.RESOURCES.values()))),
                        resource_id=request.args.get("id") or None, token=request.args.get("token") or None,
                        action=_choice("action", audit.ACTIONS), since=since, until=until)
    return list_response(query, audit.entry_json, (AuditEntry.time.desc(), AuditEntry.id.desc()))
