"""The console's run queries (web/runs.py) on every database cloudcron supports: they use window
functions, which SQLite and PostgreSQL must both answer the same way."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from web import make_state
from web.config import load_config
from web.migrate import upgrade
from web.models import Org, Run
from web.runs import backlog, last_finished, recent_outcomes, status_counts

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def test_outcomes_last_finished_counts_and_backlog_agree_on_each_database(database_url, tmp_path):
    st = make_state(load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "CLOUDCRON_DATABASE_URL": database_url}))
    upgrade(st.db)
    try:
        with st.db.transaction() as s:
            s.add_all([Org(id="o1" * 16, name="one", created_at=NOW), Org(id="o2" * 16, name="two", created_at=NOW)])
            s.flush()
            for i in range(12):  # schedule A: newest first is queued, then running, then finished ones
                status = "queued" if i == 0 else "running" if i == 1 else ("failed" if i == 2 else "succeeded")
                s.add(Run(id=f"a{i:031x}", org_id="o1" * 16, schedule_id="A" * 32, trigger="scheduled",
                          created_at=NOW - timedelta(minutes=i), status=status))
            s.add(Run(id="b" * 32, org_id="o1" * 16, schedule_id="B" * 32, trigger="manual",
                      created_at=NOW - timedelta(days=2), status="succeeded"))
            s.add(Run(id="c" * 32, org_id="o2" * 16, schedule_id="A" * 32, trigger="manual",
                      created_at=NOW + timedelta(minutes=1), status="failed"))
        with st.db.session() as s:
            strips = recent_outcomes(s, "o1" * 16, ["A" * 32, "B" * 32, "C" * 32], 10)
            assert [r.id for r in strips["A" * 32]] == [f"a{i:031x}" for i in range(10)]
            assert [r.id for r in strips["B" * 32]] == ["b" * 32] and strips["C" * 32] == []
            last = last_finished(s, "o1" * 16)
            assert (last["A" * 32].id, last["A" * 32].status) == (f"a{2:031x}", "failed")
            assert last["B" * 32].status == "succeeded" and len(last) == 2
            assert status_counts(s, "o1" * 16, NOW - timedelta(hours=24)) == {"queued": 1, "running": 1, "failed": 1,
                                                                              "succeeded": 9}
            assert backlog(s, "o1" * 16) == (1, NOW)
            assert backlog(s, "o2" * 16) == (0, None)
    finally:
        st.db.dispose()
