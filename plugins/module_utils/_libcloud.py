# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Power actions on cloud machines through libcloud, shared by the machine module and the service.

Internal to the cloudcron.scheduler collection. Only libcloud and the standard library are
imported so that the service can use this file as plugins.module_utils._libcloud too.
"""

from __future__ import annotations

import inspect
import time

from ._redact import Redactor

try:
    from libcloud.common.exceptions import BaseHTTPError
    from libcloud.common.types import InvalidCredsError
    from libcloud.compute.providers import DRIVERS
    from libcloud.compute.providers import get_driver as _driver_class
    from libcloud.compute.types import NodeState
except ImportError as exc:  # the module reports this through missing_required_lib
    HAS_LIBCLOUD = False
    LIBCLOUD_IMPORT_ERROR = exc
else:
    HAS_LIBCLOUD = True
    LIBCLOUD_IMPORT_ERROR = None

POWER_STATES = ("started", "stopped", "restarted", "absent")

# A cloud API that never answers must not hold a run forever; callers may override it.
DEFAULT_TIMEOUT = 60

# Transient failures (network, throttling, 5xx) get this many more attempts, each after
# the given pause. Bounded on purpose: a run must end and be recorded.
RETRY_DELAYS = (1.0, 4.0)

# Provider states that already satisfy the request, by requested state.
_ALREADY = {
    "started": {"running", "pending", "starting", "rebooting"},
    "stopped": {"stopped", "stopping"},
    # Booting machines are being restarted already; stopped ones stay stopped (a scheduled
    # reboot must not start a machine that someone stopped on purpose).
    "restarted": {"pending", "starting", "rebooting", "stopped", "stopping"},
    "absent": {"terminated"},
}

# What each requested state calls on the driver, the state it leads to, and its verb.
_ACTIONS = {
    "started": ("start_node", "running", "start"),
    "stopped": ("stop_node", "stopped", "stop"),
    "restarted": ("reboot_node", "running", "restart"),
    "absent": ("destroy_node", "terminated", "remove"),
}

# Raw provider states that libcloud maps to "unknown" but that decide idempotence. EC2
# reports shutting-down only on the irreversible way to terminated.
_RAW_STATES = {"shutting-down": "terminated"}


class LibcloudActionError(ValueError):
    """A cloud call failed; `permanent` says whether trying again could help."""

    def __init__(self, message, permanent):
        super().__init__(message)
        self.permanent = permanent


def _require_libcloud():
    if not HAS_LIBCLOUD:
        raise ImportError("apache-libcloud is required: %s" % LIBCLOUD_IMPORT_ERROR)


def provider_names() -> list[str]:
    """Return the libcloud compute provider names get_driver accepts, sorted."""
    _require_libcloud()
    return sorted(getattr(name, "value", name) for name in DRIVERS)


def _accepts(cls, name):
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def get_driver(provider: str, credentials: dict, options: dict):
    """Build a libcloud NodeDriver for provider from its constructor credentials and extra options."""
    _require_libcloud()
    if provider not in provider_names():
        raise ValueError("unknown provider %r; expected one of the libcloud compute providers" % (provider,))
    credentials = dict(credentials or {})
    options = dict(options or {})
    both = sorted(set(credentials) & set(options))
    if both:
        raise ValueError("driver options repeat credential fields: %s" % ", ".join(both))
    cls = _driver_class(provider)
    if "timeout" not in options and _accepts(cls, "timeout"):
        options["timeout"] = DEFAULT_TIMEOUT
    try:
        driver = cls(**credentials, **options)
    except TypeError as exc:
        # The message names the parameter, never its value, so it is safe to pass on.
        raise ValueError("bad credentials or driver options for %s: %s" % (provider, exc)) from None
    except ValueError:
        raise
    except Exception as exc:  # some drivers authenticate while being built
        detail = Redactor(credentials.values()).redact(str(exc) or type(exc).__name__)
        message = "could not connect to %s: %s: %s" % (provider, type(exc).__name__, detail)
        raise LibcloudActionError(message, permanent=not _is_transient(exc)) from None
    # Every credential, not only key and secret: drivers take tokens, passwords and URLs under other names.
    driver._cloudcron_redactor = Redactor(credentials.values())
    return driver


def _state_of(node):
    state = str(getattr(node.state, "value", node.state)).lower()
    if state == "unknown":
        raw = str(node.extra.get("status") or node.extra.get("state") or "").lower()
        if raw in _RAW_STATES:
            return _RAW_STATES[raw]
        if raw in {s.value for s in NodeState}:
            return raw
    return state


def _tags_of(node):
    extra = node.extra or {}
    for key in ("tags", "labels"):
        if isinstance(extra.get(key), dict):
            return {str(k): "" if v is None else str(v) for k, v in extra[key].items()}
    if isinstance(extra.get("tags"), (list, tuple)):
        return {str(t): "" for t in extra["tags"]}
    return {}


def _describe(node):
    return {
        "machine_id": node.id,
        "name": node.name,
        "state": _state_of(node),
        "public_ips": list(node.public_ips or []),
        "private_ips": list(node.private_ips or []),
        "tags": _tags_of(node),
    }


def _redactor_of(driver):
    """What hides the driver's credentials in messages (a driver built elsewhere: its key, secret and token)."""
    redactor = getattr(driver, "_cloudcron_redactor", None)
    if redactor is None:
        redactor = Redactor(getattr(driver, attr, None) for attr in ("key", "secret", "token"))
    return redactor


