"""Run retries: a schedule's `retries` setting, which machine failures are transient, and when to try again.

A run's machines that failed for a transient reason are tried again, as attempts of the same run, up to
`max` more times; the wait before retry n (1, 2 ...) is delay * backoff ** (n - 1) seconds. The worker owns
the loop (web.worker); this module only decides.
"""
from __future__ import annotations

import re

from .errors import BadRequest

MAX_RETRIES = 10
MAX_DELAY = 3600
MAX_BACKOFF = 10

# Failures that a later attempt can heal, as the machine module and ansible-playbook word them:
# "could not stop machine i-1: HTTP 503 Service Unavailable", "... HTTP 429 Too Many Requests",
# EC2's throttling and capacity codes, "ConnectionError: Connection refused", "... timed out after 30 s",
# "Failed to connect to the host via ssh: ssh: connect to host 10.0.0.5 port 22: Connection timed out",
# and power verification's "did not reach stopped within 120 s".
_TRANSIENT = re.compile("|".join([
    r"\bHTTP (?:429|5\d\d)\b",
    r"RequestLimitExceeded|Throttling|TooManyRequests|SlowDown|RateLimitExceeded|rate exceeded",
    r"InsufficientInstanceCapacity|InsufficientHostCapacity|InsufficientCapacity|insufficient capacity"
    r"|ZONE_RESOURCE_POOL_EXHAUSTED|AllocationFailed|ServiceUnavailable|InternalError",
    r"connection refused|connection reset|timed out|network is unreachable|no route to host"
    r"|temporary failure in name resolution",
    r"failed to connect to the host via ssh",
    r"did not reach \w+ within",
]), re.I)
# Failures no attempt heals, even when their words also match the above (an SSH login refused is
# "unreachable" to ansible, but the key is wrong, not the network).
_PERMANENT = re.compile("|".join([
    r"permission denied", r"host key verification failed", r"authentication failed",
    r"too many authentication failures", r"network cloudcron does not contact",
]), re.I)


def is_transient(status: str, error: str | None) -> bool:
    """Whether a machine result (status as on a run_machines row, its error text) may succeed if tried again.

    Only `failed` and `unreachable` results are candidates; a run timeout, an interruption or a success
    never is. The rule is the issue's: provider throttling or 5xx, insufficient capacity, connection refused
    or timed out, SSH unreachable, and a power action that did not reach its state in time."""
    if status not in ("failed", "unreachable") or not error:
        return False
    if _PERMANENT.search(error):
        return False
    return bool(_TRANSIENT.search(error))


def parse_retries(value) -> dict | None:
    """A schedule's `retries` as stored: {"max": int, "delay": number, "backoff": number}, or None (no retries).

    BadRequest naming the field and the rule: max 0-10, delay 0-3600 seconds, backoff 1-10; delay defaults
    to 60 and backoff to 2. {"max": 0} is kept as none."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest('retries: must be an object such as {"max": 3, "delay": 60, "backoff": 2}')
    unknown = sorted(set(value) - {"max", "delay", "backoff"})
    if unknown:
        raise BadRequest(f"retries.{unknown[0]}: is not a known field (max, delay, backoff)")
    if "max" not in value:
        raise BadRequest("retries.max: is required (how many more attempts, 0 to 10)")
    out = {"max": value["max"], "delay": value.get("delay", 60), "backoff": value.get("backoff", 2)}
    if not _is_int(out["max"]) or not 0 <= out["max"] <= MAX_RETRIES:
        raise BadRequest(f"retries.max: must be an integer from 0 to {MAX_RETRIES}")
    if not _is_number(out["delay"]) or not 0 <= out["delay"] <= MAX_DELAY:
        raise BadRequest(f"retries.delay: must be a number of seconds from 0 to {MAX_DELAY}")
    if not _is_number(out["backoff"]) or not 1 <= out["backoff"] <= MAX_BACKOFF:
        raise BadRequest(f"retries.backoff: must be a number from 1 to {MAX_BACKOFF}")
    return out if out["max"] else None


def delay_before(retries: dict, n: int) -> float:
    """Seconds to wait before retry n (1 for the second attempt): delay * backoff ** (n - 1)."""
    return float(retries.get("delay", 0)) * float(retries.get("backoff", 1)) ** (n - 1)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
