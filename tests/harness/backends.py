"""Database and queue backends for contract tests: every engine test runs on SQLite and PostgreSQL alike."""
from __future__ import annotations

import os
import uuid

import pytest

PG_ADMIN_URL = os.environ.get("CLOUDCRON_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CLOUDCRON_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _pg_database():
    """Create a throw-away PostgreSQL database; returns (url, drop)."""
    import psycopg

    name = "cloudcron_" + uuid.uuid4().hex[:12]
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}", drop


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database of each kind cloudcron supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloudcron.db'}"
        return
    url, drop = _pg_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request, tmp_path):
    """A fresh queue of each kind: a SQLite file, or a Redis database flushed before and after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
