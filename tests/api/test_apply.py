"""Declarative apply: PUT /api/v1/<collection>/by-name/<name> compares on the server and writes only a change."""
from __future__ import annotations

from sqlalchemy import text

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def apply(api, path, body, **query):
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, answer, resp = api.call("PUT", path + (f"?{qs}" if qs else ""), body)
    return status, answer, resp


def counts(api):
    """Row counts and the last update instant of every table apply may write, to prove a call wrote nothing."""
    with api.state.db.session() as session:
        out = {}
        for table in ("schedules", "scripts", "keys", "clouds", "calendars", "runs"):
            out[table] = session.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()
        for table in ("schedules", "scripts", "keys", "clouds", "calendars"):
            out[table + ".updated"] = session.execute(text(f"SELECT MAX(updated_at) FROM {table}")).scalar()
        return out


def crontab_body(cloud, **fields):
    body = {"action": "stop", "machines_per_cloud": [[cloud["id"], "i-1"]], "schedule_type": "crontab",
            "schedule_entry": {"minute": "0", "hour": "2"}, "timezone": "Europe/Athens"}
    body.update(fields)
    return body


# ------------------------------------------------------------------ schedules

def test_it_creates_a_missing_schedule_with_201_and_every_managed_field_in_the_diff(api, cloud):
    status, answer, resp = apply(api, "schedules/by-name/nightly", crontab_body(cloud))
    assert status == 201, answer
    assert answer["changed"] is True and answer["diff"]["before"] == {}
    assert answer["diff"]["after"]["schedule_entry"]["minute"] == "0"
    assert {"name", "action", "schedule_type", "schedule_entry", "timezone"} <= set(answer["changed_fields"])
    stored = api.get(f"schedules/{answer['schedule']['id']}")[1]
    assert stored == answer["schedule"] and stored["name"] == "nightly"
    assert resp.headers["ETag"] == '"1"'


def test_it_answers_unchanged_and_writes_nothing_when_the_stored_schedule_already_matches(api, cloud):
    apply(api, "schedules/by-name/nightly", crontab_body(cloud))
    before = counts(api)
    status, answer, resp = apply(api, "schedules/by-name/nightly", crontab_body(cloud))
    assert status == 200, answer
    assert answer["changed"] is False and answer["changed_fields"] == [] and answer["diff"] == {"before": {}, "after": {}}
    assert counts(api) == before
    assert resp.headers["ETag"] == '"1"'


def test_it_compares_after_the_servers_normalisation(api, cloud):
    apply(api, "schedules/by-name/nightly", crontab_body(cloud, expires="2030-11-10 20:20:00"))
    before = counts(api)
    # The entry as a JSON string (Mist's clients), the expiry as ISO 8601 in UTC: the same stored values.
    same = crontab_body(cloud, schedule_entry='{"minute": "0", "hour": "2"}', expires="2030-11-10T18:20:00Z")
    status, answer, _ = apply(api, "schedules/by-name/nightly", same)
    assert (status, answer["changed"]) == (200, False), answer
    assert counts(api) == before


def test_it_changes_only_what_differs_and_names_it_with_before_and_after(api, cloud):
    created = apply(api, "schedules/by-name/nightly", crontab_body(cloud))[1]["schedule"]
    status, answer, resp = apply(api, "schedules/by-name/nightly", {"schedule_entry": {"minute": "15", "hour": "2"}})
    assert status == 200, answer
    assert answer["changed"] is True and answer["changed_fields"] == ["schedule_entry"]
    assert answer["diff"]["before"] == {"schedule_entry": created["schedule_entry"]}
    assert answer["diff"]["after"]["schedule_entry"]["minute"] == "15"
    stored = api.get(f"schedules/{created['id']}")[1]
    assert stored["schedule_entry"]["minute"] == "15" and stored["next_run_at"].endswith(":15:00Z")
    assert stored["action"] == "stop"  # a field the body did not send is kept
    assert resp.headers["ETag"] == '"2"'


