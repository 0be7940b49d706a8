"""Engine tests: a migrated database of each kind, an org with a cloud, and a way to add schedules."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from web import make_state
from web.auth import ensure_org
from web.config import load_config
from web.crypto import new_id
from web.migrate import upgrade
from web.models import Cloud, Schedule
from web.schedules import build, next_run_at

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


class Env:
    def __init__(self, state):
        self.state = state
        with state.db.transaction() as s:
            self.org_id = ensure_org(s, "acme").id
            self.cloud_id = new_id()
            s.add(Cloud(id=self.cloud_id, org_id=self.org_id, title="aws", provider="ec2", options={},
                        credentials_enc=state.box.seal({}), created_at=T0, updated_at=T0))

    def add(self, now=T0, **fields) -> str:
        """Store a schedule the way the API does (same checks, same next_run_at)."""
        body = {"name": new_id(), "action": "stop", "machines_per_cloud": [[self.cloud_id, "i-1"]],
                "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "minutes"}, **fields}
        with self.state.db.transaction() as s:
            values = build(s, self.org_id, body, None, now, timedelta(seconds=1))
            sch = Schedule(id=new_id(), org_id=self.org_id, total_run_count=0, created_at=now, updated_at=now,
                           **values)
            sch.next_run_at = next_run_at(sch, now)
            s.add(sch)
            return sch.id

    def schedule(self, id_):
        with self.state.db.session() as s:
            return s.get(Schedule, id_)


@pytest.fixture
def env(database_url, tmp_path):
    state = make_state(load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"),
                                    "CLOUDCRON_DATABASE_URL": database_url}))
    upgrade(state.db)
    yield Env(state)
    state.db.dispose()
