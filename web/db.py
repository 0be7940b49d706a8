"""Engines and sessions. SQLite runs in WAL mode with a busy timeout so several processes can write."""
from __future__ import annotations

import logging
import os
import stat
from contextlib import contextmanager
from typing import Iterator
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
    """Make a SQLite file (database or queue) and its WAL/SHM files the owner's only (0600 when new).

    SQLite creates a new database with the umask (usually 0644) and gives its WAL and SHM files
    the database file's mode, so creating the file 0600 before SQLite opens it covers all three.
    Files an older version created lose their group and other rights, and gain none: a file the
    operator made read-only stays read-only, so the start-up write check still refuses it.
    """
    path = str(path)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    except OSError:
        # A path that cannot be a database (a directory, no rights) is refused when it is first used,
        # with the start-up check's one-line message; here there is nothing to make private.
        return
    for suffix in SQLITE_SUFFIXES:
        try:
            mode = os.stat(path + suffix).st_mode
            if stat.S_IMODE(mode) & 0o077:
                os.chmod(path + suffix, stat.S_IMODE(mode) & ~0o077)  # never adds a right: read-only stays read-only
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


class SqliteStatement:
    """A statement compiled once for SQLite and run on the DBAPI cursor, with SQLAlchemy's own type conversions.

    The dispatcher's claim is the hot path (10,000 schedules a minute is ~170 claims a second), and
    SQLAlchemy's per-execution work (cache key, parameter and result processing through the execution
    context, events) was most of its CPU; the SQL text and the conversions stay SQLAlchemy's. Get one with
    sqlite_statement(); run it on a Connection of a SQLite engine, inside the caller's transaction."""

    def __init__(self, stmt, dialect):
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or ())
        self.defaults = [compiled.binds[n].value for n in self.names]
        # dialect_impl: the SQLite forms (DATETIME as 'YYYY-MM-DD HH:MM:SS.ffffff', JSON, booleans), exactly
        # what the ORM stores; the generic types' processors would leave datetimes to sqlite3's own adapter.
        self.binds = [compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in self.names]
        columns = list(getattr(stmt, "selected_columns", ()))
        self.keys = [c.key for c in columns]
        self.results = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]

    def params(self, values: dict) -> tuple:
        """The DBAPI parameters for {bind name: value}; a name not given takes the statement's own value."""
        out = []
        for name, default, bind in zip(self.names, self.defaults, self.binds):
            v = values.get(name, default)
            out.append(bind(v) if bind is not None and v is not None else v)
        return tuple(out)

    def row(self, raw) -> dict:
        """A raw result row as {column key: converted value}; raises when a stored value cannot be converted."""
        return {k: (p(v) if p is not None and v is not None else v) for k, p, v in zip(self.keys, self.results, raw)}

    def row_or_error(self, raw) -> tuple[dict, str | None]:
        """row(), or the columns that convert (the others None) and why the row cannot be read ('Type: message')."""
        try:
            return self.row(raw), None
        except Exception as exc:  # noqa: BLE001 - a corrupt stored value: the caller reports it on its row
            out = {}
            for k, p, v in zip(self.keys, self.results, raw):
                try:
                    out[k] = p(v) if p is not None and v is not None else v
                except Exception:  # noqa: BLE001
                    out[k] = None
            text = f"{type(exc).__name__}: {exc}"
            return out, text if len(text) <= 500 else text[:500] + "..."

    @contextmanager
    def rows(self, conn, values: dict | None = None) -> Iterator[Iterator[tuple[dict, str | None]]]:
        """Run a select; yields an iterator of row_or_error() pairs read lazily (stop early: the rest is never
        converted). The cursor is closed when the with block ends."""
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            yield (self.row_or_error(raw) for raw in cursor.execute(self.sql, self.params(values or {})))
        finally:
            cursor.close()

    def execute_many(self, conn, values: list[dict]) -> None:
        """Run an insert or update once per {bind name: value} dict (nothing when the list is empty)."""
        if not values:
            return
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.executemany(self.sql, [self.params(v) for v in values])
        finally:
            cursor.close()


_COMPILED: dict = {}  # (dialect, statement) -> SqliteStatement


def sqlite_statement(conn, stmt) -> SqliteStatement:
    """`stmt` compiled for `conn`'s SQLite dialect, once per process (statements are module-level constants)."""
    key = (conn.dialect, stmt)
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = _COMPILED[key] = SqliteStatement(stmt, conn.dialect)
    return compiled
