"""Scaled out with no code change: PostgreSQL and Redis, an API process, two dispatchers and two workers."""
from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

from sqlalchemy import create_engine, text

from tests.harness.backends import REDIS_URL, _pg_database
from tests.harness.service import REPO_ROOT, start_service, wait_until


def test_two_dispatchers_and_two_workers_share_postgresql_and_redis(tmp_path):
    import redis

    url, drop = _pg_database()
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {"CLOUDCRON_DATABASE_URL": url, "CLOUDCRON_QUEUE_URL": REDIS_URL,
           "CLOUDCRON_SECRET_KEY_FILE": str(tmp_path / "shared.key")}
    api = start_service(tmp_path / "api", env=env, serve_args=("--no-dispatcher", "--no-worker"))
    procs = []
    log = open(tmp_path / "engine.log", "wb")
    try:
        for i, role in enumerate(("dispatcher", "dispatcher", "worker", "worker")):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "web", role], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**api.env, "CLOUDCRON_DATA_DIR": str(tmp_path / f"{role}{i}")}))
        # A machine with no SSH key: every run ends at once, failed with that reason, without ansible.
        _, lab = api.api("POST", "clouds", {"title": "lab", "provider": "other"})
        _, m = api.api("POST", f"clouds/{lab['id']}/machines", {"name": "m", "host": "127.0.0.1"})
        _, scr = api.api("POST", "scripts", {"name": "s", "script": "#!/bin/sh\ntrue\n"})
        ids = []
        for i in range(4):
            status, sch = api.api("POST", "schedules", {
                "name": f"s{i}", "script_id": scr["id"], "selectors": [{"type": "machines", "ids": [m["id"]]}],
                "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "seconds"},
                "concurrency": "allow", "max_run_count": 8})
            assert status == 200, sch
            ids.append(sch["id"])

        def all_done():
            runs = [r for sid in ids for r in api.api("GET", f"schedules/{sid}/runs?limit=100")[1]]
            finished = [r for r in runs if r["status"] not in ("queued", "running")]
            return runs if len(finished) == len(runs) == 32 else None

        runs = wait_until(all_done, 90, what="32 finished runs")
        assert Counter(r["status"] for r in runs) == {"failed": 32}
        engine = create_engine(url)
        with engine.connect() as conn:
            dupes = conn.execute(text(
                "SELECT schedule_id, scheduled_for, count(*) FROM runs GROUP BY 1, 2 HAVING count(*) > 1")).all()
            machines_errors = conn.execute(text("SELECT DISTINCT error FROM run_machines")).scalars().all()
        engine.dispose()
        assert dupes == []
        assert machines_errors == ["no SSH key (set key_id on the machine)"]
        for sid in ids:
            sch = api.api("GET", f"schedules/{sid}")[1]
            assert sch["total_run_count"] == 8 and sch["active"] is False
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        api.stop()
        log.close()
        time.sleep(0.2)
        drop()
        redis.Redis.from_url(REDIS_URL).flushdb()
