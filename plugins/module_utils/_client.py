# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The REST client of the cloudcron API, shared by this collection's modules and inventory plugin.

Internal to the cloudcron.scheduler collection: not a public API, may change without notice.
Built on ansible.module_utils.urls so the modules need nothing beyond ansible-core wherever
they run. Errors are raised as CloudcronError (a ValueError); only modules call fail_json.
"""

from __future__ import annotations

import json
import re
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

DEFAULT_TIMEOUT = 30
# The API answers at most this many items per page.
PAGE_SIZE = 1000
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def connection_argument_spec():
    """Argument spec of the connection options every module shares (see the doc fragment)."""
    return dict(
        url=dict(type="str", required=True, fallback=(env_fallback, ["CLOUDCRON_URL"])),
        token=dict(type="str", required=True, no_log=True, fallback=(env_fallback, ["CLOUDCRON_TOKEN"])),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=DEFAULT_TIMEOUT),
    )


def looks_like_id(value):
    """Whether `value` has the shape of a cloudcron id (32 lowercase hex digits)."""
    return isinstance(value, str) and bool(ID_PATTERN.match(value))


class CloudcronError(ValueError):
    """A request that did not succeed: the API's refusal (with its status) or no answer at all."""

    def __init__(self, message, status=None):
        super(CloudcronError, self).__init__(message)
        self.message = message
        self.status = status


def base_api_url(url):
    """The /api/v1 root for a service URL given with or without /api/v1 and trailing slashes."""
    url = (url or "").strip().rstrip("/")
    if not url:
        raise CloudcronError("url: is required (the cloudcron service, for example http://127.0.0.1:8080)")
    if not re.match(r"^https?://", url):
        raise CloudcronError("url: '%s' must start with http:// or https://" % url)
    if url.endswith("/api/v1"):
        url = url[: -len("/api/v1")]
    return url + "/api/v1"