def test_a_dry_run_writes_nothing_and_answers_the_next_run_at_a_write_would_store(api, cloud):
    created = apply(api, "schedules/by-name/nightly", crontab_body(cloud))[1]["schedule"]
    before = counts(api)
    status, dry, _ = apply(api, "schedules/by-name/nightly", {"schedule_entry": {"minute": "15", "hour": "2"}},
                           dry_run="true")
    assert status == 200 and dry["dry_run"] is True and dry["changed_fields"] == ["schedule_entry"]
    assert counts(api) == before
    assert api.get(f"schedules/{created['id']}")[1]["schedule_entry"]["minute"] == "0"
    real = apply(api, "schedules/by-name/nightly", {"schedule_entry": {"minute": "15", "hour": "2"}})[1]
    assert dry["schedule"]["next_run_at"] == real["schedule"]["next_run_at"] != created["next_run_at"]
    assert dry["diff"] == real["diff"]


def test_a_dry_run_create_writes_nothing_and_answers_no_id(api, cloud):
    before = counts(api)
    status, answer, _ = apply(api, "schedules/by-name/nightly", crontab_body(cloud, run_immediately=True),
                              dry_run="true")
    assert status == 200 and answer["changed"] is True and answer["schedule"]["id"] is None
    assert answer["schedule"]["next_run_at"] is not None
    assert counts(api) == before  # not even the immediate run


def test_run_immediately_counts_only_at_creation(api, cloud):
    status, answer, _ = apply(api, "schedules/by-name/nightly", crontab_body(cloud, run_immediately=True))
    assert status == 201
    runs = counts(api)["runs"]
    assert runs == 1
    again = apply(api, "schedules/by-name/nightly", crontab_body(cloud, run_immediately=True))[1]
    assert again["changed"] is False
    flipped = apply(api, "schedules/by-name/nightly", crontab_body(cloud, run_immediately=False))[1]
    assert flipped["changed"] is False
    assert counts(api)["runs"] == runs


def test_it_refuses_what_patch_refuses_with_the_same_message(api, cloud, schedule):
    bad = {"schedule_entry": {"minute": "61"}}
    patch = api.patch(f"schedules/{schedule['id']}", bad)
    status, answer, _ = apply(api, f"schedules/by-name/{schedule['name']}", bad)
    assert (status, answer) == patch and status == 400
    status, answer, _ = apply(api, "schedules/by-name/new", {"action": "stop"})
    assert (status, answer) == (400, {"error": "schedule_type (or cronjob_type): is required"})


def test_a_name_in_the_body_must_be_the_name_in_the_path(api, cloud):
    status, answer, _ = apply(api, "schedules/by-name/nightly", crontab_body(cloud, name="other"))
    assert status == 400 and answer["error"].startswith("name: 'other' differs")


def test_another_orgs_schedule_of_the_same_name_is_not_touched(api, other_api, cloud):
    mine = apply(api, "schedules/by-name/nightly", crontab_body(cloud))[1]["schedule"]
    # The other org cannot target this org's cloud, and its apply creates its own schedule or fails: never edits mine.
    status, answer, _ = apply(other_api, "schedules/by-name/nightly", {"schedule_entry": {"minute": "5"}})
    assert status == 400
    assert api.get(f"schedules/{mine['id']}")[1]["schedule_entry"]["minute"] == "0"


# ------------------------------------------------------------------ scripts, calendars

def test_scripts_apply_create_noop_change(api):
    body = {"script": "#!/bin/sh\nuptime\n", "description": "load"}
    status, answer, _ = apply(api, "scripts/by-name/uptime", body)
    assert status == 201 and answer["script"]["name"] == "uptime"
    assert apply(api, "scripts/by-name/uptime", body)[1]["changed"] is False
    status, answer, _ = apply(api, "scripts/by-name/uptime", {"description": "load average"})
    assert answer["changed_fields"] == ["description"] and answer["script"]["script"] == body["script"]


def test_calendars_apply_create_noop_dry_run_change(api):
    body = {"timezone": "Europe/Athens", "entries": [{"date": "2026-12-25"}]}
    status, answer, _ = apply(api, "calendars/by-name/xmas", body)
    assert status == 201 and answer["calendar"]["entries"] == body["entries"]
    assert apply(api, "calendars/by-name/xmas", body)[1]["changed"] is False
    before = counts(api)
    dry = apply(api, "calendars/by-name/xmas", {"entries": []}, dry_run="true")[1]
    assert dry["changed_fields"] == ["entries"] and counts(api) == before


# ------------------------------------------------------------------ secrets

