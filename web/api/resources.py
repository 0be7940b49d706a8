"""What a schedule points at: clouds, their machines, SSH keys and scripts."""
from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from .. import apply, db, resources, state, utcnow
from ..errors import NotFound
from ..models import Cloud, Key, Machine, Script
from ..resources import MACHINE_READ_ONLY, STAMPS, cloud_json, key_json, machine_json, script_json
from ..schemas import CloudIn, KeyIn, MachineIn, ScriptIn
from ..validation import json_body
from . import apply_response, body, check_if_match, get_by_name, get_owned, list_response, org_id, query_flag, with_etag

bp = Blueprint("resources", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)


def _apply(kind: apply.Kind, schema, column, name_field: str, name: str, read_only: set[str], store):
    """PUT <collection>/by-name/<name>: apply the body (the desired state) with the resource's service function.

    ?dry_run=true writes nothing; ?update_secrets=true replaces the stored secret of an existing resource."""
    desired = body(schema, read_only, apply.desired_with_name(json_body(), name_field, name))
    current = get_by_name(kind.model, column, name)
    check_if_match(current)

    def guarded(given, cur, dry):
        if not dry:
            check_if_match(cur)  # again: the trial's rollback ended the first check's transaction
        return store(given, cur, dry)

    applied = apply.apply(db(), kind, current, desired, guarded, dry_run=query_flag("dry_run"),
                          update_secrets=query_flag("update_secrets"))
    return apply_response(applied, kind.key)


# ---------------------------------------------------------------- clouds

@bp.get("/clouds")
def list_clouds():
    query = select(Cloud).where(Cloud.org_id == org_id())
    if "title" in request.args:
        query = query.where(Cloud.title == request.args["title"])
    return list_response(query, cloud_json, (Cloud.created_at.desc(), Cloud.id.desc()))


@bp.post("/clouds")
def create_cloud():
    cloud = resources.create_cloud(db(), state().box, org_id(), body(CloudIn, STAMPS), utcnow(),
                                   denied_networks=state().config.denied_networks)
    return with_etag(jsonify(cloud_json(cloud)), cloud)


@bp.get("/clouds/<id_>")
def get_cloud(id_):
    cloud = get_owned(Cloud, id_, "cloud")
    return with_etag(jsonify(cloud_json(cloud)), cloud)


def _store_cloud(values, current, dry_run):
    return resources.store_cloud(db(), state().box, org_id(), values, current, utcnow(),
                                 state().config.denied_networks, dry_run=dry_run)


@bp.patch("/clouds/<id_>")
def edit_cloud(id_):
    cloud = get_owned(Cloud, id_, "cloud")
    check_if_match(cloud)
    _store_cloud(body(CloudIn, STAMPS), cloud, False)
    return with_etag(jsonify(cloud_json(cloud)), cloud)


CLOUD = apply.Kind("cloud", cloud_json, ("title", "provider", "options"), secrets=frozenset({"credentials"}),
                   model=Cloud)


@bp.put("/clouds/by-title/<name:title>")
def apply_cloud(title):
    return _apply(CLOUD, CloudIn, Cloud.title, "title", title, STAMPS, _store_cloud)


@bp.delete("/clouds/<id_>")
def delete_cloud(id_):
    cloud = get_owned(Cloud, id_, "cloud")
    check_if_match(cloud)
    resources.delete_cloud(db(), cloud)
    return jsonify({"deleted": id_})


# ---------------------------------------------------------------- machines

TRUNCATED_HEADER = "X-Machines-Truncated"


@bp.get("/clouds/<cid>/machines")
def list_machines(cid):
    """A libcloud cloud's machines as its provider lists them now (read, then stored with stable ids).

    resources.refresh_cloud asks the provider with no transaction open, on the listing pool (429 when
    this org's or everyone's listing slots are taken), and writes what it answered in one short
    transaction; no request session is opened before it."""
    db().rollback()  # the token check's read transaction ends: nothing is held while the provider answers
    listing = resources.refresh_cloud(state(), org_id(), cid, utcnow())
    resp = list_response(resources.machines_query(cid), machine_json, (Machine.created_at.desc(), Machine.id.desc()))
    if listing is not None and listing.truncated:
        # The answer stays a JSON array (Mist's clients expect one): the cut is told in a header.
        resp.headers[TRUNCATED_HEADER] = (f"{len(listing.nodes)} of {listing.listed} machines kept "
                                          "(CLOUDCRON_MAX_MACHINES_PER_CLOUD)")
    return resp


