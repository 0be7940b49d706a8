"""Which machine failures are retried (web.retries.is_transient), from the words the machine module and
ansible-playbook really write, and the wait before each retry."""
from __future__ import annotations

import socket

import pytest
import requests
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError

from plugins.module_utils import _libcloud
from web.retries import delay_before, is_transient, parse_retries


def module_error(exc, verb="stop", machine="i-0abc"):
    """The machine module's error text for a failed call, built by its own _reason()."""
    return "could not %s machine %s: %s" % (verb, machine, _libcloud._reason(exc, 30))


def refused_connection_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    except requests.ConnectionError as exc:
        return exc
    raise AssertionError("the connection was not refused")


@pytest.mark.parametrize("error", [
    module_error(BaseHTTPError(503, "Service Unavailable")),
    module_error(BaseHTTPError(500, "InternalError")),
    module_error(BaseHTTPError(429, "Too Many Requests")),
    module_error(BaseHTTPError(400, "RequestLimitExceeded: Request limit exceeded.")),
    "could not start machine i-0abc: InsufficientInstanceCapacity: We currently do not have sufficient "
    "m5.large capacity in the Availability Zone you requested (us-east-1a).",
    "could not stop machine i-0abc: timed out after 30 s",
    "listing machines failed: ConnectTimeoutError: timed out after 30 s",
    "Failed to connect to the host via ssh: ssh: connect to host 10.0.0.5 port 22: Connection timed out",
    "Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 port 2222: Connection refused",
    "Data could not be sent to remote host \"10.0.0.5\". Make sure this host can be reached over ssh: "
    "ssh: connect to host 10.0.0.5 port 22: No route to host",
    "machine i-0abc did not reach stopped within 120 s (it is stopping)",
])
def test_transient_failures_are_retryable(error):
    assert is_transient("failed", error)
    assert is_transient("unreachable", error)


def test_a_refused_connection_as_the_module_words_it_is_retryable():
    error = "listing machines failed: " + _libcloud._reason(refused_connection_error(), 30)
    assert "refused" in error.lower()
    assert is_transient("failed", error)


@pytest.mark.parametrize("error", [
    module_error(InvalidCredsError("AuthFailure")),
    module_error(BaseHTTPError(400, "InvalidInstanceID.Malformed")),
    module_error(BaseHTTPError(403, "UnauthorizedOperation")),
    "machine i-0abc not found",
    "machine i-0abc is terminated; cannot start it",
    "the cloud did not confirm it would stop machine i-0abc",
    "power actions need a libcloud cloud; this machine is a plain SSH host",
    "the script exited with status 1",
    "Failed to connect to the host via ssh: root@10.0.0.5: Permission denied (publickey,password).",
    "Failed to connect to the host via ssh: Host key verification failed.",
    "refused to connect to 169.254.169.254: it resolves to 169.254.169.254, in a network cloudcron does not "
    "contact",
])
def test_other_failures_are_final(error):
    assert not is_transient("failed", error)


@pytest.mark.parametrize("status", ["succeeded", "timed_out", "interrupted", "running"])
def test_only_failed_or_unreachable_results_are_candidates(status):
    assert not is_transient(status, "could not stop machine i-0abc: HTTP 503 Service Unavailable")


def test_a_failure_without_words_is_final():
    assert not is_transient("failed", None)
    assert not is_transient("failed", "")


def test_the_wait_grows_by_the_backoff_factor():
    retries = {"max": 3, "delay": 10, "backoff": 3}
    assert [delay_before(retries, n) for n in (1, 2, 3)] == [10.0, 30.0, 90.0]
    assert delay_before({"max": 1, "delay": 0, "backoff": 2}, 1) == 0.0


def test_max_zero_means_no_retries():
    assert parse_retries({"max": 0}) is None
    assert parse_retries(None) is None