class CloudcronClient:
    """One service URL and token; every call answers the decoded JSON or raises CloudcronError."""

    def __init__(self, url, token, validate_certs=True, timeout=DEFAULT_TIMEOUT, opener=None):
        self.api_url = base_api_url(url)
        if not token:
            raise CloudcronError("token: is required (an API token of your cloudcron org)")
        self._token = token
        self.validate_certs = validate_certs
        self.timeout = timeout
        self._open = opener or open_url
        # Counted so tests and benchmarks can check how many round trips a task costs.
        self.requests = 0
        self.writes = 0

    @classmethod
    def from_params(cls, params):
        """A client from a module's (or plugin's) connection options."""
        return cls(params.get("url"), params.get("token"), validate_certs=params.get("validate_certs", True),
                   timeout=params.get("timeout") or DEFAULT_TIMEOUT)

    def request(self, method, path, body=None, query=None):
        """Send one request to <api>/<path>; return (decoded answer, response headers)."""
        url = self.api_url + "/" + path.lstrip("/")
        if query:
            url += "?" + urlencode(query)
        headers = {"Authorization": "Bearer " + self._token, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        self.requests += 1
        if method != "GET":
            self.writes += 1
        try:
            resp = self._open(url, data=data, headers=headers, method=method, timeout=self.timeout,
                              validate_certs=self.validate_certs, use_netrc=False, http_agent="cloudcron.scheduler")
        except HTTPError as exc:
            raise CloudcronError(self._refusal(method, path, exc), status=exc.code) from None
        except URLError as exc:
            raise CloudcronError("cannot reach the cloudcron service at %s: %s" % (self.api_url, exc.reason)) from None
        except (OSError, ValueError, UrlsConnectionError) as exc:
            # Timeouts, resets, proxy and certificate failures surface here depending on the Python version.
            raise CloudcronError("cannot reach the cloudcron service at %s: %s" % (self.api_url, exc)) from None
        raw = resp.read()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            raise CloudcronError("%s %s: the service at %s did not answer JSON (is it cloudcron?)"
                                 % (method, path, self.api_url), status=getattr(resp, "status", None)) from None
        return answer, dict(resp.headers.items()) if getattr(resp, "headers", None) is not None else {}

    def _refusal(self, method, path, exc):
        try:
            raw = exc.read()
        except Exception:  # a refusal without a readable body still deserves its status
            raw = b""
        message = None
        try:
            decoded = json.loads(raw) if raw else None
            if isinstance(decoded, dict):
                message = decoded.get("error")
        except ValueError:
            pass
        if not message:
            message = (raw.decode("utf-8", "replace")[:300] if raw else "") or getattr(exc, "reason", "") or "no details"
        if exc.code == 401:
            return "the cloudcron service at %s rejected the token (401): %s" % (self.api_url, message)
        return "%s %s failed (%s): %s" % (method, path, exc.code, message)

    def get(self, path, query=None):
        """GET and return the decoded answer."""
        return self.request("GET", path, query=query)[0]

    def post(self, path, body=None):
        """POST and return the decoded answer."""
        return self.request("POST", path, body=body if body is not None else {})[0]

    def patch(self, path, body):
        """PATCH and return the decoded answer."""
        return self.request("PATCH", path, body=body)[0]

    def delete(self, path):
        """DELETE and return the decoded answer."""
        return self.request("DELETE", path)[0]

    def apply(self, collection, name, body, dry_run=False, update_secrets=False, by="name"):
        """PUT <collection>/by-<by>/<name>: the server merges, checks and compares the desired state.

        Answers {"changed", "changed_fields", "diff": {"before", "after"}, "dry_run", <resource>}; with
        dry_run nothing is written and the resource is what would be stored."""
        query = {}
        if dry_run:
            query["dry_run"] = "true"
        if update_secrets:
            query["update_secrets"] = "true"
        path = "%s/by-%s/%s" % (collection, by, quote(name, safe=""))
        if query:
            path += "?" + urlencode(query)
        return self.request("PUT", path, body=body)[0]

    def get_or_none(self, path, query=None):
        """GET, or None when the API answers 404."""
        try:
            return self.get(path, query=query)
        except CloudcronError as exc:
            if exc.status == 404:
                return None
            raise

    def list_all(self, path, query=None):
        """Every item of a collection, page by page."""
        items, offset = [], 0
        while True:
            page_query = dict(query or {}, limit=PAGE_SIZE, offset=offset)
            page, headers = self.request("GET", path, query=page_query)
            items.extend(page or [])
            total = _header(headers, "X-Total-Count")
            offset += len(page or [])
            if not page or total is None or offset >= int(total):
                return items

    def find_one(self, collection, field, value):
        """The one item of `collection` whose `field` equals `value` (a filtered GET), or None."""
        found = self.get(collection, query={field: value})
        return found[0] if found else None

    def find(self, collection, field, value, what):
        """An item by id or by its `field` (name or title): one request when the value is the field."""
        item = self.find_one(collection, field, value)
        if item is None and looks_like_id(value):
            item = self.get_or_none("%s/%s" % (collection, quote(value, safe="")))
        if item is None:
            raise CloudcronError("%s: no %s with %s or id '%s' in this org" % (what, what, field, value), status=404)
        return item

    def ping(self):
        """The answer of /ping: proves the URL and token work."""
        return self.get("ping")


def _header(headers, name):
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def quote_id(value):
    """An id made safe to put in a path."""
    return quote(str(value), safe="")


def changed_fields(desired, current):
    """Names of the fields in `desired` whose value differs from `current` (None means unset)."""
    return [k for k in desired if current.get(k) != desired[k]]


def diff_of(fields, before, after):
    """Ansible's diff dict showing only `fields` before and after."""
    return dict(before={k: before.get(k) for k in fields} if before else {},
                after={k: after.get(k) for k in fields} if after else {})
