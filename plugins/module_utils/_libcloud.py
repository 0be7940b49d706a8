# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Power actions on cloud machines through libcloud, shared by the machine module and the service.

Internal to the cloudcron.scheduler collection. Only libcloud (with the requests and urllib3 it
is built on) and the standard library are imported so that the service can use this file as
plugins.module_utils._libcloud too.

Provider endpoints are chosen by users, so every connection libcloud opens goes through a guard:
the host name is resolved, the addresses in the denied networks are refused, and the socket is
opened to the checked address itself (a second resolution could answer differently). Each call
is bounded in time (retries included), and an error is reported by its HTTP status or network
reason only: a provider's answer body is never repeated.
"""

from __future__ import annotations

import inspect
import ipaddress
import os
import random
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

from ._redact import Redactor

try:
    from http.client import responses as _HTTP_REASONS

    from libcloud.common import azure as _lc_azure
    from libcloud.common import azure_arm as _lc_azure_arm
    from libcloud.common import base as _lc_base
    from libcloud.common.exceptions import BaseHTTPError
    from libcloud.common.types import InvalidCredsError, LibcloudError
    from libcloud.compute.providers import DRIVERS
    from libcloud.compute.providers import get_driver as _driver_class
    from libcloud.compute.types import NodeState
    from libcloud.http import LibcloudConnection
    from requests.adapters import HTTPAdapter
    from requests.exceptions import Timeout as _RequestsTimeout
    from urllib3.connection import HTTPConnection as _U3HTTPConnection
    from urllib3.connection import HTTPSConnection as _U3HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool as _U3HTTPPool
    from urllib3.connectionpool import HTTPSConnectionPool as _U3HTTPSPool
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
    from urllib3.poolmanager import PoolManager
    from urllib3.util.connection import create_connection as _u3_create_connection
except ImportError as exc:  # the module reports this through missing_required_lib
    HAS_LIBCLOUD = False
    LIBCLOUD_IMPORT_ERROR = exc
else:
    HAS_LIBCLOUD = True
    LIBCLOUD_IMPORT_ERROR = None

POWER_STATES = ("started", "stopped", "restarted", "absent")

# A cloud API that never answers must not hold a run forever; callers may override it.
DEFAULT_TIMEOUT = 60

# The largest answer one provider request may bring (decoded, so a compressed bomb counts at its full size).
MAX_ANSWER_BYTES = 128 * 1024 * 1024

# Transient failures (network, throttling, 5xx) get this many more attempts, each after
# the given pause. Bounded on purpose: a run must end and be recorded.
RETRY_DELAYS = (1.0, 4.0)
# A cloud that says it is throttling us (HTTP 429, or EC2's RequestLimitExceeded in a 400) is asked
# again after longer pauses, each with random jitter so that concurrent calls do not return together.
THROTTLE_DELAYS = (1.0, 2.0, 4.0, 8.0)
_THROTTLE_CODES = ("RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequests",
                   "SlowDown", "RateLimitExceeded")
# Provider error codes that say a later attempt may succeed: named in the error text (never the answer body),
# so that cloudcron's run retries can tell them from final failures.
_CAPACITY_CODES = ("InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
                   "ZONE_RESOURCE_POOL_EXHAUSTED", "AllocationFailed")
# Machines a power call acts on at once, unless told otherwise (cloud APIs throttle).
DEFAULT_CONCURRENCY = 8
# EC2 takes at most 200 values in one DescribeInstances filter.
FILTER_CHUNK = 200

# libcloud's drivers for its own tests: not clouds. The dummy driver makes as many fake machines as
# its "credentials" number says, in memory.
TEST_PROVIDERS = frozenset(["dummy"])

# Addresses no provider endpoint may resolve to unless configured otherwise: link-local, which holds
# the cloud metadata service (169.254.169.254), and EC2's IPv6 metadata address.
DEFAULT_DENIED_NETWORKS = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")

# Constructor arguments (of drivers and the connections they build) that name a file on the machine the
# driver runs on: libcloud would read it (a key, a certificate) or write it (a token cache), with the
# worker's rights. `path` alone is the HTTP path of an endpoint (cloudstack, eucalyptus), not a file.
_FILE_ARGUMENT = re.compile(r"(?:^|_)(?:files?|dir|directory|cert|certs|certfile|keyfile|cafile|pem)$|.+_path$", re.I)
# Token caches: libcloud's GCE driver keeps tokens in ~/.google_libcloud_auth.<project>, shared by every
# org whose cloud names the same project; OpenStack takes a cache object. Caching is off in cloudcron.
_CACHE_ARGUMENTS = frozenset(["credential_file", "ex_auth_cache", "auth_cache"])
# GCE: only service account keys. "GCE" would use the worker's own instance identity, "IA" asks a person
# at the worker's terminal for a code.
GCE_AUTH_TYPES = ("SA",)

# The only schemes a URL-like option may use.
URL_SCHEMES = ("http", "https")
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.S)

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

# States on the way to each requested state's end: a machine found in one is waited for when verifying.
_ON_THE_WAY = {
    "started": {"pending", "starting", "rebooting"},
    "stopped": {"stopping"},
    "restarted": {"pending", "starting", "rebooting"},
    "absent": set(),
}
# How often verification asks the cloud again, in seconds.
VERIFY_POLL = 2.0

# Raw provider states that libcloud maps to "unknown" but that decide idempotence. EC2
# reports shutting-down only on the irreversible way to terminated.
_RAW_STATES = {"shutting-down": "terminated"}


class LibcloudActionError(ValueError):
    """A cloud call failed; `permanent` says whether trying again could help."""

    def __init__(self, message, permanent):
        super().__init__(message)
        self.permanent = permanent


class DeniedAddressError(Exception):
    """A provider endpoint resolved only to addresses in the denied networks; nothing was sent to it."""


class CallTimeout(Exception):
    """A cloud call ran past its time limit."""


class AnswerTooLarge(Exception):
    """A provider's answer was larger than the policy's max_answer_bytes; the rest of it was not read."""


def _require_libcloud():
    if not HAS_LIBCLOUD:
        raise ImportError("apache-libcloud is required: %s" % LIBCLOUD_IMPORT_ERROR)


def provider_names() -> list[str]:
    """Return the libcloud compute provider names get_driver accepts (its test drivers left out), sorted."""
    _require_libcloud()
    return sorted(n for n in (getattr(name, "value", name) for name in DRIVERS) if n not in TEST_PROVIDERS)


def _accepts(cls, name):
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


# ---------------------------------------------------------------- endpoint policy

class Policy:
    """What one driver may contact, for how long and how much: denied networks, seconds per call (None:
    unbounded), and bytes per answer (max_answer_bytes, default MAX_ANSWER_BYTES)."""

    def __init__(self, denied_networks=None, call_timeout=None, max_answer_bytes=None):
        self.denied = parse_networks(DEFAULT_DENIED_NETWORKS if denied_networks is None else denied_networks)
        self.call_timeout = call_timeout
        self.max_answer_bytes = MAX_ANSWER_BYTES if max_answer_bytes is None else int(max_answer_bytes)

    def refuses(self, address):
        """Whether an ip_address (or its text) lies in a denied network, itself or as the IPv4 address it carries.

        IPv6 forms that stand for an IPv4 address (embedded_ipv4) are refused when that IPv4 is: a denied
        169.254.169.254 is also refused as ::ffff:169.254.169.254, ::169.254.169.254, 64:ff9b::a9fe:a9fe
        or 2002:a9fe:a9fe::."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        candidates = [ip]
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded)
        return any(c.version == net.version and c in net for c in candidates for net in self.denied)


