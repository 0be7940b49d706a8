"""Request parsing: JSON bodies whatever the Content-Type, and validation errors that name the field."""
from __future__ import annotations

import ipaddress
import json
import math
import re

from flask import request
from pydantic import BaseModel, ValidationError

from .errors import BadRequest

_SURROGATE = re.compile("[\ud800-\udfff]")
# A host name's labels (RFC 1123, plus the '_' some internal names use): never a leading '-',
# so ssh cannot read the address as an option (-oProxyCommand=...), no blank or control character.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_SCOPE_ID = re.compile(r"[A-Za-z0-9_.]+")
# POSIX portable user names, plus '@' for directory accounts (user@domain); never a leading '-'.
_SSH_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
HOST_RULE = "must be a host name or an IP address (letters, digits, '.', '-', '_'; not starting with '-')"
SSH_USER_RULE = "must be a user name of at most 64 letters, digits, '_', '.', '@' or '-', not starting with '-'"


def is_host(value) -> bool:
    """Whether `value` is a host name or an IPv4 / IPv6 address literal that ssh reads as a host, nothing else."""
    if not isinstance(value, str) or not value or len(value) > 253:
        return False
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return _HOSTNAME.fullmatch(value) is not None
    scope = getattr(address, "scope_id", None)  # fe80::1%eth0
    return scope is None or _SCOPE_ID.fullmatch(scope) is not None


def is_ssh_user(value) -> bool:
    """Whether `value` is a user name ssh can be given as is."""
    return isinstance(value, str) and _SSH_USER.fullmatch(value) is not None

# Messages for pydantic's error types, phrased as the rule a value broke.
_RULES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "too_short": "is too short",
}


def format_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's first error into 'field.path: rule'."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "string_too_long":
        rule = f"must be at most {ctx.get('max_length')} characters"
    elif kind == "string_too_short":
        rule = "must not be empty"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        rule = err["msg"].lower()
    elif kind == "literal_error":
        rule = f"must be one of {ctx.get('expected')}"
    elif kind in ("too_short", "too_long"):
        rule = err["msg"]
    else:
        rule = _RULES.get(kind, err["msg"])
    return f"{loc}: {rule}"


def validate(model: type[BaseModel], data: dict) -> dict:
    """Validate `data` against `model`; return only the fields that were given."""
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(format_validation_error(exc)) from None
    return obj.model_dump(exclude_unset=True)


class _NotANumber:
    """Where the body held NaN, Infinity or a number too large for a float (JSON has no such numbers)."""

    def __init__(self, text: str):
        self.text = text


def _parse_float(text: str):
    value = float(text)
    return value if math.isfinite(value) else _NotANumber(text)


def text_rule(text: str) -> str | None:
    """The rule a string breaks when it cannot be stored or passed on as text (NUL, lone surrogates), or None."""
    if "\x00" in text:
        return "must not contain NUL (\\u0000) characters"
    if _SURROGATE.search(text):
        return "must be valid Unicode text (a lone surrogate such as \\udce9 is not a character)"
    return None


def check_data(data, where: str = "") -> None:
    """Refuse NaN, Infinity and strings holding NUL or lone surrogates anywhere in parsed JSON, naming the field."""
    stack = [(where, data)]
    while stack:  # not recursive: the parser already bounds the depth, this walk must not add to it
        path, value = stack.pop()
        if isinstance(value, str):
            rule = text_rule(value)
            if rule:
                raise BadRequest(f"{path or 'body'}: {rule}")
        elif isinstance(value, _NotANumber):
            raise BadRequest(f"{path or 'body'}: {value.text} is not a JSON number; give a finite number")
        elif isinstance(value, dict):
            for key, item in value.items():
                rule = text_rule(key)
                if rule:
                    raise BadRequest(f"{path or 'body'}: every key {rule}")
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))


def _parse(raw, where: str):
    try:
        return json.loads(raw, parse_constant=_NotANumber, parse_float=_parse_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{where or 'body'}: not valid JSON ({exc})") from None
    except RecursionError:
        raise BadRequest(f"{where or 'body'}: JSON nested too deeply") from None


def loads(raw, where: str = ""):
    """Parse JSON text the way request bodies are read: finite numbers and storable strings only.

    Raises BadRequest naming `where` (the body when empty) and the rule."""
    data = _parse(raw, where)
    check_data(data, where)
    return data


def json_body() -> dict:
    """The request body as a JSON object; Mist's own examples send JSON as form data, so ignore Content-Type.

    Every string in it is storable text and every number finite (400 naming the field otherwise):
    PostgreSQL refuses NUL, no database stores lone surrogates, and Python's JSON reads NaN and
    Infinity, which are not JSON.
    """
    raw = request.get_data(cache=True)
    if not raw:  # no body at all: no field given (run-now, resume); white space alone is not JSON and is refused
        return {}
    data = _parse(raw, "")
    if not isinstance(data, dict):
        raise BadRequest("body: must be a JSON object")
    check_data(data)
    return data


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def check_request_text() -> None:
    """Refuse a path, query string or console form holding NUL or lone surrogates (a before_request hook for every route).

    API bodies are JSON whatever their Content-Type (json_body checks them): curl -d labels JSON as a
    form, and reading it as one would turn a literal %00 in a JSON string into a NUL. The console checks
    its own forms (web.ui.forms.check_text), so that the error is shown beside the field it names.
    """
    rule = text_rule(request.path)
    if rule:
        raise BadRequest(f"path: {rule}")
    fields = [("query", request.args)]
    if not {"api", "ui"} & set(request.blueprints) and request.mimetype in FORM_TYPES:
        request.get_data(cache=True)  # the form is then parsed from this copy, so the body stays readable
        fields.append(("form", request.form))
    for where, values in fields:
        for name, items in values.lists():
            rule = text_rule(name)
            if rule:
                raise BadRequest(f"{where}: field names {rule}")
            for value in items:
                rule = text_rule(value)
                if rule:
                    raise BadRequest(f"{name}: {rule}")


def check_fields(data: dict, writable: set[str], read_only: set[str], aliases: dict[str, str] | None = None) -> dict:
    """Map aliases and reject read-only or unknown fields by name; '' becomes None ("not set")."""
    aliases = aliases or {}
    out: dict = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if key in read_only:
            raise BadRequest(f"{key}: is read-only")
        if name not in writable:
            raise BadRequest(f"{key}: is not a known field")
        if name in out:
            raise BadRequest(f"{key}: given twice ('{name}' and its legacy alias are the same field)")
        out[name] = None if value == "" else value
    return out


def query_int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: must be an integer") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"{name}: must be between {minimum} and {maximum}")
    return value
