"""GET /api/v1/status: the backlog (the org's and the whole service's), live workers and the dispatchers' last tick."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import db, utcnow
from ..status import status_json
from . import org_id

bp = Blueprint("status", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)


@bp.get("/status")
def get_status():
    """The token's org's backlog, the whole service's, live workers and the dispatchers' last tick (status_json)."""
    return jsonify(status_json(db(), utcnow(), org_id()))