def sealed(api, table, column, id_):
    with api.state.db.session() as session:
        return session.execute(text(f"SELECT {column} FROM {table} WHERE id = :id"), {"id": id_}).scalar()


def test_cloud_credentials_are_sent_on_create_never_compared_and_updated_only_when_asked(api):
    body = {"provider": "ec2", "credentials": {"key": "AKID", "secret": SECRET}, "options": {"region": "eu-west-1"}}
    status, answer, _ = apply(api, "clouds/by-title/aws", body)
    assert status == 201 and "credentials" in answer["changed_fields"]
    assert SECRET not in str(answer)
    cloud_id = answer["cloud"]["id"]
    first = sealed(api, "clouds", "credentials_enc", cloud_id)
    assert api.state.box.open(first)["secret"] == SECRET

    other = {**body, "credentials": {"key": "AKID", "secret": "another"}}
    answer = apply(api, "clouds/by-title/aws", other)[1]
    assert answer["changed"] is False  # a secret cannot be compared: not sent unless asked
    assert sealed(api, "clouds", "credentials_enc", cloud_id) == first

    answer = apply(api, "clouds/by-title/aws", other, update_secrets="true")[1]
    assert answer["changed"] is True and answer["changed_fields"] == ["credentials"]
    assert "another" not in str(answer) and "credentials" not in answer["diff"]["after"]
    assert api.state.box.open(sealed(api, "clouds", "credentials_enc", cloud_id))["secret"] == "another"


def test_a_key_is_generated_on_create_and_kept_on_apply(api):
    status, answer, _ = apply(api, "keys/by-name/deploy", {"generate": True})
    assert status == 201 and answer["key"]["public"].startswith("ssh-ed25519 ")
    public = answer["key"]["public"]
    again = apply(api, "keys/by-name/deploy", {"generate": True})[1]
    assert again["changed"] is False and again["key"]["public"] == public
    rotated = apply(api, "keys/by-name/deploy", {"generate": True}, update_secrets="true")[1]
    assert rotated["changed"] is True and rotated["key"]["public"] != public
    assert rotated["changed_fields"] == ["public", "generate"]
    assert "private" not in str(rotated)


def test_a_cloud_provider_cannot_change_through_apply(api):
    apply(api, "clouds/by-title/lab", {"provider": "other"})
    status, answer, _ = apply(api, "clouds/by-title/lab", {"provider": "ec2"})
    assert status == 400 and answer["error"].startswith("provider: cannot be changed")


# ------------------------------------------------------------------ both databases

def test_apply_and_if_match_behave_the_same_on_sqlite_and_postgresql(backend_api):
    api = backend_api
    status, cloud = api.post("clouds", {"title": "lab", "provider": "other"})
    assert status == 200, cloud
    body = crontab_body(cloud)
    created = apply(api, "schedules/by-name/nightly", body)
    assert created[0] == 201, created[1]
    schedule_id = created[1]["schedule"]["id"]
    assert apply(api, "schedules/by-name/nightly", body)[1]["changed"] is False
    dry = apply(api, "schedules/by-name/nightly", {"enabled": False}, dry_run="true")[1]
    assert dry["changed_fields"] == ["enabled"] and dry["schedule"]["next_run_at"] is None
    assert api.get(f"schedules/{schedule_id}")[1]["enabled"] is True
    status, answer, resp = api.call("PUT", "schedules/by-name/nightly", {"enabled": False}, headers={"If-Match": '"1"'})
    assert status == 200 and answer["changed_fields"] == ["enabled"] and resp.headers["ETag"] == '"2"'
    status, _, _ = api.call("PUT", "schedules/by-name/nightly", {"enabled": True}, headers={"If-Match": '"1"'})
    assert status == 412
    assert api.get(f"schedules/{schedule_id}")[1]["enabled"] is False


