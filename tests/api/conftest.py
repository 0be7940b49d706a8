"""API tests: the Flask app over a fresh, migrated database, driven through the test client."""
from __future__ import annotations

import shutil

import pytest

from web import create_app, make_state
from web.auth import create_token
from web.config import load_config
from web.migrate import upgrade


class Client:
    """The test client with a token, answering (status, json)."""

    def __init__(self, flask_client, token):
        self.flask = flask_client
        self.token = token

    def call(self, method, path, body=None, token=None, headers=None, raw=None):
        hdrs = {"Authorization": token if token is not None else self.token, **(headers or {})}
        if hdrs["Authorization"] is None:
            del hdrs["Authorization"]
        kwargs = {"data": raw} if raw is not None else ({"json": body} if body is not None else {})
        resp = self.flask.open(path if path.startswith("/") else "/api/v1/" + path, method=method, headers=hdrs, **kwargs)
        return resp.status_code, resp.get_json(silent=True), resp

    def get(self, path, **kw):
        return self.call("GET", path, **kw)[:2]

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)[:2]

    def patch(self, path, body=None, **kw):
        return self.call("PATCH", path, body, **kw)[:2]

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body, **kw)[:2]

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)[:2]

    def new_token(self, org):
        with self.state.db.transaction() as session:
            return create_token(session, org)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory):
    """A migrated SQLite database file to copy: running the migrations for every test is the slow part."""
    data = tmp_path_factory.mktemp("template") / "data"
    st = make_state(load_config({"CLOUDCRON_DATA_DIR": str(data)}))
    upgrade(st.db)
    st.db.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not (data / "cloudcron.db-wal").exists()
    return data / "cloudcron.db"


@pytest.fixture
def state(tmp_path, migrated_db):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(migrated_db, data / "cloudcron.db")
    st = make_state(load_config({"CLOUDCRON_DATA_DIR": str(data)}))
    upgrade(st.db)  # a no-op on the copy; kept so the fixture's promise ("migrated") does not depend on the template
    yield st
    st.db.dispose()


@pytest.fixture
def app(state):
    return create_app(state=state)


@pytest.fixture
def api(app, state):
    with state.db.transaction() as session:
        token = create_token(session, "acme")
    client = Client(app.test_client(), token)
    client.state = state
    return client


@pytest.fixture
def cloud(api):
    """An 'other' cloud with one declared machine."""
    status, body = api.post("clouds", {"title": "lab", "provider": "other"})
    assert status == 200, body
    return body


@pytest.fixture
def machine(api, cloud):
    status, body = api.post(f"clouds/{cloud['id']}/machines", {"name": "web1", "host": "127.0.0.1", "port": 2222})
    assert status == 200, body
    return body


@pytest.fixture
def other_api(api):
    """A client of a second org, on the same app and database."""
    client = Client(api.flask, api.new_token("globex"))
    client.state = api.state
    return client


@pytest.fixture
def schedule_body(cloud):
    """A factory of valid schedule bodies (stop one machine of `cloud` every 2 minutes); field=... drops a field."""

    def make(**fields):
        body = {
            "name": "nightly",
            "action": "stop",
            "machines_per_cloud": [[cloud["id"], "i-781daaf3"]],
            "schedule_type": "interval",
            "schedule_entry": {"every": 2, "period": "minutes"},
        }
        body.update(fields)
        return {k: v for k, v in body.items() if v is not ...}

    return make


@pytest.fixture
def schedule(api, schedule_body):
    """A stored schedule (interval, every 2 minutes)."""
    status, body = api.post("schedules", schedule_body())
    assert status == 200, body
    return body


@pytest.fixture
def backend_api(database_url, tmp_path):
    """A client of a fresh org on a freshly migrated database of each kind (SQLite, PostgreSQL)."""
    st = make_state(load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "backend-data"),
                                 "CLOUDCRON_DATABASE_URL": database_url}))
    upgrade(st.db)
    with st.db.transaction() as session:
        token = create_token(session, "acme")
    client = Client(create_app(state=st).test_client(), token)
    client.state = st
    yield client
    st.db.dispose()
