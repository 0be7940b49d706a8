"""Console tests through Flask's test client: the same app and fresh database as the API tests."""
from __future__ import annotations

import re

import pytest

from tests.api.conftest import (  # noqa: F401  (fixtures shared with the API tests)
    api, app, cloud, machine, migrated_db, other_api, schedule, schedule_body, state,
)

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Console:
    """A browser-less console session: the Flask test client with its cookie jar, and the form's CSRF token."""

    def __init__(self, flask_client):
        self.flask = flask_client

    def csrf(self, path: str = "/ui/signin") -> str:
        page = self.flask.get(path)
        match = CSRF.search(page.get_data(as_text=True))
        assert match, f"no CSRF token on {path}: {page.status_code}"
        return match.group(1)

    def sign_in(self, token: str):
        return self.flask.post("/ui/signin", data={"token": token, "csrf_token": self.csrf()})

    def get(self, path: str, **kw):
        return self.flask.get(path, **kw)

    def post(self, path: str, data: dict | None = None, csrf_from: str | None = None, **kw):
        """POST a form with the CSRF token a page of this session carries (csrf_from, default the path itself)."""
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf(csrf_from or "/ui/"))
        return self.flask.post(path, data=data, **kw)


@pytest.fixture
def console(app, api):
    """A signed-in console session of the API client's org (acme)."""
    c = Console(app.test_client())
    resp = c.sign_in(api.token)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return c


@pytest.fixture
def other_console(app, other_api):
    """A signed-in console session of a second org (globex)."""
    c = Console(app.test_client())
    assert c.sign_in(other_api.token).status_code == 302
    return c


def text(resp) -> str:
    return resp.get_data(as_text=True)
