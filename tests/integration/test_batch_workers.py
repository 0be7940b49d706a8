"""Two real worker processes taking batches from one backlog: SQLite with its file queue, PostgreSQL with Redis.

Every run must be executed exactly once (one schedule_started event, one per-machine result) and none
left behind. The machines have no SSH key, so each run ends at once without ansible: the test is about
the claim, not about executing.
"""
from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from sqlalchemy import create_engine, text

from tests.harness.backends import REDIS_URL, _pg_database
from tests.harness.service import REPO_ROOT, start_service, wait_until

pytestmark = pytest.mark.timeout(400)
RUNS = 60


@pytest.mark.parametrize("backend", ["sqlite", "postgresql+redis"])
def test_two_worker_processes_share_a_backlog_each_run_once(tmp_path, backend):
    env, drop, url = {}, None, None
    if backend != "sqlite":
        import redis

        url, drop = _pg_database()
        redis.Redis.from_url(REDIS_URL).flushdb()
        env = {"CLOUDCRON_DATABASE_URL": url, "CLOUDCRON_QUEUE_URL": REDIS_URL}
    # Small batches, so that both workers get some: the backlog is several batches long.
    env.update({"CLOUDCRON_BATCH_MAX_RUNS": "7", "CLOUDCRON_SECRET_KEY_FILE": str(tmp_path / "shared.key")})
    api = start_service(tmp_path / "data", env=env, serve_args=("--no-worker",))
    workers, log = [], open(tmp_path / "workers.log", "wb")
    try:
        _, lab = api.api("POST", "clouds", {"title": "lab", "provider": "other"})
        _, m = api.api("POST", f"clouds/{lab['id']}/machines", {"name": "m", "host": "127.0.0.1"})
        _, scr = api.api("POST", "scripts", {"name": "s", "script": "#!/bin/sh\ntrue\n"})
        ids = []
        for i in range(RUNS):  # run_immediately: each makes one queued run, enqueued at once
            status, sch = api.api("POST", "schedules", {
                "name": f"s{i}", "script_id": scr["id"], "selectors": [{"type": "machines", "ids": [m["id"]]}],
                "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"},
                "run_immediately": True})
            assert status == 200, sch
            ids.append(sch["id"])
        for i in range(2):
            data_dir = api.data_dir if backend == "sqlite" else tmp_path / f"worker{i}"
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "web", "worker"], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**api.env, "CLOUDCRON_DATA_DIR": str(data_dir)}))

        def all_done():
            runs = [r for sid in ids for r in api.api("GET", f"schedules/{sid}/runs")[1]]
            return runs if len(runs) == RUNS and all(r["status"] not in ("queued", "running") for r in runs) else None

        runs = wait_until(all_done, 180, what=f"{RUNS} finished runs")
        assert Counter(r["status"] for r in runs) == {"failed": RUNS}
        engine = create_engine(url or f"sqlite:///{api.data_dir / 'cloudcron.db'}")
        with engine.connect() as conn:
            started = dict(conn.execute(text(
                "SELECT run_id, count(*) FROM events WHERE type = 'schedule_started' GROUP BY run_id")).all())
            rows = dict(conn.execute(text("SELECT run_id, count(*) FROM run_machines GROUP BY run_id")).all())
            batches = conn.execute(text("SELECT count(DISTINCT started_at) FROM runs")).scalar()
        engine.dispose()
        assert sorted(started) == sorted(r["id"] for r in runs) and set(started.values()) == {1}
        assert set(rows.values()) == {1} and len(rows) == RUNS
        assert 1 < batches < RUNS  # batches of several runs, not one run each
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        log.close()
        api.stop()
        if drop is not None:
            drop()
