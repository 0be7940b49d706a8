"""Tokens (both Authorization forms, 401s, hashed at rest) and tenancy (another org's resource is a 404)."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text

from web.auth import revoke_token
from web.models import Token


def test_it_accepts_the_mist_style_bare_token(api):
    status, body = api.get("ping", token=api.token)
    assert status == 200 and body["org"] == "acme"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_it_accepts_a_bearer_token(api, scheme):
    status, body = api.get("ping", token=f"{scheme} {api.token}")
    assert status == 200 and body["org"] == "acme"


@pytest.mark.parametrize("method, path", [("GET", "ping"), ("GET", "schedules"), ("POST", "schedules"),
                                          ("GET", "clouds"), ("POST", "keys"), ("DELETE", "scripts/abc")])
def test_it_answers_401_json_without_a_known_token(api, method, path):
    for header in (None, "", "Bearer ", "Bearer nope", "0" * 64, f"Basic {api.token}"):
        status, body, _ = api.call(method, path, {"name": "x"} if method == "POST" else None,
                                   headers={"Authorization": header})
        assert status == 401, header
        assert "Authorization" in body["error"]


def test_a_revoked_token_is_401(api):
    with api.state.db.transaction() as session:
        assert revoke_token(session, api.token)
    assert api.get("ping")[0] == 401


def test_tokens_are_stored_hashed_never_in_clear(api):
    with api.state.db.session() as session:
        rows = session.execute(text("SELECT * FROM tokens")).all()
        hashes = session.scalars(select(Token.token_hash)).all()
    assert rows and api.token not in str(rows)
    assert len(hashes) == 1 and hashes[0] != api.token
    # Nowhere in the database files either (the WAL holds recent writes).
    db_file = Path(api.state.config.database_url.split("///", 1)[1])
    assert db_file.exists()
    for path in (db_file, Path(f"{db_file}-wal")):
        if path.exists():
            assert api.token.encode() not in path.read_bytes()


# ------------------------------------------------------------------ tenancy

@pytest.fixture
def owned(api, machine, schedule_body):
    """One resource of each kind in org acme: {collection: id}."""
    ids = {"clouds": machine["cloud_id"], f"clouds/{machine['cloud_id']}/machines": machine["id"]}
    status, key = api.post("keys", {"name": "k1", "generate": True})
    assert status == 200, key
    status, script = api.post("scripts", {"name": "s1", "script": "#!/bin/sh\ntrue\n"})
    assert status == 200, script
    status, schedule = api.post("schedules", schedule_body())
    assert status == 200, schedule
    ids.update(keys=key["id"], scripts=script["id"], schedules=schedule["id"])
    return ids


EDITS = {"clouds": {"title": "mine now"}, "keys": {"name": "mine now"}, "scripts": {"name": "mine now"},
         "schedules": {"name": "mine now"}}


@pytest.mark.parametrize("collection", ["schedules", "clouds", "keys", "scripts"])
def test_another_orgs_resource_answers_exactly_like_a_missing_one(api, other_api, owned, collection):
    rid, missing = owned[collection], "f" * 32
    methods = ["GET", "PATCH", "DELETE"] + (["PUT", "POST"] if collection == "schedules" else [])
    for method in methods:
        body = EDITS[collection] if method != "GET" else None
        theirs = other_api.call(method, f"{collection}/{rid}", body)
        nothing = other_api.call(method, f"{collection}/{missing}", body)
        assert theirs[0] == nothing[0] == 404, method
        assert theirs[1]["error"].replace(rid, missing) == nothing[1]["error"], method
    # And it is untouched for its owner.
    status, body = api.get(f"{collection}/{rid}")
    assert status == 200 and "mine now" not in str(body)


def test_another_orgs_machine_answers_404(api, other_api, owned):
    cid, mid = owned["clouds"], owned[f"clouds/{owned['clouds']}/machines"]
    for method, path, body in [("GET", f"clouds/{cid}/machines", None),
                               ("POST", f"clouds/{cid}/machines", {"name": "x", "host": "h"}),
                               ("GET", f"clouds/{cid}/machines/{mid}", None),
                               ("PATCH", f"clouds/{cid}/machines/{mid}", {"port": 2}),
                               ("DELETE", f"clouds/{cid}/machines/{mid}", None)]:
        status, answer, _ = other_api.call(method, path, body)
        assert status == 404, (method, path, answer)
    assert api.get(f"clouds/{cid}/machines/{mid}")[1]["port"] == 2222


def test_lists_show_only_the_tokens_org(api, other_api, owned):
    for collection in ("schedules", "clouds", "keys", "scripts"):
        status, theirs, resp = other_api.call("GET", collection)
        assert status == 200 and theirs == [] and resp.headers["X-Total-Count"] == "0", collection
        assert [r["id"] for r in api.get(collection)[1]] == [owned[collection]]


def test_the_same_names_may_exist_in_two_orgs(api, other_api, owned):
    status, cloud = other_api.post("clouds", {"title": "lab", "provider": "other"})
    assert status == 200, cloud
    status, body = other_api.post("schedules", {"name": "nightly", "action": "stop", "machines_per_cloud": [[cloud["id"], "i-1"]],
                                                "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "hours"}})
    assert status == 200, body
