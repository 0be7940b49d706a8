"""The audit log's pure parts: which fields an entry shows, and how secrets are masked."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from web.audit import MASK, diff, secrets_of, snapshot
from web.models import Cloud, Key, Machine, Schedule, Token

T = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_diff_lists_only_fields_whose_value_changed():
    assert diff({"a": 1, "b": [1]}, {"a": 1, "b": [1, 2], "c": "new"}) == {
        "b": {"before": [1], "after": [1, 2]}, "c": {"before": None, "after": "new"}}
    assert diff({"a": 1}, {"a": 1}) == {}
    assert diff({"a": 1}, {}) == {"a": {"before": 1, "after": None}}


@pytest.mark.parametrize("before, after, shown", [
    ({}, {"credentials": "sealed-1"}, {"before": None, "after": MASK}),
    ({"credentials": "sealed-1"}, {"credentials": "sealed-2"}, {"before": MASK, "after": MASK}),
    ({"credentials": "sealed-1"}, {}, {"before": MASK, "after": None}),
])
def test_a_secret_shows_only_that_it_was_set_changed_or_removed(before, after, shown):
    assert diff(before, after, {"credentials"}) == {"credentials": shown}
    assert diff({"credentials": "same"}, {"credentials": "same"}, {"credentials"}) == {}


def test_encrypted_and_hashed_columns_are_secrets_under_their_plain_names():
    assert secrets_of(Cloud()) == {"credentials"}
    assert secrets_of(Key()) == {"private"}
    assert secrets_of(Token()) == {"token"}
    assert secrets_of(Schedule()) == set()


def test_a_snapshot_leaves_out_identity_stamps_and_what_the_service_derives():
    s = Schedule(id="s1", org_id="o1", name="n", schedule_type="one_off", schedule_entry="2030-01-02T03:04:05Z",
                 expires=T, created_at=T, updated_at=T, next_run_at=T, total_run_count=3, last_run_at=T,
                 last_error="x", selectors=[{"type": "tags", "include": {"env": "dev"}}])
    shot = snapshot(s)
    assert shot["expires"] == "2030-01-02T03:04:05Z"  # instants as the API writes them
    assert {"id", "org_id", "created_at", "updated_at", "next_run_at", "total_run_count", "last_run_at",
            "last_error"}.isdisjoint(shot)
    s.selectors[0]["include"]["env"] = "prod"  # an in-place edit later does not reach the snapshot
    assert shot["selectors"] == [{"type": "tags", "include": {"env": "dev"}}]
    assert "state" not in snapshot(Machine(id="m", org_id="o", state="running"))
    assert "credentials" in snapshot(Cloud(id="c", org_id="o", credentials_enc="sealed"))


def test_the_retention_setting_is_read_and_checked(tmp_path):
    from web.config import ConfigError, load_config

    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path)}).audit_retention_days == 365
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path),
                        "CLOUDCRON_AUDIT_RETENTION_DAYS": "30"}).audit_retention_days == 30
    for bad in ("0", "-1", "ten", "99999"):
        with pytest.raises(ConfigError, match="CLOUDCRON_AUDIT_RETENTION_DAYS"):
            load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_AUDIT_RETENTION_DAYS": bad})
