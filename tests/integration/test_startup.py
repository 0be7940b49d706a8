"""Start-up refusals of the real processes (`python -m web serve | worker | dispatcher`): a port in use, a database
or queue that cannot be written, an unreachable or read-only PostgreSQL. Each is one line on stderr and exit
status 2, before anything starts: no traceback, no "cloudcron API on", no dispatcher or worker, no first token."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.harness.backends import PG_ADMIN_URL, _pg_database
from tests.harness.service import REPO_ROOT, free_port, run_cli
from web.config import load_config
from web.queue import make_huey

TIMEOUT = 120


def cloudcron(env: dict, *args: str, as_plain_user: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m web <args>`; as_plain_user: without root's power to write any file (setpriv drops it)."""
    cmd = [sys.executable, "-m", "web", *args]
    if as_plain_user and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv (util-linux) is needed to test read-only files as root; `make test` installs it",
                        pytrace=False)
        cmd = [setpriv, "--inh-caps=-dac_override,-fowner", "--bounding-set=-dac_override,-fowner", *cmd]
    return subprocess.run(cmd, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=TIMEOUT)


def environment(data_dir: Path, **extra) -> dict:
    return {**os.environ, "CLOUDCRON_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra}


def assert_refused(proc: subprocess.CompletedProcess, starts_with: str) -> str:
    """The process exited 2 having printed exactly one line, which starts as given; nothing else ran."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout  # no first-start token, no "cloudcron API on"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts_with), proc.stderr
    return lines[0]


def test_serve_on_a_port_in_use_says_so_in_one_line_before_starting_anything(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = environment(tmp_path / "data")
        proc = cloudcron(env, "serve", "--host", "127.0.0.1", "--port", str(port))
    line = assert_refused(proc, "cloudcron: ")
    assert line == f"cloudcron: cannot listen on 127.0.0.1:{port}: address already in use"
    # No org was made either: the first start that can listen still prints the default org's token.
    proc = subprocess.Popen([sys.executable, "-m", "web", "serve", "--port", str(free_port()), "--no-worker",
                             "--no-dispatcher"], cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "Created org 'default'" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_on_a_host_it_cannot_resolve_says_so_in_one_line(tmp_path):
    proc = cloudcron(environment(tmp_path / "data"), "serve", "--host", "no-such-host.invalid", "--port", "8080")
    assert_refused(proc, "cloudcron: cannot listen on no-such-host.invalid:8080: ")


def migrated(data_dir: Path, **extra) -> dict:
    env = environment(data_dir, **extra)
    proc = run_cli(env, "migrate")
    assert proc.returncode == 0, proc.stderr
    return env


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"], ["dispatcher"], ["migrate"]],
                         ids=lambda c: c[0])
def test_a_read_only_sqlite_database_file_is_refused_at_start(tmp_path, command):
    env = migrated(tmp_path / "data")
    (tmp_path / "data" / "cloudcron.db").chmod(0o444)
    line = assert_refused(cloudcron(env, *command, as_plain_user=True), "cloudcron: cannot use the database sqlite:")
    assert "readonly database" in line and "permissions" in line


def test_a_read_only_data_directory_is_refused_at_start(tmp_path):
    env = migrated(tmp_path / "data")
    (tmp_path / "data").chmod(0o555)
    try:
        line = assert_refused(cloudcron(env, "serve", "--port", "0", as_plain_user=True),
                              "cloudcron: cannot use the database sqlite:")
    finally:
        (tmp_path / "data").chmod(0o755)
    assert "permissions" in line


def test_a_read_only_queue_file_is_refused_at_start(tmp_path):
    env = migrated(tmp_path / "data")
    make_huey(load_config(env)).storage.close()  # the queue file, with its tables, as a first start leaves it
    (tmp_path / "data" / "queue.db").chmod(0o444)
    line = assert_refused(cloudcron(env, "worker", as_plain_user=True), "cloudcron: cannot use the queue ")
    assert "readonly database" in line


def test_an_unreachable_postgresql_is_refused_at_start_without_its_password(tmp_path):
    url = f"postgresql+psycopg://cloudcron:s3cret-pw@127.0.0.1:{free_port()}/cloudcron"
    for command in (["serve", "--port", "0"], ["worker"], ["token", "create", "--org", "x"]):
        proc = cloudcron(environment(tmp_path / "data", CLOUDCRON_DATABASE_URL=url), *command)
        line = assert_refused(proc, "cloudcron: ")
        assert "Connection refused" in line and "s3cret-pw" not in line, line


def test_a_read_only_postgresql_is_refused_at_start(tmp_path):
    url, drop = _pg_database()
    try:
        env = migrated(tmp_path / "data", CLOUDCRON_DATABASE_URL=url)
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        line = assert_refused(cloudcron(env, "serve", "--port", "0"), "cloudcron: cannot use the database postgresql")
        assert "read-only transaction" in line
    finally:
        drop()