@bp.post("/clouds/<cid>/machines")
def create_machine(cid):
    cloud = get_owned(Cloud, cid, "cloud")
    resources.check_declarable(cloud)  # before the fields: the cloud's kind is the first thing wrong
    values = body(MachineIn, MACHINE_READ_ONLY)
    return jsonify(machine_json(resources.declare_machine(db(), org_id(), cloud, values, utcnow())))


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
    values = body(MachineIn, resources.machine_read_only(db().get(Cloud, cid)))
    resources.update_machine(db(), org_id(), machine, values, utcnow())
    return jsonify(machine_json(machine))


@bp.delete("/clouds/<cid>/machines/<mid>")
def delete_machine(cid, mid):
    resources.delete_machine(db(), _owned_machine(cid, mid))
    return jsonify({"deleted": mid})


# ---------------------------------------------------------------- keys

@bp.get("/keys")
def list_keys():
    query = select(Key).where(Key.org_id == org_id())
    if "name" in request.args:
        query = query.where(Key.name == request.args["name"])
    return list_response(query, key_json, (Key.created_at.desc(), Key.id.desc()))


@bp.post("/keys")
def create_key():
    key = resources.create_key(db(), state().box, org_id(), body(KeyIn, STAMPS | {"public"}), utcnow())
    return with_etag(jsonify(key_json(key)), key)


@bp.get("/keys/<id_>")
def get_key(id_):
    key = get_owned(Key, id_, "key")
    return with_etag(jsonify(key_json(key)), key)


def _store_key(values, current, dry_run):
    return resources.store_key(db(), state().box, org_id(), values, current, utcnow(), dry_run=dry_run)


@bp.patch("/keys/<id_>")
def edit_key(id_):
    key = get_owned(Key, id_, "key")
    check_if_match(key)
    _store_key(body(KeyIn, STAMPS | {"public"}), key, False)
    return with_etag(jsonify(key_json(key)), key)


KEY = apply.Kind("key", key_json, ("name", "public"), secrets=frozenset({"private", "generate"}), model=Key)


@bp.put("/keys/by-name/<name:name>")
def apply_key(name):
    return _apply(KEY, KeyIn, Key.name, "name", name, STAMPS | {"public"}, _store_key)


@bp.delete("/keys/<id_>")
def delete_key(id_):
    key = get_owned(Key, id_, "key")
    check_if_match(key)
    resources.delete_key(db(), key)
    return jsonify({"deleted": id_})


# ---------------------------------------------------------------- scripts

@bp.get("/scripts")
def list_scripts():
    query = select(Script).where(Script.org_id == org_id())
    if "name" in request.args:
        query = query.where(Script.name == request.args["name"])
    return list_response(query, script_json, (Script.created_at.desc(), Script.id.desc()))


def _ansible_refusal() -> str | None:
    return state().sandbox.ansible_refusal()


@bp.post("/scripts")
def create_script():
    script = resources.store_script(db(), org_id(), body(ScriptIn, STAMPS), None, utcnow(), _ansible_refusal)
    return with_etag(jsonify(script_json(script)), script)


@bp.get("/scripts/<id_>")
def get_script(id_):
    script = get_owned(Script, id_, "script")
    return with_etag(jsonify(script_json(script)), script)


@bp.patch("/scripts/<id_>")
def edit_script(id_):
    script = get_owned(Script, id_, "script")
    check_if_match(script)
    resources.store_script(db(), org_id(), body(ScriptIn, STAMPS), script, utcnow(), _ansible_refusal)
    return with_etag(jsonify(script_json(script)), script)


def _store_script(values, current, dry_run):
    return resources.store_script(db(), org_id(), values, current, utcnow(), _ansible_refusal, dry_run=dry_run)


SCRIPT = apply.Kind("script", script_json, ("name", "description", "script", "exec_type"), model=Script)


@bp.put("/scripts/by-name/<name:name>")
def apply_script(name):
    return _apply(SCRIPT, ScriptIn, Script.name, "name", name, STAMPS, _store_script)


@bp.delete("/scripts/<id_>")
def delete_script(id_):
    script = get_owned(Script, id_, "script")
    check_if_match(script)
    resources.delete_script(db(), script)
    return jsonify({"deleted": id_})