# NAT64's well-known prefix (RFC 6052): the IPv4 address is the last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip):
    """The IPv4 address an IPv6 address carries, or None: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
    (::a.b.c.d, deprecated but still routed by some stacks), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    value = int(ip)
    if ip in _NAT64 or (value >> 32 == 0 and value > 1):  # ::/96 but for :: and ::1
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def parse_networks(networks):
    """CIDR strings (or networks) as ip_network objects; a bad one raises ValueError naming it."""
    out = []
    for net in networks or ():
        try:
            out.append(net if hasattr(net, "network_address") else ipaddress.ip_network(str(net).strip(), strict=False))
        except ValueError:
            raise ValueError("%r is not an address range such as 169.254.0.0/16" % (net,)) from None
    return tuple(out)


_CURRENT = threading.local()


@contextmanager
def _policy(policy):
    previous = getattr(_CURRENT, "policy", None)
    _CURRENT.policy = policy
    try:
        yield
    finally:
        _CURRENT.policy = previous


class _Deadline:
    """Ends a call's connections when its time is up, whatever thread it runs on and however slowly bytes come.

    A socket timeout bounds each read, not a call: a server sending a byte every few seconds keeps a call
    going for ever. Every socket a call uses is watched (through a duplicate of its descriptor, which
    stays valid whatever happens to the original, TLS wrapping included); when the time is up they are
    shut down, so a read blocked in any thread returns at once and the call fails."""

    def __init__(self, seconds):
        self.expired = False
        self._socks = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.001), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock):
        try:
            fd = os.dup(sock.fileno())
        except (OSError, ValueError):  # already closed
            return
        try:
            dup = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return
        with self._lock:
            if not self.expired:
                self._socks.append(dup)
                return
        _shut(dup)
        dup.close()

    def _expire(self):
        with self._lock:
            self.expired = True
            socks, self._socks = self._socks, []
        for dup in socks:
            _shut(dup)
            dup.close()

    def close(self):
        self._timer.cancel()
        with self._lock:
            socks, self._socks = self._socks, []
        for dup in socks:
            dup.close()


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@contextmanager
def _deadline(seconds):
    """Watch the sockets opened or reused in this thread for the next `seconds` (None: no watch)."""
    previous = getattr(_CURRENT, "deadline", None)
    watch = _Deadline(seconds) if seconds is not None else None
    _CURRENT.deadline = watch
    try:
        yield watch
    finally:
        _CURRENT.deadline = previous
        if watch is not None:
            watch.close()


def _watch(sock):
    watch = getattr(_CURRENT, "deadline", None)
    if watch is not None and sock is not None:
        watch.watch(sock)


def _read_capped(response):
    """Read a requests response's body (decoded) up to the current policy's max_answer_bytes, or raise AnswerTooLarge."""
    limit = _current_policy().max_answer_bytes
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        response.close()
        raise AnswerTooLarge("the provider's answer is larger than %d bytes (it says %s)" % (limit, declared.strip()))
    chunks, total = [], 0
    for chunk in response.iter_content(64 * 1024):
        total += len(chunk)
        if total > limit:
            response.close()
            raise AnswerTooLarge("the provider's answer is larger than %d bytes" % limit)
        chunks.append(chunk)
    # What requests' own non-streaming read leaves behind (Response.content reads this).
    response._content = b"".join(chunks)  # pylint: disable=protected-access
    response._content_consumed = True  # pylint: disable=protected-access


def _current_policy():
    policy = getattr(_CURRENT, "policy", None)
    return policy if policy is not None else _DEFAULT_POLICY


_DEFAULT_POLICY = Policy()


def _literal_ip(host):
    text = host.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _url_like(value):
    """The scheme of a string that reads as a URL (scheme://..., or file:/mailto: style), else None.

    host:port ("example.com:8443", "localhost:8443") is not a URL."""
    m = _SCHEME.match(value)
    if m is None or _literal_ip(value) is not None:  # fd00:ec2::254 is an address, not scheme "fd00"
        return None
    scheme, rest = m.group(1), m.group(2)
    if rest.startswith("//"):
        return scheme.lower()
    if "." in scheme or rest.strip().isdigit():
        return None
    return scheme.lower()


def check_endpoint_options(options, denied_networks=None, prefix="options", secrets=False):
    """Refuse driver options that point at what the service never contacts; raises ValueError naming the option.

    A URL-like string anywhere in the options must be http or https; `host` and the host of such
    URLs, when an address literal, must be outside the denied networks. Host names are checked when a
    call connects (they may resolve anywhere), by the connection guard. With secrets=True (credentials,
    which are constructor arguments too) only strings with "://" or a "file:" prefix count as URLs,
    since a secret may hold a colon; the message never shows a value."""
    policy = denied_networks if isinstance(denied_networks, Policy) else Policy(denied_networks)

    def literal(path, host):
        ip = _literal_ip(host)
        if ip is not None and policy.refuses(ip):
            raise ValueError("%s: %s is in a network cloudcron does not contact (denied networks)" % (path, ip))

    def walk(path, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk("%s.%s" % (path, key), item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk("%s.%d" % (path, index), item)
        elif isinstance(value, str):
            scheme = _url_like(value)
            if secrets and scheme is not None and "://" not in value and scheme != "file":
                scheme = None
            if scheme is not None:
                if scheme not in URL_SCHEMES:
                    raise ValueError("%s: the scheme '%s' is not allowed; provider endpoints are http or https URLs"
                                     % (path, scheme))
                host = re.sub(r"^[^@/]*@", "", value.split("//", 1)[1]).split("/", 1)[0].split("?", 1)[0]
                if host.startswith("["):
                    literal(path, host)
                else:
                    literal(path, host.rsplit(":", 1)[0])
            elif path.rsplit(".", 1)[-1] == "host" and not secrets:
                literal(path, value)

    walk(prefix, options or {})


def check_driver_arguments(provider, credentials, options):
    """Refuse driver arguments that would make libcloud read or write a file where it runs; ValueError naming the field.

    Any argument whose name says it is a file (key_file, cert_file, ca_cert, credential_file, *_path, ...)
    and token caches are refused for every provider; a GCE key is accepted only as its content (PEM or
    JSON text, or the parsed JSON object), never as a file name, and only service-account authentication.
    The message never shows a value."""
    for prefix, values in (("credentials", credentials or {}), ("options", options or {})):
        for name in values:
            field = "%s.%s" % (prefix, name)
            if str(name) in _CACHE_ARGUMENTS:
                raise ValueError("%s: token caches are not allowed; cloudcron keeps no provider tokens on the worker" % field)
            if _FILE_ARGUMENT.search(str(name)):
                raise ValueError("%s: names a file on the worker, which a cloud may not make cloudcron read or write; "
                                 "give the credential's content where the driver takes it" % field)
    if provider == "gce":
        given = (("credentials", credentials or {}), ("options", options or {}))
        for prefix, values in given:
            auth_type = values.get("auth_type")
            if auth_type is not None and str(auth_type).upper() not in GCE_AUTH_TYPES:
                raise ValueError("%s.auth_type: only 'SA' (a service account key) is supported; 'GCE' would use the "
                                 "worker's own identity and 'IA' needs a person at the worker" % prefix)
        for prefix, values in given:
            key = values.get("key")
            if isinstance(key, str) and not key.lstrip().startswith(("-----BEGIN", "{")):
                raise ValueError("%s.key: must be the service account key itself (its PEM or JSON content), "
                                 "not a file name" % prefix)


def _pinned_arguments(provider, credentials, options):
    """Arguments cloudcron sets whatever a cloud says: no token cache file, no guessed authentication."""
    if provider == "gce":
        # libcloud always caches tokens in a file; reading /dev/null finds none and writing it keeps none.
        options["credential_file"] = "/dev/null"
        if "auth_type" not in credentials:
            options["auth_type"] = "SA"


def _guarded_socket(conn):
    """Open conn's socket to the first resolved address outside the denied networks (urllib3's errors kept)."""
    policy = _current_policy()
    host, port = conn._dns_host, conn.port  # pylint: disable=protected-access
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise NameResolutionError(conn.host, conn, e) from e
    refused = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = sockaddr[0]
        if policy.refuses(address.split("%", 1)[0]):
            refused.append(address)
            continue
        try:
            return _u3_create_connection((address, port), conn.timeout, source_address=conn.source_address,
                                         socket_options=conn.socket_options)
        except socket.timeout as e:
            raise ConnectTimeoutError(conn, "Connection to %s timed out. (connect timeout=%s)" % (conn.host, conn.timeout)) from e
        except OSError as e:
            raise NewConnectionError(conn, "Failed to establish a new connection: %s" % e) from e
    raise DeniedAddressError("refused to connect to %s: it resolves to %s, in a network cloudcron does not contact"
                             % (host, ", ".join(sorted(set(refused))) or "no address"))


_GUARD = {}
_GUARD_LOCK = threading.Lock()


def _install_guard():
    """Make every connection libcloud opens a guarded one (the class attribute libcloud's own debug mode swaps)."""
    _require_libcloud()
    with _GUARD_LOCK:
        if _GUARD:
            return

        class GuardedHTTPConnection(_U3HTTPConnection):
            def _new_conn(self):
                sock = _guarded_socket(self)
                _watch(sock)  # before a TLS handshake, which may trickle too
                return sock

        class GuardedHTTPSConnection(_U3HTTPSConnection):
            def _new_conn(self):
                sock = _guarded_socket(self)
                _watch(sock)
                return sock

        class GuardedHTTPPool(_U3HTTPPool):
            ConnectionCls = GuardedHTTPConnection

            def _get_conn(self, timeout=None):
                conn = super()._get_conn(timeout)
                _watch(getattr(conn, "sock", None))  # a kept-alive connection this call reuses
                return conn

        class GuardedHTTPSPool(_U3HTTPSPool):
            ConnectionCls = GuardedHTTPSConnection

            def _get_conn(self, timeout=None):
                conn = super()._get_conn(timeout)
                _watch(getattr(conn, "sock", None))
                return conn

        pools = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}

        class GuardedAdapter(HTTPAdapter):
            """requests' adapter with guarded pools; client certificates as libcloud's SignedHTTPSAdapter."""

            def __init__(self, cert_file=None, key_file=None):
                self.cert_file, self.key_file = cert_file, key_file
                super().__init__()

            def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
                if self.cert_file or self.key_file:
                    pool_kwargs.update(cert_file=self.cert_file, key_file=self.key_file)
                super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
                self.poolmanager.pool_classes_by_scheme = dict(pools)

            def proxy_manager_for(self, proxy, **proxy_kwargs):
                manager = super().proxy_manager_for(proxy, **proxy_kwargs)
                if isinstance(manager, PoolManager) and not proxy.lower().startswith("socks"):
                    manager.pool_classes_by_scheme = dict(pools)  # the proxy's address is the one checked
                return manager

        class GuardedConnection(LibcloudConnection):
            def __init__(self, host, port, secure=None, **kwargs):
                self._signing = (kwargs.get("cert_file"), kwargs.get("key_file"))
                super().__init__(host, port, secure=secure, **kwargs)
                adapter = GuardedAdapter(*self._signing)
                self.session.mount("https://", adapter)
                self.session.mount("http://", adapter)

            def _setup_signing(self, cert_file=None, key_file=None):
                self._signing = (cert_file, key_file)

            # Answers are read here, within the policy's size, rather than whole by requests.
            def request(self, method, url, body=None, headers=None, raw=False, stream=False, hooks=None):
                super().request(method, url, body=body, headers=headers, raw=raw, stream=True, hooks=hooks)
                if not stream:
                    _read_capped(self.response)

            def prepared_request(self, method, url, body=None, headers=None, raw=False, stream=False):
                super().prepared_request(method, url, body=body, headers=headers, raw=raw, stream=True)
                if not stream:
                    _read_capped(self.response)

        for holder in (_lc_base.Connection, _lc_azure.AzureActiveDirectoryConnection, _lc_azure_arm.AzureResourceManagementConnection):
            if getattr(holder, "conn_class", None) is LibcloudConnection:
                holder.conn_class = GuardedConnection
        _GUARD["adapter"] = GuardedAdapter
        _GUARD["connection"] = GuardedConnection


