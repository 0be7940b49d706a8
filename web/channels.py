"""Notification channels: an org's named places to send run events (an Apprise URL, or a signed webhook).

A channel's URL and secret can both hold credentials (a Slack or Teams token sits in the URL's path),
so they are sealed together with the instance's key (web.crypto.Box) and never returned: answers show
`url` masked (the scheme, and a webhook's host) and `has_secret`. Every rule a client can break is a
BadRequest naming the field.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, StrictBool, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import audit
from .config import DEFAULT_NOTIFY_DENIED_NETWORKS
from .crypto import Box, new_id
from .errors import BadRequest, Conflict, TooManyRequests
from .models import Channel, Schedule
from .timemath import format_instant

KINDS = ("apprise", "webhook")
MASK = "…"
MIN_SECRET = 16
# Channels an org may have. Each default channel is a delivery written in the transaction that ends every run
# of the org (and a schedule's notify names at most 50): without a bound, one org's run could write thousands.
MAX_CHANNELS = 50
# Apprise URL options a service reads as a file path or an attachment URL (a message template, a key file, a
# subscription file): a path would read, and send to the receiver, a file of the worker's.
FILE_OPTIONS = ("template", "keyfile", "subfile", "attach", "attachment")


class ChannelIn(BaseModel):
    """A channel as a client writes it (POST and PATCH; required fields are checked after merging)."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    kind: Literal["apprise", "webhook"] | None = None
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    secret: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None
    default: StrictBool | None = None


def mask_url(kind: str, url: str) -> str:
    """What an answer shows of a channel's URL: the scheme, plus the host of a webhook (its path may hold a token).

    An Apprise URL's host part is often a token itself (slack://TokenA/TokenB/...), so only its scheme shows.
    """
    parts = urlsplit(url)
    if kind == "webhook":
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}/{MASK}"
    return f"{parts.scheme}://{MASK}"


