"""Clouds, machines, SSH keys, scripts and calendars: the rules every writer (the API, the console) goes through.

Each function takes the session and the org, checks the fields a client sent (as the API's
schemas typed them, see fields()), writes, and commits; a broken rule raises the API's errors
(BadRequest 400 naming the field, Conflict 409 on a duplicate) and writes nothing. Each change is
recorded in the audit log (web.audit) in the transaction that makes it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit
from .config import DEFAULT_DENIED_NETWORKS
from .crypto import Box, new_id
from .errors import BadRequest, Conflict
from .keys import derive_public, generate_private
from .models import Calendar, Cloud, Key, Machine, Schedule, ScheduleCalendar, Script
from .timemath import TimeSpecError, format_instant
from .validation import check_fields, validate

STAMPS = {"id", "created_at", "updated_at"}
MACHINE_READ_ONLY = STAMPS | {"cloud_id", "state", "public_ips", "private_ips"}


def fields(model, data: dict, read_only: set[str]) -> dict:
    """Check a client's fields against a request schema: unknown and read-only names refused; None means "not set"."""
    given = check_fields(data, set(model.model_fields), read_only)
    typed = validate(model, {k: v for k, v in given.items() if v is not None})
    return {k: typed.get(k) for k in given}


def require(values: dict, *names: str) -> None:
    """BadRequest "<name>: is required" for the first of `names` missing from `values`."""
    for name in names:
        if values.get(name) in (None, ""):
            raise BadRequest(f"{name}: is required")


def commit(session: Session, conflict: str, dry_run: bool = False) -> None:
    """Commit; a unique constraint that fails becomes a 409 with `conflict` as its message.

    dry_run: flush only, so the database checks the constraints and the caller can answer what would be
    stored, then roll back (web.apply does): nothing is committed.
    """
    try:
        session.flush() if dry_run else session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(conflict) from None


def bump(row) -> None:
    """Count a client's edit of `row`: its version is the API's ETag (If-Match is checked against it)."""
    row.version = (row.version or 1) + 1


def _stamped(row) -> dict:
    return {"created_at": format_instant(row.created_at), "updated_at": format_instant(row.updated_at)}


# ---------------------------------------------------------------- clouds

def cloud_json(c: Cloud) -> dict:
    """A cloud as the API answers it (credentials never)."""
    return {"id": c.id, "title": c.title, "provider": c.provider, "options": c.options or {}, **_stamped(c)}


def check_provider(provider: str) -> None:
    """BadRequest unless `provider` is a libcloud compute provider name or `other` (declared SSH hosts).

    libcloud's test driver (`dummy`) is not a cloud and is refused by name."""
    if provider == "other":
        return
    from plugins.module_utils._libcloud import TEST_PROVIDERS, provider_names

    if provider in TEST_PROVIDERS:
        raise BadRequest(f"provider: '{provider}' is libcloud's test driver, not a cloud; use a real provider "
                         "(for example ec2, gce, openstack) or other for SSH hosts")
    if provider not in provider_names():
        raise BadRequest(f"provider: '{provider}' is not a libcloud compute provider "
                         "(for example ec2, gce, openstack, azure_arm, digitalocean, or other for SSH hosts)")


def check_options(options, denied_networks=DEFAULT_DENIED_NETWORKS) -> None:
    """BadRequest unless a cloud's driver options point only where the service may go.

    Every URL-like option must be http or https; `host` and the hosts of those URLs, when address
    literals, must be outside `denied_networks` (CIDR strings, CLOUDCRON_DENIED_NETWORKS). Host names
    are checked when a call connects, where they resolve then."""
    from plugins.module_utils._libcloud import check_endpoint_options

    try:
        check_endpoint_options(options or {}, denied_networks)
    except ValueError as exc:
        raise BadRequest(str(exc).replace("(denied networks)", "(CLOUDCRON_DENIED_NETWORKS)")) from None


