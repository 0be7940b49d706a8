"""GET /api/v1/status: the backlog (the org's and the whole service's), live workers and the dispatchers' last tick."""
from __future__ import annotations

from flask import jsonify

from .. import db, utcnow
from ..status import status_json
from . import bp, org_id


@bp.get("/status")
def get_status():
    """The token's org's backlog, the whole service's, live workers and the dispatchers' last tick (status_json)."""
    return jsonify(status_json(db(), utcnow(), org_id()))
