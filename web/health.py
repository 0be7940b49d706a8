"""GET /healthz and GET /readyz, without a token, for load balancers and orchestrators.

/healthz: the process answers HTTP (nothing else is checked: restarting it would not fix a database).
/readyz: the database answers, the queue answers, and a dispatcher ticked within CLOUDCRON_READY_TICK_AGE
seconds (read from the dispatchers' heartbeat rows, so an API process without a dispatcher of its own is
ready while one runs anywhere). 503 otherwise, naming what failed. Failures are described by their kind only
(the details go to the log): these answers are public.
"""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from . import state, utcnow
from .backoff import one_line
from .heartbeats import fleet

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """200 {"ok": true} whenever the process answers HTTP."""
    return jsonify({"ok": True})


def readiness(st, now) -> tuple[dict, list[str]]:
    """Run the three checks: ({check: "ok" or why not}, [failures as "check: why"]). Database first, then the
    queue with no transaction open."""
    checks: dict[str, str] = {}
    procs = None
    try:
        with st.db.session() as session:
            procs = fleet(session, now)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure to read is "not ready"
        log.warning("readiness: the database failed: %s", one_line(exc))
        checks["database"] = f"cannot be read ({type(exc).__name__})"
    try:
        st.huey.pending_count()
        checks["queue"] = "ok"
    except Exception as exc:  # noqa: BLE001
        log.warning("readiness: the queue failed: %s", one_line(exc))
        checks["queue"] = f"cannot be read ({type(exc).__name__})"
    limit = st.config.ready_tick_age
    if procs is None:
        checks["dispatcher"] = "unknown (the database cannot be read)"
    elif procs.last_tick is None:
        checks["dispatcher"] = "no dispatcher has ticked yet"
    else:
        age = (now - procs.last_tick).total_seconds()
        checks["dispatcher"] = (f"ok (last tick {age:.1f} s ago)" if age <= limit
                                else f"no dispatcher ticked in the last {limit:g} s (last tick {age:.0f} s ago)")
    failures = [f"{name}: {why}" for name, why in checks.items() if not why.startswith("ok")]
    return checks, failures


@bp.get("/readyz")
def readyz():
    """200 {"ready": true, "checks"} when database, queue and a dispatcher's tick are fine; else 503 {"error", "checks"}."""
    checks, failures = readiness(state(), utcnow())
    if failures:
        return jsonify({"error": "; ".join(failures), "checks": checks}), 503
    return jsonify({"ready": True, "checks": checks})
