"""Rows as they are written: valid UTF-8 without NUL everywhere, and no secret of the executing run, on both databases."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from web import make_state
from web.auth import ensure_org
from web.config import load_config
from web.crypto import new_id
from web.migrate import upgrade
from web.models import Cloud, Event, Machine, Run, RunMachine, Schedule
from web.scrub import clean_text, everywhere, note_run, run_secrets

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, expected", [
    ("caf\udce9", "caf\ufffd"),              # one Latin-1 byte, as Ansible's surrogateescape hands it on
    ("\udcc3\udca9t\udcc3\udca9", "été"),   # escaped bytes that are UTF-8 together decode again
    ("a\x00b", "a\ufffdb"),
    ("lone \ud800 high", "lone \ufffd high"),
    ("\udcff\udcfe", "\ufffd\ufffd"),
    ("plain café ☃", "plain café ☃"),
])
def test_clean_text_keeps_what_is_readable_and_replaces_the_rest(text, expected):
    cleaned = clean_text(text)
    assert cleaned == expected
    cleaned.encode("utf-8")  # strict: no surrogate is left


def test_clean_text_leaves_other_values_alone():
    assert clean_text(None) is None and clean_text(3) == 3


@pytest.fixture
def state(database_url, tmp_path):
    st = make_state(load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "CLOUDCRON_DATABASE_URL": database_url}))
    upgrade(st.db)
    yield st
    st.db.dispose()


def _run(session, org_id) -> Run:
    cloud = Cloud(id=new_id(), org_id=org_id, title="c", provider="other", options={}, created_at=NOW, updated_at=NOW)
    schedule = Schedule(id=new_id(), org_id=org_id, name="s", action="stop", machines_per_cloud=[], selectors=[],
                        schedule_type="interval", schedule_entry={"every": 1, "period": "days"}, enabled=True,
                        run_immediately=False, timezone="UTC", misfire_grace=300, concurrency="forbid", timeout=60,
                        total_run_count=0, created_at=NOW, updated_at=NOW)
    session.add_all([cloud, schedule])
    session.flush()
    run = Run(id=new_id(), org_id=org_id, schedule_id=schedule.id, trigger="manual", created_at=NOW, status="running")
    session.add(run)
    session.flush()
    return run


def _write(state, sealed: str, dirty: str):
    """Open the sealed secret as a run does, then write a run's rows holding `dirty` text; return the rows as stored."""
    with state.db.transaction() as session:
        org_id = ensure_org(session, "acme").id
        run = _run(session, org_id)
        secret = state.box.open(sealed)["secret"]
        run.error = f"{dirty} failed with {secret}"
        session.add(RunMachine(run_id=run.id, machine_key="k", status="failed", stdout=dirty, stderr=secret,
                               error=f"key={secret}"))
        session.add(Event(org_id=org_id, time=NOW, type="machine_action_failed", schedule_id=run.schedule_id,
                          run_id=run.id, data={"error": f"{dirty}: {secret}", dirty: [secret]}))
        session.add(Machine(id=new_id(), org_id=org_id, cloud_id=session.query(Cloud.id).scalar(), machine_id="i-1",
                            name=dirty, state="running", public_ips=[], private_ips=[], tags={"t": dirty},
                            created_at=NOW, updated_at=NOW))
        run_id = run.id
    with state.db.session() as session:
        return (session.get(Run, run_id), session.query(RunMachine).filter_by(run_id=run_id).one(),
                session.query(Event).filter_by(run_id=run_id).one(), session.query(Machine).one())


def test_rows_written_during_a_run_hold_clean_text_and_none_of_its_secrets(state):
    secret = "hunter2-" + new_id()
    sealed = state.box.seal({"key": "AKIAEXAMPLE", "secret": secret})
    with run_secrets():
        run, machine, event, provider_machine = _write(state, sealed, "caf\udce9\x00")
    assert run.error == "caf\ufffd\ufffd failed with ********"
    assert (machine.stdout, machine.stderr, machine.error) == ("caf\ufffd\ufffd", "********", "key=********")
    assert event.data == {"error": "caf\ufffd\ufffd: ********", "caf\ufffd\ufffd": ["********"]}
    # Machines come from providers: cleaned, and not redacted (they are no run record).
    assert provider_machine.name == "caf\ufffd\ufffd" and provider_machine.tags == {"t": "caf\ufffd\ufffd"}


def test_outside_a_run_rows_are_cleaned_but_nothing_is_redacted(state):
    secret = "hunter2-" + new_id()
    sealed = state.box.seal({"secret": secret})
    run, machine, _, _ = _write(state, sealed, "ok\x00")
    assert run.error == f"ok\ufffd failed with {secret}"
    assert machine.stderr == secret


