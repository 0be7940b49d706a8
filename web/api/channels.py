"""Notification channels (/api/v1/channels): where an org's run events go, and a test send."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import apply, channels, db, state, utcnow
from ..models import Channel
from ..notify import send_test
from ..resources import STAMPS
from ..validation import json_body
from . import apply_response, body, check_if_match, get_by_name, get_owned, list_response, org_id, query_flag, with_etag

bp = Blueprint("channels", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)

READ_ONLY = STAMPS | {"has_secret"}


@bp.get("/channels")
def list_channels():
    query = channels.channels_query(org_id(), request.args.get("name"))
    return list_response(query, channels.channel_json, (Channel.created_at.desc(), Channel.id.desc()))


@bp.post("/channels")
def create_channel():
    values = body(channels.ChannelIn, READ_ONLY)
    channel = channels.store(db(), state().box, org_id(), values, None, utcnow(),
                             state().config.notify_denied_networks)
    return with_etag(jsonify(channels.channel_json(channel)), channel)


@bp.get("/channels/<id_>")
def get_channel(id_):
    channel = get_owned(Channel, id_, "channel")
    return with_etag(jsonify(channels.channel_json(channel)), channel)


@bp.patch("/channels/<id_>")
def edit_channel(id_):
    channel = get_owned(Channel, id_, "channel")
    check_if_match(channel)
    values = body(channels.ChannelIn, READ_ONLY)
    channels.store(db(), state().box, org_id(), values, channel, utcnow(), state().config.notify_denied_networks)
    return with_etag(jsonify(channels.channel_json(channel)), channel)


@bp.delete("/channels/<id_>")
def delete_channel(id_):
    channel = get_owned(Channel, id_, "channel")
    check_if_match(channel)
    channels.delete(db(), channel)
    return jsonify({"deleted": id_})


# The URL and the secret are write-only (answers mask them): sent on create, on an existing channel only with
# ?update_secrets=true, never compared. The answer's masked url is derived from them, so it is not compared either.
CHANNEL = apply.Kind("channel", channels.channel_json, ("name", "kind", "default"),
                     secrets=frozenset({"url", "secret"}), model=Channel)


@bp.put("/channels/by-name/<name:name>")
def apply_channel(name):
    """Declarative apply of a channel (see web.apply); ?dry_run=true writes nothing.

    url and secret are sent on create and, on an existing channel, only with ?update_secrets=true (then they
    count as changed). A change of kind needs the new target, so it sends url and secret as if asked."""
    desired = body(channels.ChannelIn, READ_ONLY, apply.desired_with_name(json_body(), "name", name))
    current = get_by_name(Channel, Channel.name, name)
    check_if_match(current)
    now = utcnow()

    def store(values, cur, dry):
        if not dry:
            check_if_match(cur)  # again: the trial's rollback ended the first check's transaction
        return channels.store(db(), state().box, org_id(), values, cur, now,
                              state().config.notify_denied_networks, dry_run=dry)

    kind_changes = current is not None and desired.get("kind") not in (None, current.kind)
    applied = apply.apply(db(), CHANNEL, current, desired, store, dry_run=query_flag("dry_run"),
                          update_secrets=query_flag("update_secrets") or kind_changes)
    return apply_response(applied, "channel")


@bp.post("/channels/<id_>/test")
def test_channel(id_):
    """Send a test event now (one attempt, recorded as a delivery of kind test) and answer that delivery.

    One test at a time per org in a process: another while one is under way is a 429 with Retry-After."""
    channel = get_owned(Channel, id_, "channel")
    with channels.one_test_at_a_time(channel.org_id, state().config.notify_timeout):
        return jsonify(send_test(state(), db(), channel, utcnow()))
