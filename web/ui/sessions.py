"""Console sessions kept on the server: opened at sign-in, looked up on every page, closed at sign-out.

The signed cookie carries only a random session id; the database keeps its hash (as it keeps
tokens' hashes) with the token it acts for and when it expires. So signing out, expiry and revoking
the token each end the session for every copy of the cookie, and a cookie read from a browser or a
log does not hold anything that opens the API.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from ..auth import Actor
from ..crypto import hash_token, new_token
from ..models import ConsoleSession, Token


def open_session(db, token_hash: str, now: datetime, lifetime: timedelta) -> str | None:
    """A new session for the token with this hash: the id for the cookie, or None for an unknown token.

    Sessions that have expired are deleted on the way (sign-ins are rare; pages are many).
    """
    with db.session() as s:  # an unknown token takes no write lock
        token_id = s.scalar(select(Token.id).where(Token.token_hash == token_hash))
    if token_id is None:
        return None
    sid = new_token()
    with db.transaction() as s:
        s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
        s.add(ConsoleSession(id=hash_token(sid), token_id=token_id, created_at=now, expires_at=now + lifetime))
    return sid


def actor_of(db, sid: str, now: datetime) -> Actor | None:
    """Who a session acts as (its token's id, label and org), or None when it was closed, has expired,
    or its token was revoked."""
    with db.session() as s:
        row = s.execute(select(Token.id, Token.name, Token.org_id)
                        .join(ConsoleSession, ConsoleSession.token_id == Token.id)
                        .where(ConsoleSession.id == hash_token(sid), ConsoleSession.expires_at > now)).first()
    return None if row is None else Actor(row.id, row.name, row.org_id)


def org_of(db, sid: str, now: datetime) -> str | None:
    """The org a session acts for, or None when it was closed, has expired, or its token was revoked."""
    actor = actor_of(db, sid, now)
    return None if actor is None else actor.org_id


def close_session(db, sid: str) -> None:
    """End a session (sign-out) for every copy of its cookie."""
    with db.transaction() as s:
        s.execute(delete(ConsoleSession).where(ConsoleSession.id == hash_token(sid)))