def check_arguments(provider: str, credentials, options) -> None:
    """BadRequest unless a cloud's credentials and options are driver arguments the service accepts.

    Refused, naming the field: an argument naming a file on the worker (key_file, cert_file, ca_cert,
    credential_file, *_path, ...), a token cache, a GCE key given as a file name rather than its content
    or a GCE auth_type other than SA, and a credential holding a non-HTTP(S) URL (file:, ftp://, ...).
    Checks only what is given (an edit sends one of them)."""
    if provider == "other":
        return
    from plugins.module_utils._libcloud import check_driver_arguments, check_endpoint_options

    try:
        check_endpoint_options(credentials or {}, prefix="credentials", secrets=True, denied_networks=())
        check_driver_arguments(provider, credentials, options)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def create_cloud(session: Session, box: Box, org_id: str, values: dict, now: datetime,
                 denied_networks=DEFAULT_DENIED_NETWORKS) -> Cloud:
    """Add a cloud from CloudIn fields (title, provider, credentials, options); see store_cloud."""
    return store_cloud(session, box, org_id, values, None, now, denied_networks)


def _same_secret(box: Box, sealed: str | None, value) -> bool:
    """Whether `value` is the secret already sealed in `sealed`. Sealing is randomised, so the stored form
    changes at every seal: an unchanged secret is kept as it is, or the audit log would report it changed."""
    if sealed is None:
        return False
    try:
        return box.open(sealed) == value
    except ValueError:  # sealed under another secret key: the new value replaces it
        return False


def store_cloud(session: Session, box: Box, org_id: str, values: dict, current: Cloud | None, now: datetime,
                denied_networks=DEFAULT_DENIED_NETWORKS, dry_run: bool = False) -> Cloud:
    """Create (current=None) or edit a cloud from CloudIn fields; an edit changes only the fields given.

    Credentials are sealed with `box` (never answered); the provider cannot change (400); options are
    checked (check_options), credentials and options as driver arguments (check_arguments). Storing a
    cloud does not contact the provider. dry_run: see commit().
    """
    before = audit.snapshot(current) if current is not None else None
    if current is None:
        require(values, "title", "provider")
        check_provider(values["provider"])
        check_options(values.get("options"), denied_networks)
        check_arguments(values["provider"], values.get("credentials"), values.get("options"))
        cloud = Cloud(id=new_id(), org_id=org_id, title=values["title"], provider=values["provider"],
                      options=values.get("options") or {}, created_at=now, updated_at=now, version=1,
                      credentials_enc=box.seal(values.get("credentials") or {}))
        session.add(cloud)
    else:
        cloud = current
        if "provider" in values and values["provider"] != cloud.provider:
            raise BadRequest("provider: cannot be changed; add a new cloud instead")
        if values.get("title"):
            cloud.title = values["title"]
        check_arguments(cloud.provider, values.get("credentials"), values.get("options"))
        if "options" in values:
            check_options(values["options"], denied_networks)
            cloud.options = values["options"] or {}
        credentials = values.get("credentials")
        if credentials is not None and not _same_secret(box, cloud.credentials_enc, credentials):
            cloud.credentials_enc = box.seal(credentials)
        cloud.updated_at = now
        bump(cloud)
    audit.record(session, cloud, "create" if current is None else "update", before, now)
    commit(session, f"title: a cloud titled '{cloud.title}' already exists", dry_run)
    return cloud


def delete_cloud(session: Session, cloud: Cloud) -> None:
    """Delete a cloud and its machines; 409 naming a schedule that still targets it."""
    # machines_per_cloud is JSON, so look for the id in the org's schedules' targets.
    for name, mpc in session.execute(select(Schedule.name, Schedule.machines_per_cloud)
                                     .where(Schedule.org_id == cloud.org_id)):
        if any(pair[0] == cloud.id for pair in mpc or []):
            raise Conflict(f"cloud '{cloud.id}' is a target of schedule '{name}'; change or delete that schedule first")
    audit.record(session, cloud, "delete")
    session.delete(cloud)
    session.commit()


# ---------------------------------------------------------------- machines

def machine_json(m: Machine) -> dict:
    """A machine as the API answers it."""
    return {
        "id": m.id, "cloud_id": m.cloud_id, "machine_id": m.machine_id, "name": m.name, "host": m.host,
        "port": m.port, "ssh_user": m.ssh_user, "key_id": m.key_id, "state": m.state,
        "public_ips": m.public_ips or [], "private_ips": m.private_ips or [], "tags": m.tags or {},
        **_stamped(m),
    }


