"""The API's exception family: each class carries its HTTP status; one handler renders {"error": ...}."""
from __future__ import annotations

import logging

from flask import jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    status = 500
    headers: dict = {}  # extra answer headers (Retry-After on a 429)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401


class NotFound(APIError):
    status = 404


class Conflict(APIError):
    status = 409


class PreconditionFailed(APIError):
    """An If-Match that names another version of the resource (RFC 9110, 13.1.1): someone else edited it."""

    status = 412


class TooLarge(APIError):
    status = 413


class TooManyRequests(APIError):
    """A limit on work in progress was reached; answered at once with Retry-After (seconds)."""

    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after))}


def register(app):
    """Install the handlers that turn every failure into a JSON error body."""

    @app.errorhandler(APIError)
    def _api_error(exc: APIError):
        return jsonify(error=exc.message), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 413:
            message = f"request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        elif exc.code == 404:
            message = "no such endpoint"
        elif exc.code == 405:
            allowed = sorted(getattr(exc, "valid_methods", None) or [])
            message = "method not allowed on this endpoint" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        else:
            message = exc.description or exc.name
        # A 405 names the methods the endpoint takes in Allow (RFC 9110, 15.5.6); werkzeug puts it in its headers.
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        return jsonify(error=message), exc.code, headers

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # Never a traceback in an answer; the log keeps it for the operator.
        log.exception("unhandled error")
        return jsonify(error="internal error; see the service log"), 500
