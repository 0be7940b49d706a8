"""Declarative apply: merge a desired state onto a stored resource (or create it), compare on the server, answer the change.

The rules that normalise and check a resource live in its service function (schedules.store,
resources.store_script, ...). apply() runs that same function first without committing (its
`dry_run`: flush only), reads what would be stored, rolls back, and compares with what is stored.
Only when something changed, and the caller did not ask for a dry run, does it run the function
again for real. So an unchanged resource costs one read and one rolled-back flush, and the
answer of a dry run is exactly what a write would store (next_run_at included): the same code
computed it.

Write-only secrets (a cloud's credentials, a key's private half) cannot be compared: they are sent
on create, and on an existing resource only when the caller asks (`update_secrets`), which then
always counts as a change. Create-only options (a schedule's run_immediately) are dropped from an
existing resource's desired state, so they never count as a change.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy.orm import Session

from .errors import BadRequest


@dataclass(frozen=True)
class Kind:
    """How apply treats one kind of resource.

    key: the answer's key for the resource ("schedule"); answer: the API's serialiser of a row;
    fields: the answer's fields a caller manages, compared in this order; create_only: fields that
    mean something only at creation; secrets: write-only fields, never answered nor compared;
    model: the table (found by name by the API).
    """

    key: str
    answer: Callable[[Any], dict]
    fields: tuple[str, ...]
    create_only: frozenset = frozenset()
    secrets: frozenset = frozenset()
    model: Any = None


@dataclass
class Applied:
    """The outcome of one apply: what changed, the diff of the managed fields, and the resource.

    resource: as stored (or, in a dry run, as it would be stored; a dry-run create has id null, since
    nothing was created). row: the stored row (None in a dry run).
    """

    created: bool
    changed_fields: list[str]
    before: dict
    after: dict
    resource: dict
    row: Any = None
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return self.created or bool(self.changed_fields)

    def to_json(self, key: str) -> dict:
        """The API's answer: {"changed", "changed_fields", "diff": {"before", "after"}, "<key>": resource}."""
        return {"changed": self.changed, "changed_fields": self.changed_fields,
                "diff": {"before": self.before, "after": self.after}, "dry_run": self.dry_run, key: self.resource}


def desired_with_name(body: dict, name_field: str, name: str) -> dict:
    """The body with the path's name in `name_field`; a different name in the body is a 400 (rename with PATCH)."""
    given = body.get(name_field)
    if given not in (None, "") and given != name:
        raise BadRequest(f"{name_field}: '{given}' differs from the name in the path ('{name}'); "
                         "rename with PATCH on the resource's id")
    return {**body, name_field: name}


def apply(session: Session, kind: Kind, current, desired: dict, store: Callable[[dict, Any, bool], Any],
          dry_run: bool = False, update_secrets: bool = False) -> Applied:
    """Bring one resource to `desired` (fields as the service function takes them) with `store(values, current, dry_run)`.

    `current` is the stored row or None (then the resource is created). The service function raises
    the API's errors (400 naming the field, 409 on a duplicate) and then nothing is written. Returns
    what changed; the session is committed when something was written, rolled back otherwise.
    """
    given = dict(desired)
    forced: list[str] = []
    if current is not None:
        for name in kind.create_only:
            given.pop(name, None)
        for name in sorted(kind.secrets):
            if name in given:
                if update_secrets and given[name] not in (None, False, ""):
                    forced.append(name)
                else:
                    del given[name]
        before_all = copy.deepcopy(kind.answer(current))
    else:
        before_all = None
    try:
        planned = copy.deepcopy(kind.answer(store(given, current, True)))
    finally:
        session.rollback()  # the trial writes nothing, whatever it found
    if before_all is None:
        changed = [f for f in kind.fields if planned.get(f) not in (None, "", [], {})]
        changed += [s for s in sorted(kind.secrets) if given.get(s) not in (None, False, "")]
        before, after = {}, {f: planned.get(f) for f in kind.fields}
    else:
        changed = [f for f in kind.fields if planned.get(f) != before_all.get(f)]
        before = {f: before_all.get(f) for f in changed}
        after = {f: planned.get(f) for f in changed}
        changed += forced
    created = current is None
    if dry_run:
        resource = planned if changed or created else before_all
        if created:
            resource = {**resource, "id": None}
        return Applied(created, changed, before, after, resource, dry_run=True)
    if not created and not changed:
        return Applied(False, [], {}, {}, before_all, row=current)
    row = store(given, current, False)
    return Applied(created, changed, before, after, kind.answer(row), row=row)