def test_references_may_be_given_by_name_and_compare_equal_to_the_ids(api, cloud):
    status, script = api.post("scripts", {"name": "uptime", "script": "#!/bin/sh\nuptime\n"})
    status, calendar = api.post("calendars", {"name": "xmas", "entries": [{"date": "2026-12-25"}]})
    by_name = {"script_id": "uptime", "machines_per_cloud": [[cloud["title"], "web1"]], "exclude_calendars": ["xmas"],
               "schedule_type": "interval", "schedule_entry": {"every": 2, "period": "hours"}}
    status, answer, _ = apply(api, "schedules/by-name/report", by_name)
    assert status == 201, answer
    stored = answer["schedule"]
    assert (stored["script_id"], stored["machines_per_cloud"], stored["exclude_calendars"]) == \
        (script["id"], [[cloud["id"], "web1"]], [calendar["id"]])
    assert apply(api, "schedules/by-name/report", by_name)[1]["changed"] is False
    by_id = dict(by_name, script_id=script["id"], machines_per_cloud=[[cloud["id"], "web1"]])
    assert apply(api, "schedules/by-name/report", by_id)[1]["changed"] is False
    status, answer, _ = apply(api, "schedules/by-name/report", dict(by_name, script_id="nope"))
    assert (status, answer) == (400, {"error": "script_id: no script 'nope' in this org"})


def test_another_orgs_names_are_not_resolved(api, other_api, cloud):
    other_api.post("scripts", {"name": "theirs", "script": "#!/bin/sh\n"})
    status, answer, _ = apply(api, "schedules/by-name/x", {"script_id": "theirs", "machines_per_cloud": [[cloud["id"], "m"]],
                                                           "schedule_type": "interval",
                                                           "schedule_entry": {"every": 2, "period": "hours"}})
    assert (status, answer) == (400, {"error": "script_id: no script 'theirs' in this org"})


def test_a_name_holding_a_newline_or_a_slash_is_reached(api):
    status, answer, _ = apply(api, "scripts/by-name/a%0Ab/c", {"script": "#!/bin/sh\n"})
    assert status == 201 and answer["script"]["name"] == "a\nb/c"
    assert apply(api, "scripts/by-name/a%0Ab/c", {"script": "#!/bin/sh\n"})[1]["changed"] is False


def test_an_unchanged_apply_and_a_dry_run_leave_no_audit_entry_and_a_change_leaves_one(api, cloud):
    def entries():
        with api.state.db.session() as session:
            return session.execute(text("SELECT COUNT(*) FROM audit_log")).scalar()

    apply(api, "schedules/by-name/nightly", crontab_body(cloud))
    seen = entries()
    apply(api, "schedules/by-name/nightly", crontab_body(cloud))
    apply(api, "schedules/by-name/nightly", {"enabled": False}, dry_run="true")
    assert entries() == seen
    apply(api, "schedules/by-name/nightly", {"enabled": False})
    assert entries() == seen + 1


# ------------------------------------------------------------------ channels

HOOK = {"kind": "webhook", "url": "https://hooks.example.com/cron/T0KEN", "secret": "s3cret-s3cret-s3cret"}


def test_channels_apply_create_noop_change_and_dry_run(api):
    status, answer, resp = apply(api, "channels/by-name/ops", HOOK)
    assert status == 201, answer
    assert answer["changed_fields"] == ["name", "kind", "default", "secret", "url"]
    assert answer["diff"] == {"before": {}, "after": {"name": "ops", "kind": "webhook", "default": False}}
    assert "T0KEN" not in str(answer) and "s3cret" not in str(answer)
    channel = answer["channel"]
    assert api.get(f"channels/{channel['id']}")[1] == channel
    assert resp.headers["ETag"] == api.call("GET", f"channels/{channel['id']}")[2].headers["ETag"]

    status, again, resp = apply(api, "channels/by-name/ops", HOOK)
    assert status == 200 and again["changed"] is False and again["channel"] == channel

    status, planned, _ = apply(api, "channels/by-name/ops", {**HOOK, "default": True}, dry_run="true")
    assert status == 200 and planned["changed_fields"] == ["default"] and planned["dry_run"] is True
    assert planned["channel"]["default"] is True
    assert api.get(f"channels/{channel['id']}")[1]["default"] is False  # the dry run wrote nothing

    status, changed, _ = apply(api, "channels/by-name/ops", {**HOOK, "default": True})
    assert status == 200 and changed["diff"] == {"before": {"default": False}, "after": {"default": True}}
    assert api.get(f"channels/{channel['id']}")[1]["default"] is True


def test_a_dry_run_create_of_a_channel_writes_nothing(api):
    status, answer, _ = apply(api, "channels/by-name/ops", HOOK, dry_run="true")
    assert status == 200 and answer["changed"] is True and answer["channel"]["id"] is None
    assert api.get("channels")[1] == []


