"""Engines and sessions. SQLite runs in WAL mode with a busy timeout so several processes can write."""
from __future__ import annotations

import logging
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from . import scrub  # noqa: F401 - installs the hook that cleans and redacts rows as they are written
from .config import StartupError

BUSY_TIMEOUT_MS = 30_000
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")

log = logging.getLogger(__name__)


def sqlite_file(url: str) -> str | None:
    """The file of a sqlite:/// URL (database or queue); None for other URLs and in-memory databases."""
    if not url.startswith("sqlite") or "///" not in url:
        return None
    path = url.split("///", 1)[1].split("?", 1)[0]
    return None if path in ("", ":memory:") else path


def private_sqlite_file(path: str | Path) -> None:
    """Make a SQLite file (database or queue) and its WAL/SHM files readable by the owner only (0600).

    SQLite creates a new database with the umask (usually 0644) and gives its WAL and SHM files
    the database file's mode, so creating the file 0600 before SQLite opens it covers all three.
    Files an older version created are tightened too.
    """
    path = str(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    for suffix in SQLITE_SUFFIXES:
        try:
            mode = os.stat(path + suffix).st_mode
            if stat.S_IMODE(mode) & 0o077:
                os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            pass
        except PermissionError as exc:  # another user's file: leave it, the operator chose that
            log.warning("cannot make %s private: %s", path + suffix, exc.strerror)


# A write that changes nothing, on a table every migrated database has: it needs write access to the
# file (SQLite) or a read-write transaction with UPDATE rights (PostgreSQL), and leaves no trace.
_WRITE_PROBE = text("UPDATE alembic_version SET version_num = version_num WHERE 1 = 0")


class DatabaseUnavailable(StartupError):
    """The database cannot be opened or written; the message names it (without its password) and the reason."""


def describe(url: str, exc: BaseException) -> str:
    """One line saying which database failed and the driver's reason, without SQL, parameters or password."""
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown without its credentials
        shown = url.split("@")[-1]
    reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    detail = " ".join(str(reason).split()) or type(reason).__name__
    return f"{shown}: {detail}"


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Take transaction control from the sqlite3 module so BEGIN IMMEDIATE is possible.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(begin)

    return engine


class Database:
    """A reader engine and a writer engine over the same database.

    On SQLite a read-then-write transaction that started DEFERRED fails at once with "database is
    locked" when another process wrote in between; writers therefore BEGIN IMMEDIATE and wait their
    turn (busy timeout), while readers stay concurrent. On PostgreSQL both are the same engine.
    """

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = sqlite_file(url)
            if path:
                private_sqlite_file(path)
            self.reader = _sqlite_engine(url, "BEGIN")
            self.writer = _sqlite_engine(url, "BEGIN IMMEDIATE")
        else:
            self.reader = self.writer = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self._read = sessionmaker(self.reader, expire_on_commit=False)
        self._write = sessionmaker(self.writer, expire_on_commit=False)

    def check_writable(self) -> None:
        """Refuse, with DatabaseUnavailable, a migrated database this process cannot reach or write.

        Covers a read-only SQLite file or directory (WAL needs to create files beside the database),
        an unreachable PostgreSQL, and a read-only one (a standby, default_transaction_read_only).
        """
        try:
            with self.writer.connect() as conn:
                with conn.begin() as transaction:
                    conn.execute(_WRITE_PROBE)
                    transaction.rollback()
        except DBAPIError as exc:
            raise self.unavailable(exc) from None

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        """The start-up error for a failure to open or write this database."""
        hint = " (check the permissions of the database file and of its directory)" if self.is_sqlite else ""
        return DatabaseUnavailable(f"cannot use the database {describe(self.url, exc)}{hint}")

    def session(self, write: bool = False) -> Session:
        return (self._write if write else self._read)()

    @contextmanager
    def transaction(self):
        """A write transaction: committed on success, rolled back on any exception."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self):
        self.reader.dispose()
        if self.writer is not self.reader:
            self.writer.dispose()