def guarded_adapter():
    """A requests HTTPAdapter whose connections go through the guard (mount it on a Session; send inside guarding())."""
    _install_guard()
    return _GUARD["adapter"]()


@contextmanager
def guarding(denied_networks=None):
    """Within this block, on this thread, guarded connections refuse addresses in `denied_networks` (CIDR strings)."""
    with _policy(Policy(denied_networks)):
        yield


@contextmanager
def _time_limit(seconds):
    """Raise CallTimeout in the main thread after `seconds` (a module's process); elsewhere the caller bounds the wait."""
    usable = (seconds is not None and threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None) and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if not usable:
        yield
        return

    def _expired(_signum, _frame):
        raise CallTimeout("timed out after %g s" % seconds)

    signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def get_driver(provider: str, credentials: dict, options: dict, call_timeout=None, denied_networks=None,
               max_answer_bytes=None):
    """Build a libcloud NodeDriver for provider from its constructor credentials and extra options.

    call_timeout (seconds) bounds every call made through this module with the driver, retries
    included, on any thread (the call's sockets are shut down when it is up, see _Deadline), and lowers
    options["timeout"] (each socket operation) to it. An answer larger than max_answer_bytes (default
    MAX_ANSWER_BYTES) fails the call unread. denied_networks (CIDR
    strings; default DEFAULT_DENIED_NETWORKS) are never connected to. Arguments naming files on this
    machine and token caches are refused (check_driver_arguments); GCE's token cache is off. Raises
    ValueError for an unknown or test provider and for options that are refused; LibcloudActionError when a driver
    that talks to its cloud while being built fails.
    """
    _require_libcloud()
    if provider in TEST_PROVIDERS:
        raise ValueError("provider %r is libcloud's test driver, not a cloud" % (provider,))
    if provider not in provider_names():
        raise ValueError("unknown provider %r; expected one of the libcloud compute providers" % (provider,))
    credentials = dict(credentials or {})
    options = dict(options or {})
    both = sorted(set(credentials) & set(options))
    if both:
        raise ValueError("driver options repeat credential fields: %s" % ", ".join(both))
    policy = Policy(denied_networks, call_timeout, max_answer_bytes)
    check_endpoint_options(options, policy)
    check_endpoint_options(credentials, policy, prefix="credentials", secrets=True)
    check_driver_arguments(provider, credentials, options)
    _pinned_arguments(provider, credentials, options)
    cls = _driver_class(provider)
    if "timeout" in options:
        given = options["timeout"]
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not given > 0:
            raise ValueError("options.timeout: must be a number of seconds greater than 0")
        if call_timeout is not None:
            options["timeout"] = min(given, call_timeout)
    elif _accepts(cls, "timeout"):
        options["timeout"] = DEFAULT_TIMEOUT if call_timeout is None else min(DEFAULT_TIMEOUT, call_timeout)
    _install_guard()
    try:
        with _policy(policy), _deadline(call_timeout), _time_limit(call_timeout):
            driver = cls(**credentials, **options)
    except TypeError as exc:
        # The message names the parameter, never its value, so it is safe to pass on.
        raise ValueError("bad credentials or driver options for %s: %s" % (provider, exc)) from None
    except ValueError:
        raise
    except Exception as exc:  # some drivers authenticate while being built
        detail = Redactor(credentials.values()).redact(_reason(exc, call_timeout))
        message = "could not connect to %s: %s" % (provider, detail)
        raise LibcloudActionError(message, permanent=not _is_transient(exc)) from None
    # Every credential, not only key and secret: drivers take tokens, passwords and URLs under other names.
    driver._cloudcron_redactor = Redactor(credentials.values())  # pylint: disable=protected-access
    driver._cloudcron_policy = policy  # pylint: disable=protected-access
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


