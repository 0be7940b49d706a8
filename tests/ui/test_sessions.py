"""Console sessions end on the server: signing out, expiry and revoking the token each stop a cookie
that was copied before, and the cookie carries neither the token nor anything that opens the API."""
from __future__ import annotations

import base64
import json
import zlib
from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from .conftest import Console, text


def _cookie(client) -> str:
    return client.get_cookie("cloudcron_session", path="/ui").value


def _payload(cookie: str) -> dict:
    """What a signed Flask cookie carries (it is signed, not encrypted: anyone holding it can read it)."""
    body = cookie.split(".")[1] if cookie.startswith(".") else cookie.split(".")[0]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return json.loads(zlib.decompress(raw) if cookie.startswith(".") else raw)


def _replay(app, cookie: str):
    """A second browser holding a copy of the cookie."""
    thief = app.test_client()
    thief.set_cookie("cloudcron_session", cookie, path="/ui")
    return thief.get("/ui/schedules")


def test_signing_out_ends_the_session_for_a_copy_of_its_cookie(app, console):
    copied = _cookie(console.flask)
    assert _replay(app, copied).status_code == 200
    assert console.post("/ui/signout").status_code == 302
    resp = _replay(app, copied)
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/ui/signin")


def test_signing_out_ends_only_that_session(app, api, console):
    other = Console(app.test_client())
    assert other.sign_in(api.token).status_code == 302
    console.post("/ui/signout")
    assert other.get("/ui/schedules").status_code == 200


def test_an_expired_session_ends_on_the_server_whatever_the_cookie_says(app, console, state):
    from web.models import ConsoleSession

    copied = _cookie(console.flask)
    with state.db.transaction() as s:
        s.execute(update(ConsoleSession).values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert _replay(app, copied).status_code == 302
    assert console.get("/ui/").status_code == 302


def test_revoking_the_token_ends_a_copied_cookie_too(app, api, console, state):
    from web.auth import revoke_token

    copied = _cookie(console.flask)
    with state.db.transaction() as session:
        assert revoke_token(session, api.token)
    assert _replay(app, copied).status_code == 302


def test_the_cookie_carries_neither_the_token_nor_its_hash(console, api):
    from web.crypto import hash_token

    payload = json.dumps(_payload(_cookie(console.flask)))
    assert api.token not in payload and hash_token(api.token) not in payload


def test_the_session_table_keeps_hashes_not_the_cookies_id(console, state):
    from sqlalchemy import select

    from web.models import ConsoleSession

    sid = _payload(_cookie(console.flask))["sid"]
    with state.db.session() as s:
        [row_id] = s.scalars(select(ConsoleSession.id)).all()
    assert row_id != sid and sid not in row_id


def test_a_new_sign_in_clears_sessions_that_have_expired(app, api, console, state):
    from sqlalchemy import func, select

    from web.models import ConsoleSession

    with state.db.transaction() as s:
        s.execute(update(ConsoleSession).values(expires_at=datetime.now(timezone.utc) - timedelta(hours=1)))
    fresh = Console(app.test_client())
    assert fresh.sign_in(api.token).status_code == 302
    with state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsoleSession)) == 1
    assert "Dashboard" in text(fresh.get("/ui/"))


def test_signing_in_again_ends_the_session_it_replaces(app, api, console, other_api):
    copied = _cookie(console.flask)
    assert console.sign_in(other_api.token).status_code == 302  # the same browser, now for another org
    assert _replay(app, copied).status_code == 302
    assert "globex" in text(console.get("/ui/"))