def check_webhook_url(url: str, denied_networks=DEFAULT_NOTIFY_DENIED_NETWORKS) -> None:
    """BadRequest unless `url` is an http(s) URL with a host outside `denied_networks` (CIDR strings,
    CLOUDCRON_NOTIFY_DENIED_NETWORKS), for an address literal also in an IPv6 form of a denied IPv4 address.

    Host names are checked when a delivery connects, where they resolve then (web.notify)."""
    from plugins.module_utils._libcloud import check_endpoint_options

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise BadRequest("url: is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("url: a webhook URL must be http:// or https:// with a host, such as https://hooks.example.com/cron")
    try:
        check_endpoint_options({"url": url}, denied_networks, prefix="")
    except ValueError as exc:
        reason = str(exc).split(":", 1)[1].replace("(denied networks)", "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)")
        raise BadRequest("url:" + reason) from None


def check_apprise_url(url: str, denied_networks=DEFAULT_NOTIFY_DENIED_NETWORKS) -> None:
    """BadRequest unless Apprise reads `url` as one of its services; an address literal it names must be outside
    `denied_networks` (CIDR strings, CLOUDCRON_NOTIFY_DENIED_NETWORKS)."""
    import apprise

    quiet_apprise()
    if "://" not in url:
        raise BadRequest("url: is not an Apprise URL (service://..., for example slack://TokenA/TokenB/TokenC or "
                         "json://host/path)")
    scheme = url.split("://", 1)[0].lower()
    if scheme in apprise_schemes() and not sends_over_http(scheme):
        raise BadRequest(f"url: cloudcron sends Apprise notifications only over HTTP(S) services; '{scheme}' would "
                         "act on the worker's own machine or open connections outside the address guard")
    for option, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if option.lower() in FILE_OPTIONS and not value.lower().startswith(("http://", "https://")):
            raise BadRequest(f"url: the '{option}' option names a file on cloudcron's machine; a channel may "
                             "only name an http(s):// address for it")
    service = apprise.Apprise.instantiate(url)
    if service is None:
        raise BadRequest(f"url: Apprise does not read it as a '{scheme}' URL (see the Apprise wiki for the "
                         "service's URL form)")
    for option, value in vars(service).items():  # whatever other option a service reads as a file
        if isinstance(value, apprise.AppriseAttachment) and any(
                not str(getattr(item, "protocol", "")).startswith("http") for item in value):
            raise BadRequest(f"url: the '{option}' option names a file on cloudcron's machine; a channel may "
                             "only name an http(s):// address for it")
    host = urlsplit(url).hostname
    if host:
        from plugins.module_utils._libcloud import Policy, _literal_ip

        ip = _literal_ip(host)
        if ip is not None and Policy(denied_networks).refuses(ip):
            raise BadRequest(f"url: {ip} is in a network cloudcron does not contact "
                             "(CLOUDCRON_NOTIFY_DENIED_NETWORKS)")


def quiet_apprise() -> None:
    """Keep Apprise's own log lines out of the service's log, before Apprise reads a URL.

    They quote the URL they are about ("Could not load Slack URL: slack://T...2/SECRETPART"), its tokens
    blotted out only in part (first and last characters kept, some not at all). A refusal answers the client
    with a 400; a failed attempt records Apprise's lines, redacted, in the delivery (web.notify.send_apprise)."""
    import logging

    logging.getLogger("apprise").propagate = False


def apprise_schemes() -> dict:
    """{scheme: Apprise plugin class} for every service this Apprise build knows (enabled or not)."""
    from apprise.manager_plugins import NotificationManager

    manager = NotificationManager()
    return {schema: manager[schema] for schema in manager.schemas()}


def sends_over_http(scheme: str) -> bool:
    """Whether the Apprise service `scheme` sends through `requests` (so web.notify's address guard covers it).

    Services that write on the worker itself (syslog://, windows://, dbus://, macosx://...) or open their
    own sockets (mailto:// SMTP, rsyslog:// UDP, xmpp://, mqtt://, irc://, amqp://...) would reach any
    address, the instance's own networks included, so a tenant may not name them. The test is the plugin's
    code (a class in its ancestry whose module imports requests), so services Apprise adds are judged alike.
    A service whose code also opens sockets of its own is refused even so: nostr:// imports requests for its
    lookups but publishes over a websocket to whatever relay its URL names (?relay=ws://127.0.0.1:6379)."""
    import sys

    cls = apprise_schemes().get(scheme)
    if cls is None:
        return False
    modules = [sys.modules.get(k.__module__) for k in cls.__mro__
               if k.__module__.startswith("apprise.plugins.") and k.__module__ != "apprise.plugins.base"]
    modules = [m for m in modules if m is not None]
    # A plugin in a package of its own (apprise.plugins.nostr.base) may keep its transport in a sibling module
    # (apprise.plugins.nostr.relay): every loaded module of that package counts.
    packages = {m.__name__.rsplit(".", 1)[0] for m in modules if m.__name__.count(".") >= 3}
    own = modules + [m for name, m in list(sys.modules.items())
                     if m is not None and any(name.startswith(p + ".") for p in packages)]
    if any(_OWN_SOCKETS & set(vars(m)) for m in own):
        return False
    return any("requests" in vars(m) for m in modules)


# Names whose import in a plugin's code means it connects outside requests (and the address guard).
_OWN_SOCKETS = {"socket", "SocketTransport", "smtplib", "ssl", "websocket", "paho", "slixmpp", "asyncio"}


def channel_json(c: Channel) -> dict:
    """A channel as the API answers it: url masked, the secret only as has_secret."""
    return {"id": c.id, "name": c.name, "kind": c.kind, "url": c.url_shown, "has_secret": c.kind == "webhook",
            "default": bool(c.is_default), "created_at": format_instant(c.created_at),
            "updated_at": format_instant(c.updated_at)}


def channels_query(org_id: str, name: str | None = None):
    """The select of an org's channels (order newest first: created_at, id descending)."""
    query = select(Channel).where(Channel.org_id == org_id)
    return query if name is None else query.where(Channel.name == name)


def store(session: Session, box: Box, org_id: str, values: dict, channel: Channel | None, now: datetime,
          denied_networks=DEFAULT_NOTIFY_DENIED_NETWORKS, dry_run: bool = False) -> Channel:
    """Create (channel None) or edit a channel from ChannelIn fields, then commit.

    denied_networks: the ranges (CIDR strings) a URL's address literal may not be in, the server's
    CLOUDCRON_NOTIFY_DENIED_NETWORKS (config.notify_denied_networks).
    dry_run: flush only (the database checks the name's uniqueness), so web.apply can answer what would be
    stored and roll back; nothing is committed. An edit keeps the stored URL and secret unless given (a client never gets them back to resend). Changing
    `kind` needs a new `url` (and a `secret` for a webhook). 409 on a duplicate name."""
    current = box.open(channel.target_enc) if channel is not None else {}
    kind = values.get("kind") or (channel.kind if channel is not None else None)
    name = values.get("name") or (channel.name if channel is not None else None)
    if not name:
        raise BadRequest("name: is required")
    if not kind:
        raise BadRequest("kind: is required (one of 'apprise', 'webhook')")
    if channel is not None and kind != channel.kind and not values.get("url"):
        raise BadRequest("url: is required when kind changes")
    url = values.get("url") or current.get("url")
    if not url:
        raise BadRequest("url: is required")
    secret = values.get("secret") or (current.get("secret") if kind == current.get("kind", kind) else None)
    if kind == "webhook":
        check_webhook_url(url, denied_networks)
        if secret and len(secret) < MIN_SECRET:
            raise BadRequest(f"secret: must be at least {MIN_SECRET} characters (a random string: receivers "
                             "verify X-Cloudcron-Signature with it)")
        if not secret:
            raise BadRequest("secret: is required for a webhook (at least 16 characters; receivers verify "
                             "X-Cloudcron-Signature with it)")
    else:
        check_apprise_url(url, denied_networks)
        if values.get("secret"):
            raise BadRequest("secret: only webhook channels take a secret; an Apprise URL carries its own credentials")
        secret = None
    created = channel is None
    before = None if created else audit.snapshot(channel)
    if created and session.scalar(select(func.count()).select_from(Channel)
                                  .where(Channel.org_id == org_id)) >= MAX_CHANNELS:
        raise Conflict(f"an org has at most {MAX_CHANNELS} channels; delete one first")
    if created:
        channel = Channel(id=new_id(), org_id=org_id, created_at=now)
        session.add(channel)
    channel.name, channel.kind, channel.updated_at = name, kind, now
    target = {"kind": kind, "url": url, **({"secret": secret} if secret else {})}
    if target != current:  # sealing anew changes the ciphertext: the audit log would show a change that is none
        channel.target_enc = box.seal(target)
    channel.url_shown = mask_url(kind, url)
    if values.get("default") is not None:
        channel.is_default = values["default"]
    elif channel.is_default is None:
        channel.is_default = False
    audit.record(session, channel, "create" if created else "update", before, now)
    from sqlalchemy.exc import IntegrityError

    try:
        session.flush() if dry_run else session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"name: a channel named '{name}' already exists") from None
    return channel


