"""Make this checkout importable as ansible_collections.cloudcron.scheduler when pytest runs outside ansible-test.

ansible-test units installs its own collection loader; a plain `pytest tests/` (make test) does not,
so a temporary ansible_collections/cloudcron/scheduler link to the repository is put on sys.path.
"""
from __future__ import annotations

import atexit
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path


def _importable() -> bool:
    try:
        return importlib.util.find_spec("ansible_collections.cloudcron.scheduler.plugins") is not None
    except ImportError:
        return False


if not _importable():
    _repo = Path(__file__).resolve().parents[3]
    _base = Path(tempfile.mkdtemp(prefix="cloudcron-collection-"))
    (_base / "ansible_collections" / "cloudcron").mkdir(parents=True)
    (_base / "ansible_collections" / "cloudcron" / "scheduler").symlink_to(_repo, target_is_directory=True)
    sys.path.insert(0, str(_base))
    importlib.invalidate_caches()
    atexit.register(shutil.rmtree, str(_base), True)


# ---------------------------------------------------------------- the real service, in process

import io  # noqa: E402
import shutil as _shutil  # noqa: E402
from urllib.error import HTTPError  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import pytest  # noqa: E402

SERVICE_URL = "http://cloudcron.test"


class _Answer:
    """What open_url returns, made of a Flask test response."""

    def __init__(self, resp):
        self._data = resp.get_data()
        self.status = resp.status_code
        self.headers = resp.headers

    def read(self):
        return self._data


class FlaskOpener:
    """An `opener` for CloudcronClient that sends each request to the service's Flask test client.

    The real API code answers (routing, validation, the database), in process; calls lists
    (method, path with query) of every request."""

    def __init__(self, flask_client):
        self.flask = flask_client
        self.calls = []

    def __call__(self, url, data=None, headers=None, method="GET", **_kwargs):
        parts = urlsplit(url)
        path = parts.path + ("?" + parts.query if parts.query else "")
        self.calls.append((method, path))
        resp = self.flask.open(path, method=method, data=data, headers=headers or {})
        if resp.status_code >= 400:
            raise HTTPError(url, resp.status_code, resp.status, resp.headers, io.BytesIO(resp.get_data()))
        return _Answer(resp)


def _service_package():
    # The service does not ship in the collection's tarball: under `ansible-test units` (which tests the
    # installed tarball) the tests that need it are skipped; `make test` runs them on the checkout.
    pytest.importorskip("web", reason="the cloudcron service (web/) is not installed next to the collection")
    pytest.importorskip("flask", reason="the cloudcron service's dependencies are not installed")


@pytest.fixture(scope="session")
def _migrated_service_db(tmp_path_factory):
    _service_package()
    from web import make_state
    from web.config import load_config
    from web.migrate import upgrade

    data = tmp_path_factory.mktemp("plugins-template") / "data"
    st = make_state(load_config({"CLOUDCRON_DATA_DIR": str(data)}))
    upgrade(st.db)
    st.db.dispose()
    return data / "cloudcron.db"


@pytest.fixture
def service(tmp_path, _migrated_service_db):
    """The service's app on a fresh database and a token of org acme: .client() gives a CloudcronClient
    whose requests the app answers (FlaskOpener), .opener its record, .api(method, path, body) a direct call."""
    from web import create_app, make_state
    from web.auth import create_token
    from web.config import load_config
    from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronClient

    data = tmp_path / "data"
    data.mkdir()
    _shutil.copyfile(_migrated_service_db, data / "cloudcron.db")
    st = make_state(load_config({"CLOUDCRON_DATA_DIR": str(data)}))
    with st.db.transaction() as session:
        token = create_token(session, "acme")
    flask = create_app(state=st).test_client()

    class Service:
        opener = FlaskOpener(flask)

        @staticmethod
        def client():
            return CloudcronClient(SERVICE_URL, token, opener=Service.opener)

        @staticmethod
        def api(method, path, body=None):
            resp = flask.open("/api/v1/" + path, method=method, json=body, headers={"Authorization": token})
            return resp.status_code, resp.get_json(silent=True)

    Service.state = st
    yield Service
    st.db.dispose()
