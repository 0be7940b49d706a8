"""Retention through the real server process: old runs are pruned in batches while the API keeps answering."""
from __future__ import annotations

import sqlite3
import threading
import urllib.request
from datetime import datetime, timedelta, timezone

from tests.harness.service import start_service, wait_until

KEEP = 10
RUNS = 4000


def _stamp(at: datetime) -> str:
    return at.astimezone(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert_runs(db_path, org_id: str, schedule_id: str, ages: list[timedelta]) -> list[str]:
    """Runs (with a machine row and an event each) written straight into the database; their ids, newest last."""
    now = datetime.now(timezone.utc)
    rows = []
    for i, age in enumerate(sorted(ages, reverse=True)):
        rows.append((f"{schedule_id[:16]}{i:016x}", _stamp(now - age)))
    db = sqlite3.connect(db_path, timeout=30)
    with db:
        db.executemany("INSERT INTO runs (id, org_id, schedule_id, trigger, created_at, finished_at, status) "
                       "VALUES (?, ?, ?, 'scheduled', ?, ?, 'succeeded')",
                       [(rid, org_id, schedule_id, at, at) for rid, at in rows])
        db.executemany("INSERT INTO run_machines (run_id, machine_key, status) VALUES (?, 'm', 'succeeded')",
                       [(rid,) for rid, _ in rows])
        db.executemany("INSERT INTO events (org_id, time, type, schedule_id, run_id, data) "
                       "VALUES (?, ?, 'schedule_finished', ?, ?, '{}')",
                       [(org_id, at, schedule_id, rid) for rid, at in rows])
    db.close()
    return [rid for rid, _ in rows]


def _count(db_path, sql: str, *args) -> int:
    db = sqlite3.connect(db_path, timeout=30)
    try:
        return db.execute(sql, args).fetchone()[0]
    finally:
        db.close()


def test_pruning_keeps_the_newest_runs_and_the_api_answers_throughout(tmp_path):
    svc = start_service(tmp_path / "data", env={"CLOUDCRON_RETENTION_RUNS_PER_SCHEDULE": str(KEEP),
                                                "CLOUDCRON_RETENTION_BATCH": "100",
                                                "CLOUDCRON_RETENTION_EVERY": "1"})
    try:
        _, cloud = svc.api("POST", "clouds", {"title": "ssh", "provider": "other"})
        _, script = svc.api("POST", "scripts", {"name": "s", "script": "#!/bin/sh\ntrue\n"})
        schedules = []
        for name in ("busy", "old"):
            status, body = svc.api("POST", "schedules", {
                "name": name, "script_id": script["id"], "machines_per_cloud": [[cloud["id"], "m"]], "enabled": False,
                "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "hours"}})
            assert status == 200, body
            schedules.append(body)
        busy, old = schedules
        db_path = svc.data_dir / "cloudcron.db"
        org_id = _count_org(db_path, busy["id"])

        seen_totals: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                req = urllib.request.Request(f"{svc.url}/api/v1/schedules/{busy['id']}/runs?limit=1",
                                             headers={"Authorization": svc.token})
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        seen_totals.append(int(resp.headers["X-Total-Count"]))
                except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                    failures.append(repr(exc))
                status, body = svc.api("POST", "channels", {"name": f"c{len(seen_totals)}-{len(failures)}",
                                                            "kind": "apprise", "url": "json://hooks.example.com/x"})
                if status != 200:
                    failures.append(f"POST channels: {status} {body}")
                    continue
                # Deleted again: writes go on throughout, within the org's 50 channels.
                status, gone = svc.api("DELETE", f"channels/{body['id']}")
                if status not in (200, 204):
                    failures.append(f"DELETE channels: {status} {gone}")

        recent = _insert_runs(db_path, org_id, busy["id"], [timedelta(minutes=m) for m in range(1, RUNS + 1)])
        aged = _insert_runs(db_path, org_id, old["id"], [timedelta(days=d) for d in (29, 31, 60)])
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        wait_until(lambda: _count(db_path, "SELECT count(*) FROM runs WHERE schedule_id = ?", busy["id"]) == KEEP,
                   120, what=f"the busy schedule's runs to be pruned\n{svc.log()}")
        stop.set()
        poller.join(timeout=60)

        assert failures == []
        # Answers came while batches went: totals between the first and the last one were seen.
        assert any(KEEP < t < RUNS for t in seen_totals), sorted(set(seen_totals))[:5]
        status, runs = svc.api("GET", f"schedules/{busy['id']}/runs?limit=100")
        assert status == 200 and [r["id"] for r in runs] == list(reversed(recent[-KEEP:]))
        assert _count(db_path, "SELECT count(*) FROM run_machines") == KEEP + 1
        assert _count(db_path, "SELECT count(*) FROM events WHERE type = 'schedule_finished'") == KEEP + 1
        assert [r["id"] for r in svc.api("GET", f"schedules/{old['id']}/runs")[1]] == [aged[-1]]  # the 29-day one
    finally:
        svc.stop()


def _count_org(db_path, schedule_id: str) -> str:
    db = sqlite3.connect(db_path, timeout=30)
    try:
        return db.execute("SELECT org_id FROM schedules WHERE id = ?", (schedule_id,)).fetchone()[0]
    finally:
        db.close()
