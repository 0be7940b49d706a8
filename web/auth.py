"""Tokens: how a request proves which org it acts for."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from .crypto import hash_token, new_id, new_token
from .errors import Unauthorized
from .models import Org, Token


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
    org_id = session.scalar(select(Token.org_id).where(Token.token_hash == hash_token(token)))
    if org_id is None:
        raise Unauthorized("Authorization: unknown or revoked token")
    g.org_id = org_id
    return org_id


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