def check_key(session: Session, org_id: str, key_id) -> None:
    """BadRequest unless `key_id` (when given) is a key of the org."""
    if key_id is not None:
        key = session.get(Key, key_id)
        if key is None or key.org_id != org_id:
            raise BadRequest(f"key_id: no key '{key_id}' in this org")


def machines_query(cloud_id: str):
    """The select of a cloud's machines (order newest first: created_at, id descending)."""
    return select(Machine).where(Machine.cloud_id == cloud_id)


def check_declarable(cloud: Cloud) -> None:
    """BadRequest unless machines can be declared on `cloud` (an `other` cloud: a libcloud cloud's come from its provider)."""
    if cloud.provider != "other":
        raise BadRequest(f"provider: machines of a '{cloud.provider}' cloud are read from the provider; "
                         "only 'other' clouds take declared machines")


def declare_machine(session: Session, org_id: str, cloud: Cloud, values: dict, now: datetime) -> Machine:
    """Declare an SSH machine on an `other` cloud from MachineIn fields (name and host required)."""
    check_declarable(cloud)
    require(values, "name", "host")
    check_key(session, org_id, values.get("key_id"))
    machine = Machine(id=new_id(), org_id=org_id, cloud_id=cloud.id,
                      machine_id=values.get("machine_id") or values["name"], name=values["name"],
                      host=values["host"], port=values.get("port") or 22, ssh_user=values.get("ssh_user") or "root",
                      key_id=values.get("key_id"), state="unknown", public_ips=[values["host"]], private_ips=[],
                      tags=values.get("tags") or {}, created_at=now, updated_at=now)
    session.add(machine)
    audit.record(session, machine, "create", now=now)
    commit(session, f"machine_id: cloud '{cloud.id}' already has a machine '{machine.machine_id}'")
    return machine


def machine_read_only(cloud: Cloud) -> set[str]:
    """The MachineIn fields an edit may not send; a libcloud cloud's machines take name and tags from the provider."""
    read_only = MACHINE_READ_ONLY | {"machine_id"}
    if cloud.provider != "other":
        read_only |= {"name", "tags"}
    return read_only


def update_machine(session: Session, org_id: str, machine: Machine, values: dict, now: datetime) -> Machine:
    """Set a machine's SSH overrides (and, on an `other` cloud, its name and tags) from MachineIn fields
    already checked against machine_read_only()."""
    if "key_id" in values:
        check_key(session, org_id, values["key_id"])
    before = audit.snapshot(machine)
    for field in ("name", "host", "port", "ssh_user", "key_id", "tags"):
        if field in values:
            setattr(machine, field, values[field])
    machine.updated_at = now
    audit.record(session, machine, "update", before, now)
    session.commit()
    return machine


def delete_machine(session: Session, machine: Machine) -> None:
    """Forget a machine (a libcloud cloud's comes back at its next listing)."""
    audit.record(session, machine, "delete")
    session.delete(machine)
    session.commit()


def refresh_cloud(state, org_id: str, cloud_id: str, now: datetime):
    """Read a libcloud cloud's machines from its provider and store them: read, commit, call, then write briefly.

    Each step opens its own short session (the caller must hold no transaction), so none is open while
    the provider is asked. The call runs on state.listings, the bounded pool with a per-org limit:
    TooManyListings (429) when the org's or everyone's slots are taken. NotFound when the cloud is not
    the org's; ProviderError (502) when the provider cannot be reached, refuses, times out or resolves
    into a denied network. Returns the Listing (see its `truncated`), or None for an `other` cloud,
    which has nothing to read.
    """
    from .errors import NotFound
    from .machines import ProviderLimits, cloud_spec, fetch_nodes, store_nodes

    with state.db.session() as session:
        cloud = session.get(Cloud, cloud_id)
        if cloud is None or cloud.org_id != org_id:
            raise NotFound(f"cloud '{cloud_id}' not found")
        if cloud.provider == "other":
            return None
        spec = cloud_spec(state.box, cloud)
    limits = ProviderLimits.of(state.config)
    listing = state.listings.run(org_id, lambda: fetch_nodes(spec, limits), what=f"cloud '{cloud_id}'")
    with state.db.transaction() as session:
        if session.get(Cloud, cloud_id) is None:  # deleted while the provider answered
            raise NotFound(f"cloud '{cloud_id}' not found")
        store_nodes(session, spec, listing, now)
    return listing