def test_channel_url_and_secret_are_sent_on_create_never_compared_and_updated_only_when_asked(api):
    channel_id = apply(api, "channels/by-name/ops", HOOK)[1]["channel"]["id"]
    first = sealed(api, "channels", "target_enc", channel_id)
    other = {**HOOK, "url": "https://other.example.com/x", "secret": "another-secret-16chars"}
    answer = apply(api, "channels/by-name/ops", other)[1]
    assert answer["changed"] is False  # a secret cannot be compared: not sent unless asked
    assert sealed(api, "channels", "target_enc", channel_id) == first

    answer = apply(api, "channels/by-name/ops", other, update_secrets="true")[1]
    assert answer["changed"] is True and answer["changed_fields"] == ["secret", "url"]
    assert "another" not in str(answer) and answer["channel"]["url"] == "https://other.example.com/…"
    assert api.state.box.open(sealed(api, "channels", "target_enc", channel_id)) == {
        "kind": "webhook", "url": "https://other.example.com/x", "secret": "another-secret-16chars"}


def test_a_channel_kind_change_sends_the_new_url(api):
    apply(api, "channels/by-name/ops", HOOK)
    status, answer, _ = apply(api, "channels/by-name/ops", {"kind": "apprise", "url": "json://hooks.example.com/x"})
    assert status == 200, answer
    assert answer["changed_fields"] == ["kind", "url"] and answer["channel"]["url"] == "json://…"


def test_a_channel_apply_refuses_what_post_refuses_naming_the_field(api):
    status, answer, _ = apply(api, "channels/by-name/ops", {**HOOK, "secret": "short"})
    assert status == 400 and answer["error"].startswith("secret: must be at least 16 characters")
    status, answer, _ = apply(api, "channels/by-name/ops", {"kind": "webhook"})
    assert status == 400 and answer["error"] == "url: is required"
    assert api.get("channels")[1] == []


def test_another_orgs_channel_of_the_same_name_is_not_touched(api, other_api):
    theirs = apply(other_api, "channels/by-name/ops", HOOK)[1]["channel"]
    status, mine, _ = apply(api, "channels/by-name/ops", {**HOOK, "default": True})
    assert status == 201 and mine["channel"]["id"] != theirs["id"]
    assert other_api.get(f"channels/{theirs['id']}")[1]["default"] is False


def test_channel_apply_honours_if_match(api):
    channel = apply(api, "channels/by-name/ops", HOOK)[1]["channel"]
    seen = api.call("GET", f"channels/{channel['id']}")[2].headers["ETag"]
    api.patch(f"channels/{channel['id']}", {"default": True})
    status, body, _ = api.call("PUT", "channels/by-name/ops", {"default": False}, headers={"If-Match": seen})
    assert status == 412, body
    fresh = api.call("GET", f"channels/{channel['id']}")[2].headers["ETag"]
    status, body, _ = api.call("PUT", "channels/by-name/ops", {"default": False}, headers={"If-Match": fresh})
    assert status == 200 and body["changed_fields"] == ["default"]


def test_channel_apply_and_if_match_behave_the_same_on_sqlite_and_postgresql(backend_api):
    """A channel's ETag is its updated_at: the conditional UPDATE must match the stored instant on both databases."""
    api = backend_api
    status, created, resp = apply(api, "channels/by-name/ops", HOOK)
    assert status == 201, created
    channel_id = created["channel"]["id"]
    assert apply(api, "channels/by-name/ops", HOOK)[1]["changed"] is False
    seen = api.call("GET", f"channels/{channel_id}")[2].headers["ETag"]
    assert seen == resp.headers["ETag"]
    status, answer, resp = api.call("PUT", "channels/by-name/ops", {"default": True}, headers={"If-Match": seen})
    assert status == 200 and answer["changed_fields"] == ["default"] and resp.headers["ETag"] != seen
    status, _, _ = api.call("PUT", "channels/by-name/ops", {"default": False}, headers={"If-Match": seen})
    assert status == 412
    assert api.call("DELETE", f"channels/{channel_id}", headers={"If-Match": seen})[0] == 412
    assert api.call("DELETE", f"channels/{channel_id}", headers={"If-Match": resp.headers["ETag"]})[0] == 200
