"""What the service stores is valid UTF-8 text without NUL, and what a run stores holds none of its secrets.

Two rules, applied where rows are written (a SQLAlchemy before_flush hook on every session), so
they hold whichever code path writes the row:

- Every string in a run, run machine, event or machine row is valid UTF-8 without NUL (both are
  refused by PostgreSQL, and lone surrogates by SQLite too). Text that is not is repaired with
  clean_text(), which keeps the readable part and replaces the rest with U+FFFD.
- While a run executes (inside run_secrets()), every secret decrypted by the Box (cloud
  credentials, SSH private keys) is remembered, and run, run machine and event rows written in
  that time have each of those values, in any common encoding, replaced by ******** (see
  plugins/module_utils/_redact.py for the rules). This is the last line of defence: messages are
  redacted where they are made too, but a tool that quotes its input (Ansible showing a line of
  the extra-variables file) must never put a secret in run.error or /logs.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from plugins.module_utils._redact import Redactor

REPLACEMENT = "\ufffd"
_BAD = re.compile("[\x00\ud800-\udfff]")
# Ansible decodes command output with errors="surrogateescape": U+DC80..U+DCFF stand for the bytes
# 0x80..0xFF that were not UTF-8. Other lone surrogates stand for nothing.
_NOT_ESCAPES = re.compile("[\ud800-\udc7f\udd00-\udfff]")

_current: ContextVar[Redactor | None] = ContextVar("cloudcron_run_secrets", default=None)


def clean_text(text):
    """`text` as valid UTF-8 without NUL: escaped bytes decoded again, what is not UTF-8 and NUL become U+FFFD.

    Non-strings are returned as they are.
    """
    if not isinstance(text, str) or not _BAD.search(text):
        return text
    raw = _NOT_ESCAPES.sub(REPLACEMENT, text).encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "replace").replace("\x00", REPLACEMENT)


def clean_data(data):
    """clean_text applied to every string of JSON-like data, keys included."""
    if isinstance(data, str):
        return clean_text(data)
    if isinstance(data, dict):
        return {clean_data(k): clean_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [clean_data(v) for v in data]
    return data


@contextmanager
def run_secrets():
    """Within this block (one run, on one thread), secrets the Box decrypts are kept out of stored run rows."""
    redactor = Redactor()
    token = _current.set(redactor)
    try:
        yield redactor
    finally:
        _current.reset(token)


def remember_secret(value) -> None:
    """Called by Box.open with each decrypted secret: inside run_secrets() it is redacted from then on."""
    redactor = _current.get()
    if redactor is not None:
        redactor.add(value)


def current_redactor() -> Redactor | None:
    """The redactor of the run executing on this thread, if any."""
    return _current.get()


# Tables whose rows are cleaned, and whether their text is also redacted during a run.
_REDACTED = {"runs", "run_machines", "events"}
_CLEANED = _REDACTED | {"machines"}


def _before_flush(session, _flush_context, _instances) -> None:
    redactor = _current.get()
    for obj in list(session.new) + list(session.dirty):
        table = getattr(obj, "__tablename__", None)
        if table not in _CLEANED:
            continue
        redact = redactor if redactor and table in _REDACTED else None
        state = inspect(obj)
        for attr in state.mapper.column_attrs:
            key = attr.key
            if key not in state.dict:  # not loaded: not being written either
                continue
            value = state.dict[key]
            if not isinstance(value, (str, dict, list)):
                continue
            fixed = clean_data(value)
            if redact is not None:
                fixed = redact.redact_data(fixed)
            if fixed != value:
                setattr(obj, key, fixed)


event.listen(Session, "before_flush", _before_flush)
