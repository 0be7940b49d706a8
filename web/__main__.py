"""Command line: python -m web serve | migrate | token create | token revoke."""
from __future__ import annotations

import argparse
import logging
import sys

from sqlalchemy.exc import DBAPIError

from .config import ConfigError, StartupError, log_format
from .logs import setup as setup_logging


def _state():
    from . import make_state

    return make_state()


def cmd_migrate(args) -> int:
    from .migrate import prepare

    prepare(_state().db)
    print("database is up to date", file=sys.stderr)
    return 0


def cmd_token_create(args) -> int:
    from .auth import create_token

    st = _state()
    with st.db.transaction() as session:
        token = create_token(session, args.org, args.name)
    print(token)
    return 0


def cmd_token_revoke(args) -> int:
    from .auth import revoke_token

    st = _state()
    with st.db.transaction() as session:
        found = revoke_token(session, args.token)
    if not found:
        print("no such token", file=sys.stderr)
        return 1
    print("token revoked", file=sys.stderr)
    return 0


def first_start(st) -> str | None:
    """On a database with no org yet, create org `default` and return its new token."""
    from sqlalchemy import select

    from .auth import create_token
    from .models import Org

    with st.db.transaction() as session:
        if session.scalar(select(Org.id).limit(1)) is not None:
            return None
        return create_token(session, "default", "first start")


def listen(app, host: str, port: int, threads: int, trusted_proxy: str | None = None):
    """Bind the HTTP server now (nothing is served until .run()); StartupError in one line when it cannot.

    trusted_proxy (CLOUDCRON_TRUSTED_PROXY): the peer whose X-Forwarded-For (its last hop: the client the
    proxy saw) and X-Forwarded-Proto waitress applies; from any other peer those headers are dropped."""
    from waitress.server import create_server

    proxy = {}
    if trusted_proxy:
        proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_count": 1,
                 "trusted_proxy_headers": "x-forwarded-for x-forwarded-proto", "clear_untrusted_proxy_headers": True}
    try:
        return create_server(app, host=host, port=port, threads=threads, ident="cloudcron", **proxy)
    except (OSError, ValueError) as exc:  # waitress: ValueError for a host it cannot resolve
        reason = (getattr(exc, "strerror", None) or str(exc)).rstrip(".")
        raise StartupError(f"cannot listen on {host}:{port}: {reason[:1].lower()}{reason[1:]}") from None


def cmd_serve(args) -> int:
    import signal

    from . import create_app
    from .engine import start_embedded
    from .migrate import prepare
    from .queue import check_queue

    st = _state()
    if not st.config.public_url:  # links in notifications point at this server unless told otherwise
        st.config.public_url = f"http://{args.host}:{args.port}"
    if st.config.listing_slots >= args.threads:
        raise ConfigError(f"CLOUDCRON_LISTING_SLOTS: must be below --threads ({args.threads}) so that requests other "
                          f"than provider listings always find a thread, got {st.config.listing_slots}")
    prepare(st.db)
    check_queue(st)  # the API enqueues runs too (run now, run_immediately)
    app = create_app(state=st)
    # Bound before anything starts: a port in use stops here, before the dispatcher, the worker or a
    # first-start token.
    server = listen(app, args.host, args.port, args.threads, st.config.trusted_proxy)
    st.sandbox.announce()  # only once start-up can no longer be refused: a refusal is one line
    try:
        token = first_start(st)
        if token:
            print(f"Created org 'default'. Its API token (shown once, keep it):\n{token}", flush=True)
        engine = start_embedded(st, dispatcher=not args.no_dispatcher, worker=not args.no_worker)
    except BaseException:
        server.close()
        raise

    def stop_serving(signum, _frame):
        # Raised in the main thread, inside waitress's loop, which ends on SystemExit.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        logging.getLogger("web").info("received %s: draining", signal.Signals(signum).name)
        raise SystemExit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_serving)
    print(f"cloudcron API on http://{args.host}:{args.port}/api/v1 (docs at /api/v1/docs); "
          f"web console at http://{args.host}:{args.port}/ui/", flush=True)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        # The API stops first (no new requests, the port is free again), then runs in progress drain.
        server.close()
        interrupted = engine.drain(st.config.drain_seconds)
        if interrupted:
            logging.getLogger("web").warning("%d run(s) interrupted at shutdown", interrupted)
    return 0


def cmd_worker(args) -> int:
    from .engine import run_worker

    return run_worker(_state(), workers=args.workers)


def cmd_dispatcher(args) -> int:
    from .engine import run_dispatcher

    return run_dispatcher(_state())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description="cloudcron: schedules for cloud machines")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="API, dispatcher and a worker in one process")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--threads", type=int, default=8, help="HTTP worker threads")
    p.add_argument("--no-dispatcher", action="store_true", help="serve the API without a dispatcher")
    p.add_argument("--no-worker", action="store_true", help="serve the API without a worker")
    p.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(func=cmd_migrate)

    p = sub.add_parser("worker", help="run workers only")
    p.add_argument("--workers", type=int, default=2, help="runs executed at once")
    p.set_defaults(func=cmd_worker)
    sub.add_parser("dispatcher", help="run a dispatcher only").set_defaults(func=cmd_dispatcher)

    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    p = tok.add_parser("create", help="create a token (and the org if new); prints only the token")
    p.add_argument("--org", required=True)
    p.add_argument("--name", help="a label for the token")
    p.set_defaults(func=cmd_token_create)
    p = tok.add_parser("revoke", help="revoke a token")
    p.add_argument("token")
    p.set_defaults(func=cmd_token_revoke)

    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level, log_format())
    except ConfigError as exc:
        print(f"cloudcron: configuration error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"cloudcron: --log-level: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"cloudcron: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"cloudcron: {exc}", file=sys.stderr)
        return 2
    except DBAPIError as exc:  # token create/revoke on a database that went away: no traceback either
        reason = exc.orig if exc.orig is not None else exc
        print(f"cloudcron: database error: {' '.join(str(reason).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
