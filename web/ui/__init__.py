"""The web console, /ui/: server-rendered pages over the same service functions as the REST API.

Sign-in exchanges an API token for a session cookie (HttpOnly, SameSite=Strict, Secure when the
request came over HTTPS, expiring after CLOUDCRON_UI_SESSION_HOURS); the cookie carries a random
session id that the service keeps (sessions.py), so signing out, expiry and revoking the token end
the session for every copy of the cookie. Every form carries a CSRF token
(Flask-WTF). htmx, vendored under static/, only enhances pages that work without JavaScript.
"""
from __future__ import annotations

from flask import Blueprint, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

HTMX_VERSION = "2.0.11"

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
csrf = CSRFProtect()

# Pages load scripts and styles only from the service itself; htmx is told (htmx-config) not to
# inject inline styles or evaluate code, so nothing inline is needed.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure exactly when the request came over HTTPS.

    Behind a proxy that terminates TLS, the proxy must tell the service (CLOUDCRON_TRUSTED_PROXY, and
    X-Forwarded-Proto from the proxy) for the flag to be set.
    """

    def get_cookie_secure(self, app) -> bool:
        return request.is_secure


def init_app(app, state) -> None:
    """Register the console on `app`: session signing key, cookie flags, CSRF, and the blueprint."""
    app.secret_key = state.box.derive("console session")
    app.session_interface = SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="cloudcron_session",
        SESSION_COOKIE_PATH="/ui",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=state.config.ui_session_lifetime,
        # The lifetime counts from sign-in: a used session does not extend itself.
        SESSION_REFRESH_EACH_REQUEST=False,
        # The API authenticates with a header and no cookie, so it needs no CSRF token; the
        # console's before_request asks for one on every form it receives.
        WTF_CSRF_CHECK_DEFAULT=False,
        # Valid as long as the session is: a form left open an hour still posts.
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)
    from . import views  # noqa: F401  (routes)

    app.register_blueprint(bp)
