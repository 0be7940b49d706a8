"""Notification channels (/api/v1/channels): where an org's run events go, and a test send."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from flask import Blueprint, jsonify, request

from .. import channels, db, state, utcnow
from ..errors import TooManyRequests
from ..models import Channel
from ..notify import send_test
from ..resources import STAMPS
from . import body, get_owned, list_response, org_id

bp = Blueprint("channels", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)

READ_ONLY = STAMPS | {"has_secret"}

# Orgs with a test send under way in this process. A test holds its request's thread for up to
# CLOUDCRON_NOTIFY_TIMEOUT; one at a time per org keeps an org's slow receiver from holding them all.
_TESTING: set[str] = set()
_TESTING_LOCK = threading.Lock()


@contextmanager
def _one_test_per_org(org: str, timeout: float):
    """Hold the org's test slot for the block; TooManyRequests (Retry-After: the attempt's bound) when it is taken."""
    with _TESTING_LOCK:
        if org in _TESTING:
            raise TooManyRequests("a test of one of this org's channels is being sent; send the next when it has "
                                  f"been answered (at most {timeout:g} s, CLOUDCRON_NOTIFY_TIMEOUT)",
                                  retry_after=max(1, round(timeout)))
        _TESTING.add(org)
    try:
        yield
    finally:
        with _TESTING_LOCK:
            _TESTING.discard(org)


@bp.get("/channels")
def list_channels():
    query = channels.channels_query(org_id(), request.args.get("name"))
    return list_response(query, channels.channel_json, (Channel.created_at.desc(), Channel.id.desc()))


@bp.post("/channels")
def create_channel():
    values = body(channels.ChannelIn, READ_ONLY)
    channel = channels.store(db(), state().box, org_id(), values, None, utcnow(), state().config.denied_networks)
    return jsonify(channels.channel_json(channel))


@bp.get("/channels/<id_>")
def get_channel(id_):
    return jsonify(channels.channel_json(get_owned(Channel, id_, "channel")))


@bp.patch("/channels/<id_>")
def edit_channel(id_):
    channel = get_owned(Channel, id_, "channel")
    values = body(channels.ChannelIn, READ_ONLY)
    channels.store(db(), state().box, org_id(), values, channel, utcnow(), state().config.denied_networks)
    return jsonify(channels.channel_json(channel))


@bp.delete("/channels/<id_>")
def delete_channel(id_):
    channels.delete(db(), get_owned(Channel, id_, "channel"))
    return jsonify({"deleted": id_})


@bp.post("/channels/<id_>/test")
def test_channel(id_):
    """Send a test event now (one attempt, recorded as a delivery of kind test) and answer that delivery.

    One test at a time per org in a process: another while one is under way is a 429 with Retry-After."""
    channel = get_owned(Channel, id_, "channel")
    with _one_test_per_org(channel.org_id, state().config.notify_timeout):
        return jsonify(send_test(state(), db(), channel, utcnow()))
