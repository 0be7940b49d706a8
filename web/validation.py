"""Request parsing: JSON bodies whatever the Content-Type, and validation errors that name the field."""
from __future__ import annotations

import json

from flask import request
from pydantic import BaseModel, ValidationError

from .errors import BadRequest

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


def json_body() -> dict:
    """The request body as a JSON object; Mist's own examples send JSON as form data, so ignore Content-Type."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body: not valid JSON ({exc})") from None
    except RecursionError:
        raise BadRequest("body: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("body: must be a JSON object")
    return data


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