# ---------------------------------------------------------------- keys

def key_json(k: Key) -> dict:
    """A key as the API answers it: the public half only."""
    return {"id": k.id, "name": k.name, "public": k.public, **_stamped(k)}


def key_material(values: dict) -> tuple[str, str]:
    """(private, public) from KeyIn fields: a given private key (checked) or a generated Ed25519 one."""
    if values.get("generate") and values.get("private"):
        raise BadRequest("private, generate: give a private key or generate: true, not both")
    if values.get("generate"):
        private = generate_private()
    elif values.get("private"):
        # A key pasted into a browser form arrives with CRLF line ends, which OpenSSH cannot load.
        private = values["private"].replace("\r\n", "\n")
    else:
        raise BadRequest("private: is required (or generate: true)")
    try:
        public = derive_public(private)
    except ValueError as exc:
        raise BadRequest(f"private: {exc}") from None
    return private, public


def create_key(session: Session, box: Box, org_id: str, values: dict, now: datetime) -> Key:
    """Add an SSH key from KeyIn fields; see store_key."""
    return store_key(session, box, org_id, values, None, now)


def store_key(session: Session, box: Box, org_id: str, values: dict, current: Key | None, now: datetime,
              dry_run: bool = False) -> Key:
    """Create (current=None) or edit an SSH key from KeyIn fields; the private key is sealed with `box`, never answered.

    An edit changes the name when given, and the key pair when `private` or `generate` is given.
    dry_run: see commit().
    """
    before = audit.snapshot(current) if current is not None else None
    if current is None:
        require(values, "name")
        private, public = key_material(values)
        key = Key(id=new_id(), org_id=org_id, name=values["name"], public=public,
                  private_enc=box.seal(private), created_at=now, updated_at=now, version=1)
        session.add(key)
    else:
        key = current
        if values.get("name"):
            key.name = values["name"]
        if values.get("private") or values.get("generate"):
            private, public = key_material(values)
            if not _same_secret(box, key.private_enc, private):
                key.private_enc, key.public = box.seal(private), public
        key.updated_at = now
        bump(key)
    audit.record(session, key, "create" if current is None else "update", before, now)
    commit(session, f"name: a key named '{key.name}' already exists", dry_run)
    return key


def delete_key(session: Session, key: Key) -> None:
    """Delete a key; machines that used it fall back to none."""
    audit.record(session, key, "delete")
    session.delete(key)
    session.commit()


# ---------------------------------------------------------------- scripts

def script_json(s: Script) -> dict:
    """A script as the API answers it."""
    return {"id": s.id, "name": s.name, "description": s.description, "script": s.script,
            "exec_type": s.exec_type, **_stamped(s)}


def store_script(session: Session, org_id: str, values: dict, current: Script | None, now: datetime,
                 ansible_refusal: Callable[[], str | None] | None = None, dry_run: bool = False) -> Script:
    """Create (current=None) or edit a script from ScriptIn fields; an edit changes only the fields given.

    dry_run: see commit().

    ansible_refusal (the service's Sandbox.ansible_refusal) says why Ansible scripts cannot run on
    this host: creating one, or switching a script to exec_type ansible, is then a 400 with it.
    """
    if values.get("exec_type") == "ansible" and (current is None or current.exec_type != "ansible") \
            and ansible_refusal is not None:
        # Ansible scripts are tenant code on the worker: refused where runs cannot be sandboxed.
        refusal = ansible_refusal()
        if refusal:
            raise BadRequest(f"exec_type: {refusal}")
    before = audit.snapshot(current) if current is not None else None
    if current is None:
        require(values, "name", "script")
        script = Script(id=new_id(), org_id=org_id, name=values["name"], description=values.get("description"),
                        script=values["script"], exec_type=values.get("exec_type") or "executable",
                        created_at=now, updated_at=now, version=1)
        session.add(script)
    else:
        script = current
        for field in ("name", "description", "script", "exec_type"):
            if field in values and (values[field] is not None or field == "description"):
                setattr(script, field, values[field])
        script.updated_at = now
        bump(script)
    audit.record(session, script, "create" if current is None else "update", before, now)
    commit(session, f"name: a script named '{script.name}' already exists", dry_run)
    return script