def _is_transient(exc):
    if isinstance(exc, InvalidCredsError):
        return False
    if isinstance(exc, BaseHTTPError):
        return exc.code == 429 or (isinstance(exc.code, int) and exc.code >= 500)
    # socket errors, refused connections and timeouts (requests' errors are OSErrors too)
    return isinstance(exc, OSError)


def _call(driver, what, func, *args):
    """Run one cloud call, retrying transient failures a bounded number of times."""
    for attempt in range(len(RETRY_DELAYS) + 1):
        try:
            return func(*args)
        except Exception as exc:  # libcloud drivers raise all kinds; classify, do not crash
            transient = _is_transient(exc)
            if transient and attempt < len(RETRY_DELAYS):
                time.sleep(RETRY_DELAYS[attempt])
                continue
            if isinstance(exc, InvalidCredsError):
                reason = "authentication failed"
            else:
                reason = type(exc).__name__
            # Provider error messages sometimes echo what they were sent.
            detail = _redactor_of(driver).redact(str(exc) or type(exc).__name__)
            message = "%s: %s: %s" % (what, reason, detail)
            raise LibcloudActionError(message, permanent=not transient) from None
    raise AssertionError("unreachable")


def list_nodes(driver) -> list[dict]:
    """List the provider's machines as plain dicts (machine_id, name, state, public_ips, private_ips, tags)."""
    _require_libcloud()
    return [_describe(node) for node in _call(driver, "listing machines failed", driver.list_nodes)]


def _result(machine_id, changed, failed, state, msg):
    return {"machine_id": machine_id, "changed": changed, "failed": failed, "state": state, "msg": msg}


def power(driver, machine_ids: list[str], state: str, *, check_mode: bool = False) -> list[dict]:
    """Bring each machine to state (started, stopped, restarted, absent); one result dict per distinct id.

    Machines already in the state are left alone (changed False). In check mode nothing is
    called but the listing, and changed says what would have been done.
    """
    _require_libcloud()
    if state not in POWER_STATES:
        raise ValueError("state must be one of %s, not %r" % (", ".join(POWER_STATES), state))
    wanted = list(dict.fromkeys(str(m) for m in machine_ids))
    if not wanted:
        return []
    try:
        nodes = {node.id: node for node in _call(driver, "listing machines failed", driver.list_nodes)}
    except LibcloudActionError as exc:
        return [_result(m, False, True, None, str(exc)) for m in wanted]

    method, target, verb = _ACTIONS[state]
    results = []
    for machine_id in wanted:
        node = nodes.get(machine_id)
        if node is None:
            if state == "absent":
                # Providers other than EC2 drop removed machines from the listing at once.
                msg = "machine %s not found; nothing to remove" % machine_id
                results.append(_result(machine_id, False, False, None, msg))
            else:
                results.append(_result(machine_id, False, True, None, "machine %s not found" % machine_id))
            continue
        current = _state_of(node)
        if current in _ALREADY[state]:
            if state == "restarted" and current in ("stopped", "stopping"):
                msg = "machine %s is %s; a restart leaves stopped machines stopped" % (machine_id, current)
            else:
                msg = "machine %s is already %s" % (machine_id, current)
            results.append(_result(machine_id, False, False, current, msg))
            continue
        if current == "terminated":
            msg = "machine %s is terminated; cannot %s it" % (machine_id, verb)
            results.append(_result(machine_id, False, True, current, msg))
            continue
        if check_mode:
            msg = "would %s machine %s (now %s)" % (verb, machine_id, current)
            results.append(_result(machine_id, True, False, current, msg))
            continue
        try:
            confirmed = _call(driver, "could not %s machine %s" % (verb, machine_id), getattr(driver, method), node)
        except LibcloudActionError as exc:
            results.append(_result(machine_id, False, True, current, str(exc)))
            continue
        if confirmed is False:
            # Real EC2 answers true for every request it accepts, so false means refused.
            msg = "the cloud did not confirm it would %s machine %s" % (verb, machine_id)
            results.append(_result(machine_id, False, True, current, msg))
            continue
        msg = "asked the cloud to %s machine %s (was %s)" % (verb, machine_id, current)
        results.append(_result(machine_id, True, False, target, msg))
    return results