def delete(session: Session, channel: Channel) -> None:
    """Delete a channel; 409 naming the schedule when a schedule's notify setting names it."""
    for name, notify in session.execute(select(Schedule.name, Schedule.notify)
                                        .where(Schedule.org_id == channel.org_id, Schedule.notify.is_not(None))):
        if channel.id in ((notify or {}).get("channels") or []):
            raise Conflict(f"channel '{channel.id}' is notified by schedule '{name}'; change that schedule's notify first")
    audit.record(session, channel, "delete")
    session.delete(channel)
    session.commit()


# Orgs with a test send under way in this process. A test holds its request's thread for up to
# CLOUDCRON_NOTIFY_TIMEOUT; one at a time per org keeps an org's slow receiver from holding them all.
_TESTING: set[str] = set()
_TESTING_LOCK = threading.Lock()


@contextmanager
def one_test_at_a_time(org: str, timeout: float):
    """Hold the org's test slot in this process for the block (a test send by the API or the console).

    TooManyRequests (Retry-After: the attempt's bound, `timeout` seconds) when another test of the org holds it."""
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


def target(box: Box, channel: Channel) -> dict:
    """The channel's sealed {"kind", "url", "secret"?}, for a sender only."""
    return box.open(channel.target_enc)


def resolve_names(session: Session, org_id: str, given: list, field: str = "notify.channels") -> list[str]:
    """Channel ids for a list of the org's channel ids or names, in the order given, without repeats.

    BadRequest naming the entry for one that is not a channel of the org (another org's id reads as unknown)."""
    rows = session.execute(select(Channel.id, Channel.name).where(Channel.org_id == org_id)).all()
    by_id = {r.id: r.id for r in rows}
    by_name = {r.name: r.id for r in rows}
    out: list[str] = []
    for i, item in enumerate(given):
        if not isinstance(item, str):
            raise BadRequest(f"{field}.{i}: must be a channel id or name (a string)")
        found = by_id.get(item) or by_name.get(item)
        if found is None:
            raise BadRequest(f"{field}.{i}: no channel '{item}' in this org")
        if found not in out:
            out.append(found)
    return out