def delete_script(session: Session, script: Script) -> None:
    """Delete a script; 409 naming a schedule that still runs it."""
    user = session.scalar(select(Schedule.name).where(Schedule.script_id == script.id).limit(1))
    if user is not None:
        raise Conflict(f"script '{script.id}' is used by schedule '{user}'; change or delete that schedule first")
    audit.record(session, script, "delete")
    session.delete(script)
    session.commit()


# ---------------------------------------------------------------- calendars

def calendar_json(c: Calendar) -> dict:
    """A calendar as the API answers it."""
    return {"id": c.id, "name": c.name, "description": c.description, "timezone": c.timezone,
            "entries": c.entries or [], **_stamped(c)}


def calendars_query(org_id: str, name: str | None = None):
    """The select of an org's calendars, optionally the one with exactly this name."""
    query = select(Calendar).where(Calendar.org_id == org_id)
    return query if name is None else query.where(Calendar.name == name)


def store_calendar(state, session: Session, org_id: str, values: dict, current: Calendar | None,
                   now: datetime, dry_run: bool = False) -> Calendar:
    """Create (current=None) or edit a calendar from CalendarIn fields; an edit changes only the fields given.

    dry_run: see commit(); the dispatcher is not told and the compiled calendar not cached.

    Entries are checked in the calendar's timezone (web.calendars.check_entries, a 400 naming the entry);
    an edit recomputes next_run_at of every schedule that excludes the calendar, in the same transaction.
    """
    from . import calendars, schedules

    def checked(fn, *args):
        try:
            return fn(*args)
        except TimeSpecError as exc:
            raise BadRequest(str(exc)) from None

    before = audit.snapshot(current) if current is not None else None
    if current is None:
        require(values, "name")
        tz = checked(calendars.check_timezone, values.get("timezone") or "UTC")
        calendar = Calendar(id=new_id(), org_id=org_id, name=values["name"], description=values.get("description"),
                            timezone=tz, entries=checked(calendars.check_entries, values.get("entries") or [], tz, now),
                            created_at=now, updated_at=now, version=1)
        session.add(calendar)
    else:
        calendar = current
        if values.get("name"):
            calendar.name = values["name"]
        if "description" in values:
            calendar.description = values["description"]
        if values.get("timezone") is not None or "entries" in values:
            tz = checked(calendars.check_timezone, values.get("timezone") or calendar.timezone)
            entries = values.get("entries")
            if entries is None:
                entries = [] if "entries" in values else calendar.entries or []
            calendar.entries = checked(calendars.check_entries, entries, tz, now)
            calendar.timezone = tz
        calendar.updated_at = now
        bump(calendar)
        # Flushed before the schedules excluding it are read: a name another calendar has fails here, not at the commit.
        commit(session, f"name: a calendar named '{calendar.name}' already exists", dry_run=True)
        users = session.scalars(select(Schedule).join(ScheduleCalendar, ScheduleCalendar.schedule_id == Schedule.id)
                                .where(ScheduleCalendar.calendar_id == calendar.id)).all()
        schedules.recompute(session, users, now)
    audit.record(session, calendar, "create" if current is None else "update", before, now)
    commit(session, f"name: a calendar named '{calendar.name}' already exists", dry_run)
    if dry_run:
        return calendar
    calendars.remember(calendar, now)
    if current is not None:
        state.schedule_changed(None)  # the schedules excluding it may fire at other times now
    return calendar


def delete_calendar(session: Session, calendar: Calendar) -> None:
    """Delete a calendar; 409 naming a schedule that still excludes it."""
    user = session.scalar(select(Schedule.name).join(ScheduleCalendar, ScheduleCalendar.schedule_id == Schedule.id)
                          .where(ScheduleCalendar.calendar_id == calendar.id).limit(1))
    if user is not None:
        raise Conflict(f"calendar '{calendar.id}' is excluded by schedule '{user}'; change or delete that schedule first")
    audit.record(session, calendar, "delete")
    session.delete(calendar)
    commit(session, f"calendar '{calendar.id}' is excluded by a schedule; change or delete that schedule first")