def _machine_id(node):
    # Some providers answer numbers (0 included), some nothing at all; ids are stored and compared as text.
    return "" if node.id is None else str(node.id)


def _describe(node):
    return {
        "machine_id": _machine_id(node),
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


def _is_throttled(exc):
    """Whether the cloud answered that it is throttling the caller (429, or a throttling error code)."""
    if _http_status(exc) == 429:
        return True
    text = " ".join(str(part) for part in (getattr(exc, "message", None), *getattr(exc, "args", ())) if part)
    return any(code in text for code in _THROTTLE_CODES)


def _is_transient(exc):
    if isinstance(exc, (InvalidCredsError, DeniedAddressError, CallTimeout, AnswerTooLarge)):
        return False
    if _is_throttled(exc):
        return True
    if isinstance(exc, BaseHTTPError):
        return exc.code == 429 or (isinstance(exc.code, int) and exc.code >= 500)
    # socket errors, refused connections and timeouts (requests' errors are OSErrors too)
    return isinstance(exc, OSError)


def _http_status(exc):
    for attr in ("code", "http_code"):
        code = getattr(exc, attr, None)
        if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
            return code
    return None


def _os_reason(exc):
    """The operating system's words for a network failure somewhere in exc's chain (never a URL or a body)."""
    seen = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "cannot resolve the host name"
        if isinstance(current, NewConnectionError):
            pass  # a subclass of ConnectTimeoutError whatever the cause: look at the cause
        elif isinstance(current, (socket.timeout, _RequestsTimeout, ConnectTimeoutError)):
            return "timed out"
        if isinstance(current, OSError) and getattr(current, "strerror", None):
            return current.strerror
        todo.extend([getattr(current, "reason", None), current.__cause__, current.__context__])
        todo.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return None


def _reason(exc, call_timeout=None):
    """A short account of a failed call: an HTTP status line, a network reason or the error's kind.

    Never the provider's answer body: an endpoint is whatever a user pointed a cloud at."""
    if isinstance(exc, (DeniedAddressError, CallTimeout, AnswerTooLarge)):
        return str(exc)
    status = _http_status(exc)
    if isinstance(exc, InvalidCredsError):
        return "authentication failed" + (" (HTTP %d)" % status if status else "")
    if status is not None:
        text = " ".join(str(part) for part in (getattr(exc, "message", None), *getattr(exc, "args", ())) if part)
        code = next((c for c in _THROTTLE_CODES + _CAPACITY_CODES if c in text), None)
        return ("HTTP %d %s" % (status, _HTTP_REASONS.get(status, ""))).rstrip() + (" (%s)" % code if code else "")
    if isinstance(exc, OSError):
        why = _os_reason(exc)
        if why == "timed out" and call_timeout is not None:
            why = "timed out after %g s" % call_timeout
        return "%s: %s" % (type(exc).__name__, why) if why else type(exc).__name__
    if isinstance(exc, LibcloudError):
        return "%s (the provider's answer could not be used)" % type(exc).__name__
    return type(exc).__name__


def _call(driver, what, func, *args):
    """Run one cloud call within the driver's policy, retrying transient failures while its time allows."""
    policy = getattr(driver, "_cloudcron_policy", None) or _DEFAULT_POLICY
    limit = policy.call_timeout
    deadline = None if limit is None else time.monotonic() + limit
    attempt = 0
    while True:
        try:
            left = None if deadline is None else deadline - time.monotonic()
            with _policy(policy), _deadline(left), _time_limit(left):
                return func(*args)
        except Exception as exc:  # libcloud drivers raise all kinds; classify, do not crash
            transient = _is_transient(exc)
            delays = THROTTLE_DELAYS if _is_throttled(exc) else RETRY_DELAYS
            if transient and attempt < len(delays):
                pause = delays[attempt] * (random.uniform(0.5, 1.0) if delays is THROTTLE_DELAYS else 1.0)
                attempt += 1
                if deadline is None or time.monotonic() + pause < deadline:
                    time.sleep(pause)
                    continue
            if deadline is not None and time.monotonic() >= deadline and not isinstance(exc, DeniedAddressError):
                reason = "timed out after %g s" % limit
            else:
                reason = _reason(exc, limit)
            # Provider error messages sometimes echo what they were sent.
            message = "%s: %s" % (what, _redactor_of(driver).redact(reason))
            raise LibcloudActionError(message, permanent=not transient) from None


def list_nodes(driver) -> list[dict]:
    """List the provider's machines as plain dicts (machine_id, name, state, public_ips, private_ips, tags)."""
    _require_libcloud()
    return [_describe(node) for node in _call(driver, "listing machines failed", driver.list_nodes)]


def _result(machine_id, changed, failed, state, msg):
    return {"machine_id": machine_id, "changed": changed, "failed": failed, "state": state, "msg": msg}


def list_wanted(driver, machine_ids):
    """The provider's nodes among machine_ids, asking only for those where the driver can filter.

    EC2 (libcloud's ex_filters on list_nodes) is asked with an instance-id filter, FILTER_CHUNK ids per
    DescribeInstances call, so the cost follows the machines acted on, not the size of the account
    (a filter, unlike ex_node_ids, leaves out unknown ids instead of failing the call). Other drivers
    list the whole cloud once. Raises LibcloudActionError."""
    if getattr(driver, "type", None) == "ec2" and machine_ids:
        nodes = []
        for start in range(0, len(machine_ids), FILTER_CHUNK):
            chunk = list(machine_ids[start:start + FILTER_CHUNK])
            nodes.extend(_call(driver, "listing machines failed",
                               partial(driver.list_nodes, ex_filters={"instance-id": chunk})))
        return nodes
    return _call(driver, "listing machines failed", driver.list_nodes)


def power(driver, machine_ids: list[str], state: str, *, check_mode: bool = False,
          concurrency: int = 1, driver_factory=None, verify_seconds: float = 0) -> list[dict]:
    """Bring each machine to state (started, stopped, restarted, absent); one result dict per distinct id.

    Machines already in the state are left alone (changed False). In check mode nothing is
    called but the listing, and changed says what would have been done. The machines are listed
    once (list_wanted), then acted on `concurrency` at a time; each thread other than the caller's
    uses a driver of its own from driver_factory() (libcloud drivers are not thread-safe), so
    without a factory the actions run one after another. Results keep the order of machine_ids.

    verify_seconds > 0: the machines acted on (and those found on the way, such as stopping) succeed only once
    the cloud lists them in the end state (running, stopped, terminated or gone) within that many seconds;
    the others fail with "did not reach <state> within N s", which cloudcron's run retries count as transient.
    """
    _require_libcloud()
    if state not in POWER_STATES:
        raise ValueError("state must be one of %s, not %r" % (", ".join(POWER_STATES), state))
    wanted = list(dict.fromkeys(str(m) for m in machine_ids))
    if not wanted:
        return []
    try:
        nodes = {_machine_id(node): node for node in list_wanted(driver, wanted)}
    except LibcloudActionError as exc:
        return [_result(m, False, True, None, str(exc)) for m in wanted]

    method, target, verb = _ACTIONS[state]
    results = {}
    todo = []
    for machine_id in wanted:
        node = nodes.get(machine_id)
        if node is None:
            if state == "absent":
                # Providers other than EC2 drop removed machines from the listing at once.
                msg = "machine %s not found; nothing to remove" % machine_id
                results[machine_id] = _result(machine_id, False, False, None, msg)
            else:
                results[machine_id] = _result(machine_id, False, True, None, "machine %s not found" % machine_id)
            continue
        current = _state_of(node)
        if current in _ALREADY[state]:
            if state == "restarted" and current in ("stopped", "stopping"):
                msg = "machine %s is %s; a restart leaves stopped machines stopped" % (machine_id, current)
            else:
                msg = "machine %s is already %s" % (machine_id, current)
            results[machine_id] = _result(machine_id, False, False, current, msg)
            continue
        if current == "terminated":
            msg = "machine %s is terminated; cannot %s it" % (machine_id, verb)
            results[machine_id] = _result(machine_id, False, True, current, msg)
            continue
        if check_mode:
            msg = "would %s machine %s (now %s)" % (verb, machine_id, current)
            results[machine_id] = _result(machine_id, True, False, current, msg)
            continue
        todo.append((machine_id, node, current))

    def act(drv, machine_id, node, current):
        try:
            confirmed = _call(drv, "could not %s machine %s" % (verb, machine_id), getattr(drv, method), node)
        except LibcloudActionError as exc:
            return _result(machine_id, False, True, current, str(exc))
        if confirmed is False:
            # Real EC2 answers true for every request it accepts, so false means refused.
            msg = "the cloud did not confirm it would %s machine %s" % (verb, machine_id)
            return _result(machine_id, False, True, current, msg)
        msg = "asked the cloud to %s machine %s (was %s)" % (verb, machine_id, current)
        return _result(machine_id, True, False, target, msg)

    workers = max(1, min(int(concurrency or 1), len(todo))) if driver_factory is not None else 1
    if workers == 1:
        for machine_id, node, current in todo:
            results[machine_id] = act(driver, machine_id, node, current)
    else:
        local = threading.local()

        def act_in_thread(item):
            machine_id, node, current = item
            drv = getattr(local, "driver", None)
            if drv is None:
                try:
                    drv = local.driver = driver_factory()
                except Exception as exc:  # noqa: BLE001 - the same driver was built once already
                    return _result(machine_id, False, True, current, "could not %s machine %s: %s"
                                   % (verb, machine_id, type(exc).__name__))
            return act(drv, machine_id, node, current)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloudcron-power") as pool:
            for result in pool.map(act_in_thread, todo):
                results[result["machine_id"]] = result
    if verify_seconds and verify_seconds > 0 and not check_mode:
        verify(driver, results, state, verify_seconds)
    return [results[m] for m in wanted]


def verify(driver, results: dict, state: str, seconds: float) -> None:
    """Wait until the cloud lists each machine of `results` (machine_id -> result dict) that was acted on, or
    found on its way, in the end state of `state`, at most `seconds`; update the results in place.

    The cloud is asked every VERIFY_POLL seconds (one listing of the machines still waited for). A machine
    that does not get there fails; an accepted API call alone is not success."""
    target = _ACTIONS[state][1]
    waiting = {m for m, r in results.items()
               if not r["failed"] and (r["changed"] or r["state"] in _ON_THE_WAY[state])}
    if not waiting:
        return
    deadline = time.monotonic() + seconds
    seen, why = {}, None
    while True:
        try:
            nodes = {_machine_id(node): node for node in list_wanted(driver, sorted(waiting))}
            why = None
        except LibcloudActionError as exc:
            nodes, why = None, str(exc)
        for machine_id in sorted(waiting) if nodes is not None else ():
            node = nodes.get(machine_id)
            current = _state_of(node) if node is not None else None
            if current == target or (node is None and state == "absent"):
                waiting.discard(machine_id)
                result = results[machine_id]
                result["state"] = current or target
                result["msg"] = "%s; it is %s" % (result["msg"], current or "gone")
            else:
                seen[machine_id] = current
        left = deadline - time.monotonic()
        if not waiting or left <= 0:
            break
        time.sleep(min(VERIFY_POLL, left))
    for machine_id in waiting:
        current = seen.get(machine_id)
        detail = why or ("it is %s" % current if current else "it is no longer listed")
        msg = "machine %s did not reach %s within %g s (%s)" % (machine_id, target, seconds, detail)
        results[machine_id] = _result(machine_id, results[machine_id]["changed"], True,
                                      current or results[machine_id]["state"], msg)
