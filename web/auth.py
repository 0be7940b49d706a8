"""Tokens: how a request proves which org it acts for, and who acts (the actor the audit log records)."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone

from flask import g, has_app_context, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from .crypto import hash_token, new_id, new_token
from .errors import Unauthorized
from .models import Org, Token


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the token (its id and label) and its org. Never the token itself."""

    token_id: str | None
    label: str | None
    org_id: str | None


# Outside a request (the command line, a test calling a service function) the actor lives here;
# inside one it lives on flask.g, which ends with the request, so a pooled thread never carries it on.
_actor: ContextVar[Actor | None] = ContextVar("cloudcron_actor", default=None)


def set_actor(actor: Actor | None) -> None:
    """Make `actor` the one service functions record for the rest of this request (or context)."""
    if has_app_context():
        g.actor = actor
    else:
        _actor.set(actor)


def current_actor() -> Actor | None:
    """The actor of this request (set where its token or console session was checked), else of this context.

    None when nobody authenticated (a background job); the audit log then records no token.
    """
    if has_app_context() and g.get("actor") is not None:
        return g.actor
    return _actor.get()


@contextmanager
def acting_as(actor: Actor | None):
    """Within this block, outside a request, changes are recorded as made by `actor`."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def token_from_header(value: str | None) -> str | None:
    """Accept Mist's bare `Authorization: <token>` and the usual `Bearer <token>`."""
    if not value:
        return None
    value = value.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def authenticate(session: Session) -> str:
    """The org id of the request's token, or 401."""
    token = token_from_header(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized("Authorization: a token is required (Authorization: <token> or Bearer <token>)")
    row = session.execute(select(Token.id, Token.name, Token.org_id)
                          .where(Token.token_hash == hash_token(token))).first()
    if row is None:
        raise Unauthorized("Authorization: unknown or revoked token")
    g.org_id = row.org_id
    set_actor(Actor(row.id, row.name, row.org_id))
    return row.org_id


def ensure_org(session: Session, name: str) -> Org:
    """The org called `name`, created if new."""
    org = session.scalar(select(Org).where(Org.name == name))
    if org is None:
        org = Org(id=new_id(), name=name, created_at=datetime.now(timezone.utc))
        session.add(org)
        session.flush()
    return org


def create_token(session: Session, org_name: str, label: str | None = None) -> str:
    """Create a token for an org (creating the org if new); the clear token is returned only here."""
    org = ensure_org(session, org_name)
    token = new_token()
    session.add(Token(id=new_id(), org_id=org.id, name=label, token_hash=hash_token(token),
                      created_at=datetime.now(timezone.utc)))
    return token


def revoke_token(session: Session, token: str) -> bool:
    """Delete a token; False when it did not exist."""
    row = session.scalar(select(Token).where(Token.token_hash == hash_token(token)))
    if row is None:
        return False
    session.delete(row)
    return True