def _print(state, org_name: str, text: str):
    """A run of org_name whose machine printed `text`: (run error, machine stdout, event data) as stored."""
    with state.db.transaction() as session:
        org_id = ensure_org(session, org_name).id
        run = _run(session, org_id)
        note_run(run.id, org_id)
        run.error = f"failed: {text}"
        session.add(RunMachine(run_id=run.id, machine_key="k", status="failed", stdout=text))
        session.add(Event(org_id=org_id, time=NOW, type="machine_action_failed", schedule_id=run.schedule_id,
                          run_id=run.id, data={"error": text}))
        run_id = run.id
    with state.db.session() as session:
        return (session.get(Run, run_id).error, session.query(RunMachine).filter_by(run_id=run_id).one().stdout,
                session.query(Event).filter_by(run_id=run_id).one().data["error"])


def test_a_run_is_masked_of_its_own_orgs_secrets_and_never_tells_another_org_which_values_are_secrets(state):
    with state.db.transaction() as session:
        victim, attacker = ensure_org(session, "victim").id, ensure_org(session, "attacker").id
    theirs, unowned = "victim-password-" + new_id(), "unowned-value-" + new_id()
    with run_secrets():
        state.box.open(state.box.seal({"secret": theirs}), victim)
        state.box.open(state.box.seal({"secret": unowned}))  # opened for no org: masked in every run
        # The victim's own run is masked of its secret wherever it shows.
        assert _print(state, "victim", theirs) == ("failed: ********", "********", "********")
        # An attacker printing guesses learns nothing: the victim's secret is not masked in the attacker's rows.
        assert _print(state, "attacker", f"{theirs} {unowned}") == (
            f"failed: {theirs} ********", f"{theirs} ********", f"{theirs} ********")
        # Text the whole batch produced is masked of every secret before any run gets it.
        assert everywhere(f"tail: {theirs} {unowned}") == "tail: ******** ********"
    assert everywhere(theirs) == theirs  # outside a batch nothing is known


def test_a_run_machine_row_of_a_run_not_noted_is_masked_of_every_secret(state):
    secret = "some-org-secret-" + new_id()
    with state.db.transaction() as session:
        org_id = ensure_org(session, "acme").id
        run = _run(session, org_id)
    with run_secrets():
        state.box.open(state.box.seal({"secret": secret}), "another-org")
        with state.db.transaction() as session:
            session.add(RunMachine(run_id=run.id, machine_key="k", status="failed", stdout=secret))
    with state.db.session() as session:
        assert session.query(RunMachine).filter_by(run_id=run.id).one().stdout == "********"


def test_an_internal_error_names_the_database_error_but_never_quotes_its_parameters():
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from web.worker import internal_error

    exc = OperationalError("UPDATE run_machines SET stdout=? WHERE id=?", ("another org's output", 3),
                           sqlite3.OperationalError("database is locked"))
    assert "another org's output" in str(exc)  # what SQLAlchemy would have put in every run's error
    assert internal_error(exc) == "internal error: OperationalError: database is locked (see the worker's log)"
    assert internal_error(KeyError("another-org-machine")) == "internal error: KeyError (see the worker's log)"


def test_text_of_a_playbook_with_one_orgs_runs_is_masked_of_that_orgs_secrets_only(state):
    # A retry attempt's playbook, or an Ansible script's, holds runs of one org: its whole-playbook text (an error
    # tail a user's play can fill with guesses) masked of every org's secrets would tell that org which are secrets.
    with state.db.transaction() as session:
        victim, attacker = ensure_org(session, "victim").id, ensure_org(session, "attacker").id
        theirs_run, mine_run = _run(session, victim).id, _run(session, attacker).id
    theirs, mine, unowned = "victim-password-" + new_id(), "attacker-password-" + new_id(), "unowned-" + new_id()
    with run_secrets():
        note_run(theirs_run, victim)
        note_run(mine_run, attacker)
        state.box.open(state.box.seal({"secret": theirs}), victim)
        state.box.open(state.box.seal({"secret": mine}), attacker)
        state.box.open(state.box.seal({"secret": unowned}))
        text = f"tail: {theirs} {mine} {unowned}"
        assert everywhere(text, [mine_run]) == f"tail: {theirs} ******** ********"
        # A playbook of both orgs' runs may quote either's variables: masked of both.
        assert everywhere(text, [mine_run, theirs_run]) == "tail: ******** ******** ********"
        # A run whose org is not known: every secret.
        assert everywhere(text, [mine_run, "not-noted"]) == "tail: ******** ******** ********"
