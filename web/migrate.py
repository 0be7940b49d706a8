"""Schema migrations with Alembic, driven from cloudcron's own configuration."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

from sqlalchemy.exc import DBAPIError

from .db import Database

HERE = Path(__file__).parent


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(db: Database) -> None:
    """Bring the database schema to the newest revision."""
    cfg = alembic_config(db.url)
    # The writer engine on SQLite begins IMMEDIATE, so two processes migrating at once take turns.
    with db.writer.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def prepare(db: Database) -> None:
    """Migrate and check that the database can be written; DatabaseUnavailable (one line) when it cannot."""
    try:
        upgrade(db)
    except DBAPIError as exc:
        raise db.unavailable(exc) from None
    db.check_writable()
