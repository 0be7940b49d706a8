"""What the service stores is valid UTF-8 text without NUL, and what a run stores holds none of its secrets.

Two rules, applied where rows are written (a SQLAlchemy before_flush hook on every session), so
they hold whichever code path writes the row:

- Every string in a run, run machine, event or machine row is valid UTF-8 without NUL (both are
  refused by PostgreSQL, and lone surrogates by SQLite too). Text that is not is repaired with
  clean_text(), which keeps the readable part and replaces the rest with U+FFFD.
- While a batch of runs executes (inside run_secrets()), every secret decrypted by the Box (cloud
  credentials, SSH private keys) is remembered with the org it belongs to, and run, run machine
  and event rows written in that time have each of their org's values, in any common encoding,
  replaced by ******** (see plugins/module_utils/_redact.py for the rules). This is the last line
  of defence: messages are redacted where they are made too, but a tool that quotes its input
  (Ansible showing a line of the extra-variables file) must never put a secret in run.error or /logs.

Runs of several orgs share a batch. A row is masked of its own org's secrets only (and of those
decrypted for no org in particular): masked of every org's, a run's output would tell its org
whether a value it printed is another org's secret. Text that the whole batch's playbook produced,
which may quote any of its hosts' variables, is masked where it is made of the secrets of every org it holds runs
of (everywhere()).
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

_current: ContextVar["BatchSecrets | None"] = ContextVar("cloudcron_run_secrets", default=None)


class BatchSecrets:
    """The secrets decrypted while a batch executes, by the org they belong to, and the org of each run."""

    def __init__(self):
        self.every = Redactor()  # all of them: for text of the whole batch (see everywhere())
        self.unowned = Redactor()  # decrypted for no org in particular: masked in every run's rows
        self.by_org: dict[str, Redactor] = {}
        self.run_orgs: dict[str, str] = {}

    def add(self, value, org_id: str | None = None) -> None:
        """Remember `value` (a string, or dicts and lists of them) as a secret of org_id (None: of no org)."""
        self.every.add(value)
        (self.by_org.setdefault(org_id, Redactor()) if org_id else self.unowned).add(value)

    def redactors(self, org_id: str | None) -> list[Redactor]:
        """What masks a row of org_id: its org's secrets and unowned ones; every secret when the org is unknown."""
        if org_id is None:
            return [self.every]
        return [r for r in (self.unowned, self.by_org.get(org_id)) if r]

    def row_org(self, obj) -> str | None:
        """The org of a run, run machine or event row (a run machine's through its run, see note_run)."""
        org_id = getattr(obj, "org_id", None)
        if org_id is None and getattr(obj, "run_id", None) is not None:
            org_id = self.run_orgs.get(obj.run_id)
        return org_id


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
    """Within this block (one batch of runs, on this thread and copies of its context), secrets the Box
    decrypts are kept out of stored run rows: yields the BatchSecrets."""
    batch = BatchSecrets()
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)


def remember_secret(value, org_id: str | None = None) -> None:
    """Called by Box.open with each decrypted secret and the org it is opened for: inside run_secrets() it is
    redacted from then on, from that org's rows (from every run's rows when org_id is None)."""
    batch = _current.get()
    if batch is not None:
        batch.add(value, org_id)


def note_run(run_id: str, org_id: str) -> None:
    """Inside run_secrets(): run_id belongs to org_id, so that its run machine rows are masked of that org's secrets."""
    batch = _current.get()
    if batch is not None:
        batch.run_orgs[run_id] = org_id


def everywhere(text, run_ids=None):
    """`text` masked of the secrets of every org whose runs a playbook holds: for text the whole playbook produced
    (an error tail that may quote any of its hosts' variables), before it is given to its runs.

    run_ids: the playbook's runs. Masked of their orgs' secrets (and unowned ones) only, so that a playbook of
    one org's runs (an Ansible script's, a retry attempt's) never tells that org which values are another org's
    secrets; of every secret of the batch when run_ids is None or holds a run of no known org. Outside a batch:
    unchanged."""
    batch = _current.get()
    if batch is None:
        return text
    orgs = {batch.run_orgs.get(rid) for rid in run_ids} if run_ids is not None else {None}
    if None in orgs:
        return batch.every.redact(text)
    for redactor in [batch.unowned, *(batch.by_org[o] for o in sorted(orgs) if o in batch.by_org)]:
        if redactor:
            text = redactor.redact(text)
    return text


# Tables whose rows are cleaned, and whether their text is also redacted during a run.
_REDACTED = {"runs", "run_machines", "events"}
_CLEANED = _REDACTED | {"machines"}


def _before_flush(session, _flush_context, _instances) -> None:
    batch = _current.get()
    for obj in list(session.new) + list(session.dirty):
        table = getattr(obj, "__tablename__", None)
        if table not in _CLEANED:
            continue
        redactors = batch.redactors(batch.row_org(obj)) if batch is not None and table in _REDACTED else ()
        state = inspect(obj)
        for attr in state.mapper.column_attrs:
            key = attr.key
            if key not in state.dict:  # not loaded: not being written either
                continue
            value = state.dict[key]
            if not isinstance(value, (str, dict, list)):
                continue
            fixed = clean_data(value)
            for redactor in redactors:
                fixed = redactor.redact_data(fixed)
            if fixed != value:
                setattr(obj, key, fixed)


event.listen(Session, "before_flush", _before_flush)
