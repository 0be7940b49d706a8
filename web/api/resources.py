"""What a schedule points at: clouds, their machines, SSH keys and scripts."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import db, state, utcnow
from ..crypto import new_id
from ..errors import BadRequest, Conflict, NotFound
from ..keys import derive_public, generate_private
from ..models import Cloud, Key, Machine, Schedule, Script
from ..schemas import CloudIn, KeyIn, MachineIn, ScriptIn
from ..timemath import format_instant
from ..validation import check_fields, json_body, validate
from . import bp, get_owned, list_response, org_id

STAMPS = {"id", "created_at", "updated_at"}


def _fields(model, read_only: set[str]) -> dict:
    data = check_fields(json_body(), set(model.model_fields), read_only)
    typed = validate(model, {k: v for k, v in data.items() if v is not None})
    return {k: typed.get(k) for k in data}


def _require(values: dict, *names: str) -> None:
    for name in names:
        if values.get(name) in (None, ""):
            raise BadRequest(f"{name}: is required")


def _commit(conflict: str):
    session = db()
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(conflict) from None


def _stamped(row) -> dict:
    return {"created_at": format_instant(row.created_at), "updated_at": format_instant(row.updated_at)}


# ---------------------------------------------------------------- clouds

def cloud_json(c: Cloud) -> dict:
    return {"id": c.id, "title": c.title, "provider": c.provider, "options": c.options or {}, **_stamped(c)}


def _check_provider(provider: str) -> None:
    if provider == "other":
        return
    from plugins.module_utils._libcloud import TEST_PROVIDERS, provider_names

    if provider in TEST_PROVIDERS:
        raise BadRequest(f"provider: '{provider}' is libcloud's test driver, not a cloud; use a real provider "
                         "(for example ec2, gce, openstack) or other for SSH hosts")
    names = provider_names()
    if provider not in names:
        raise BadRequest(f"provider: '{provider}' is not a libcloud compute provider "
                         "(for example ec2, gce, openstack, azure_arm, digitalocean, or other for SSH hosts)")


def _check_options(options) -> None:
    """Driver options may not point at what the service never contacts (CLOUDCRON_DENIED_NETWORKS, non-HTTP URLs)."""
    from plugins.module_utils._libcloud import check_endpoint_options

    try:
        check_endpoint_options(options or {}, state().config.denied_networks)
    except ValueError as exc:
        raise BadRequest(str(exc).replace("(denied networks)", "(CLOUDCRON_DENIED_NETWORKS)")) from None


@bp.get("/clouds")
def list_clouds():
    query = select(Cloud).where(Cloud.org_id == org_id())
    if "title" in request.args:
        query = query.where(Cloud.title == request.args["title"])
    return list_response(query, cloud_json, (Cloud.created_at.desc(), Cloud.id.desc()))


@bp.post("/clouds")
def create_cloud():
    values = _fields(CloudIn, STAMPS)
    _require(values, "title", "provider")
    _check_provider(values["provider"])
    _check_options(values.get("options"))
    now = utcnow()
    cloud = Cloud(id=new_id(), org_id=org_id(), title=values["title"], provider=values["provider"],
                  options=values.get("options") or {}, created_at=now, updated_at=now,
                  credentials_enc=state().box.seal(values.get("credentials") or {}))
    db().add(cloud)
    _commit(f"title: a cloud titled '{cloud.title}' already exists")
    return jsonify(cloud_json(cloud))


@bp.get("/clouds/<id_>")
def get_cloud(id_):
    return jsonify(cloud_json(get_owned(Cloud, id_, "cloud")))


@bp.patch("/clouds/<id_>")
def edit_cloud(id_):
    cloud = get_owned(Cloud, id_, "cloud")
    values = _fields(CloudIn, STAMPS)
    if "provider" in values and values["provider"] != cloud.provider:
        raise BadRequest("provider: cannot be changed; add a new cloud instead")
    if values.get("title"):
        cloud.title = values["title"]
    if "options" in values:
        _check_options(values["options"])
        cloud.options = values["options"] or {}
    if values.get("credentials") is not None:
        cloud.credentials_enc = state().box.seal(values["credentials"])
    cloud.updated_at = utcnow()
    _commit(f"title: a cloud titled '{cloud.title}' already exists")
    return jsonify(cloud_json(cloud))


def _in_use(column, value, what: str) -> None:
    name = db().scalar(select(Schedule.name).where(column == value).limit(1))
    if name is not None:
        raise Conflict(f"{what} is used by schedule '{name}'; change or delete that schedule first")


@bp.delete("/clouds/<id_>")
def delete_cloud(id_):
    cloud = get_owned(Cloud, id_, "cloud")
    session = db()
    # machines_per_cloud is JSON, so look for the id in the org's schedules' targets.
    for name, mpc in session.execute(select(Schedule.name, Schedule.machines_per_cloud).where(Schedule.org_id == org_id())):
        if any(pair[0] == id_ for pair in mpc or []):
            raise Conflict(f"cloud '{id_}' is a target of schedule '{name}'; change or delete that schedule first")
    session.delete(cloud)
    session.commit()
    return jsonify({"deleted": id_})


# ---------------------------------------------------------------- machines

def machine_json(m: Machine) -> dict:
    return {
        "id": m.id, "cloud_id": m.cloud_id, "machine_id": m.machine_id, "name": m.name, "host": m.host,
        "port": m.port, "ssh_user": m.ssh_user, "key_id": m.key_id, "state": m.state,
        "public_ips": m.public_ips or [], "private_ips": m.private_ips or [], "tags": m.tags or {},
        **_stamped(m),
    }


def _check_key(key_id) -> None:
    if key_id is not None:
        key = db().get(Key, key_id)
        if key is None or key.org_id != org_id():
            raise BadRequest(f"key_id: no key '{key_id}' in this org")


TRUNCATED_HEADER = "X-Machines-Truncated"


@bp.get("/clouds/<cid>/machines")
def list_machines(cid):
    """A libcloud cloud's machines as its provider lists them now (read, then stored with stable ids).

    The provider is asked with no transaction open, on the listing pool (429 when this org's or
    everyone's listing slots are taken); what it answered is written in one short transaction."""
    cloud = get_owned(Cloud, cid, "cloud")
    listing = None
    if cloud.provider != "other":
        from ..machines import ProviderLimits, cloud_spec, fetch_nodes, store_nodes

        st = state()
        spec = cloud_spec(st.box, cloud)
        db().rollback()  # end the read transaction: nothing of the database is held while the provider answers
        limits = ProviderLimits.of(st.config)
        listing = st.listings.run(spec.org_id, lambda: fetch_nodes(spec, limits), what=f"cloud '{spec.id}'")
        with st.db.transaction() as session:
            store_nodes(session, spec, listing, utcnow())
    query = select(Machine).where(Machine.cloud_id == cid)
    resp = list_response(query, machine_json, (Machine.created_at.desc(), Machine.id.desc()))
    if listing is not None and listing.truncated:
        # The answer stays a JSON array (Mist's clients expect one): the cut is told in a header.
        resp.headers[TRUNCATED_HEADER] = (f"{len(listing.nodes)} of {listing.listed} machines kept "
                                          "(CLOUDCRON_MAX_MACHINES_PER_CLOUD)")
    return resp


@bp.post("/clouds/<cid>/machines")
def create_machine(cid):
    cloud = get_owned(Cloud, cid, "cloud")
    if cloud.provider != "other":
        raise BadRequest(f"provider: machines of a '{cloud.provider}' cloud are read from the provider; "
                         "only 'other' clouds take declared machines")
    values = _fields(MachineIn, STAMPS | {"cloud_id", "state", "public_ips", "private_ips"})
    _require(values, "name", "host")
    _check_key(values.get("key_id"))
    now = utcnow()
    machine = Machine(id=new_id(), org_id=org_id(), cloud_id=cloud.id,
                      machine_id=values.get("machine_id") or values["name"], name=values["name"],
                      host=values["host"], port=values.get("port") or 22, ssh_user=values.get("ssh_user") or "root",
                      key_id=values.get("key_id"), state="unknown", public_ips=[values["host"]], private_ips=[],
                      tags=values.get("tags") or {}, created_at=now, updated_at=now)
    db().add(machine)
    _commit(f"machine_id: cloud '{cid}' already has a machine '{machine.machine_id}'")
    return jsonify(machine_json(machine))


def _owned_machine(cid, mid) -> Machine:
    machine = get_owned(Machine, mid, "machine")
    if machine.cloud_id != cid:
        raise NotFound(f"machine '{mid}' not found")
    return machine


@bp.get("/clouds/<cid>/machines/<mid>")
def get_machine(cid, mid):
    return jsonify(machine_json(_owned_machine(cid, mid)))


@bp.patch("/clouds/<cid>/machines/<mid>")
def edit_machine(cid, mid):
    machine = _owned_machine(cid, mid)
    cloud = db().get(Cloud, cid)
    read_only = STAMPS | {"cloud_id", "machine_id", "state", "public_ips", "private_ips"}
    if cloud.provider != "other":
        read_only |= {"name", "tags"}  # those come from the provider
    values = _fields(MachineIn, read_only)
    if "key_id" in values:
        _check_key(values["key_id"])
    for field in ("name", "host", "port", "ssh_user", "key_id", "tags"):
        if field in values:
            setattr(machine, field, values[field])
    machine.updated_at = utcnow()
    db().commit()
    return jsonify(machine_json(machine))


@bp.delete("/clouds/<cid>/machines/<mid>")
def delete_machine(cid, mid):
    machine = _owned_machine(cid, mid)
    db().delete(machine)
    db().commit()
    return jsonify({"deleted": mid})


# ---------------------------------------------------------------- keys

def key_json(k: Key) -> dict:
    return {"id": k.id, "name": k.name, "public": k.public, **_stamped(k)}


@bp.get("/keys")
def list_keys():
    query = select(Key).where(Key.org_id == org_id())
    if "name" in request.args:
        query = query.where(Key.name == request.args["name"])
    return list_response(query, key_json, (Key.created_at.desc(), Key.id.desc()))


def _key_material(values: dict) -> tuple[str, str]:
    if values.get("generate") and values.get("private"):
        raise BadRequest("private, generate: give a private key or generate: true, not both")
    if values.get("generate"):
        private = generate_private()
    elif values.get("private"):
        private = values["private"]
    else:
        raise BadRequest("private: is required (or generate: true)")
    try:
        public = derive_public(private)
    except ValueError as exc:
        raise BadRequest(f"private: {exc}") from None
    return private, public


@bp.post("/keys")
def create_key():
    values = _fields(KeyIn, STAMPS | {"public"})
    _require(values, "name")
    private, public = _key_material(values)
    now = utcnow()
    key = Key(id=new_id(), org_id=org_id(), name=values["name"], public=public,
              private_enc=state().box.seal(private), created_at=now, updated_at=now)
    db().add(key)
    _commit(f"name: a key named '{key.name}' already exists")
    return jsonify(key_json(key))


@bp.get("/keys/<id_>")
def get_key(id_):
    return jsonify(key_json(get_owned(Key, id_, "key")))


@bp.patch("/keys/<id_>")
def edit_key(id_):
    key = get_owned(Key, id_, "key")
    values = _fields(KeyIn, STAMPS | {"public"})
    if values.get("name"):
        key.name = values["name"]
    if values.get("private") or values.get("generate"):
        private, key.public = _key_material(values)
        key.private_enc = state().box.seal(private)
    key.updated_at = utcnow()
    _commit(f"name: a key named '{key.name}' already exists")
    return jsonify(key_json(key))


@bp.delete("/keys/<id_>")
def delete_key(id_):
    key = get_owned(Key, id_, "key")
    db().delete(key)
    db().commit()
    return jsonify({"deleted": id_})


# ---------------------------------------------------------------- scripts

def script_json(s: Script) -> dict:
    return {"id": s.id, "name": s.name, "description": s.description, "script": s.script,
            "exec_type": s.exec_type, **_stamped(s)}


@bp.get("/scripts")
def list_scripts():
    query = select(Script).where(Script.org_id == org_id())
    if "name" in request.args:
        query = query.where(Script.name == request.args["name"])
    return list_response(query, script_json, (Script.created_at.desc(), Script.id.desc()))


@bp.post("/scripts")
def create_script():
    values = _fields(ScriptIn, STAMPS)
    _require(values, "name", "script")
    now = utcnow()
    script = Script(id=new_id(), org_id=org_id(), name=values["name"], description=values.get("description"),
                    script=values["script"], exec_type=values.get("exec_type") or "executable",
                    created_at=now, updated_at=now)
    db().add(script)
    _commit(f"name: a script named '{script.name}' already exists")
    return jsonify(script_json(script))


@bp.get("/scripts/<id_>")
def get_script(id_):
    return jsonify(script_json(get_owned(Script, id_, "script")))


@bp.patch("/scripts/<id_>")
def edit_script(id_):
    script = get_owned(Script, id_, "script")
    values = _fields(ScriptIn, STAMPS)
    for field in ("name", "description", "script", "exec_type"):
        if field in values and (values[field] is not None or field == "description"):
            setattr(script, field, values[field])
    script.updated_at = utcnow()
    _commit(f"name: a script named '{script.name}' already exists")
    return jsonify(script_json(script))


@bp.delete("/scripts/<id_>")
def delete_script(id_):
    script = get_owned(Script, id_, "script")
    _in_use(Schedule.script_id, id_, f"script '{id_}'")
    db().delete(script)
    db().commit()
    return jsonify({"deleted": id_})
