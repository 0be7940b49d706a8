"""Machines: read from libcloud providers (kept in the database so our ids stay stable) and resolved for runs.

Talking to a provider and writing what it said are separate steps, because no transaction may stay
open while a provider is asked (on SQLite a writing transaction holds the service's one write lock):
read the cloud (cloud_spec), commit, list it with no transaction open (fetch_nodes), then write the
outcome in one short transaction (store_nodes). resolve() only reads and writes the database.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import metrics
from .crypto import Box, new_id
from .errors import APIError
from .models import Cloud, Key, Machine, Schedule
from .validation import is_host


class ProviderError(APIError):
    """The cloud provider could not be reached or refused: the answer is a 502 naming the cloud."""

    status = 502


@dataclass(frozen=True)
class CloudSpec:
    """What a provider call needs of a cloud, read before the call so no session is held during it."""

    id: str
    org_id: str
    provider: str
    credentials: dict = field(repr=False)
    options: dict


@dataclass
class Listing:
    """A provider's machines as plain dicts (at most the configured bound) and how many it listed in all."""

    cloud_id: str
    nodes: list[dict]
    listed: int
    ids: set[str] = field(default_factory=set)  # every id the provider listed, cut or not

    @property
    def truncated(self) -> bool:
        return self.listed > len(self.nodes)


@dataclass(frozen=True)
class ProviderLimits:
    """The server's bounds on provider calls (from the configuration)."""

    timeout: float
    max_machines: int
    denied_networks: tuple
    max_answer_bytes: int = 128 * 1024 * 1024

    @classmethod
    def of(cls, config) -> ProviderLimits:
        return cls(config.provider_timeout, config.max_machines_per_cloud, tuple(config.denied_networks),
                   config.provider_max_answer_mb * 1024 * 1024)


def cloud_spec(box: Box, cloud: Cloud) -> CloudSpec:
    """A cloud's provider, decrypted credentials and options, detached from the session."""
    return CloudSpec(cloud.id, cloud.org_id, cloud.provider,
                     box.open(cloud.credentials_enc, cloud.org_id) if cloud.credentials_enc else {},
                     dict(cloud.options or {}))


def fetch_nodes(spec: CloudSpec, limits: ProviderLimits) -> Listing:
    """List a libcloud cloud's machines from its provider. Network only: call it with no transaction open.

    Each call is bounded by limits.timeout (retries included, on whatever thread, also against a server
    that trickles bytes), refuses addresses in limits.denied_networks and answers larger than
    limits.max_answer_bytes, and keeps at most limits.max_machines machines (by machine id). Raises
    ProviderError with a short reason, never the provider's answer body.
    """
    from plugins.module_utils._libcloud import get_driver, list_nodes

    try:
        driver = get_driver(spec.provider, spec.credentials, spec.options, call_timeout=limits.timeout,
                            denied_networks=limits.denied_networks, max_answer_bytes=limits.max_answer_bytes)
        listed = list_nodes(driver)
    except ValueError as exc:  # LibcloudActionError too: messages made to be shown
        metrics.provider_error(spec.provider)
        raise ProviderError(f"cloud '{spec.id}' ({spec.provider}): cannot list machines: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a driver's own failure: its kind only, never its text
        metrics.provider_error(spec.provider)
        raise ProviderError(f"cloud '{spec.id}' ({spec.provider}): cannot list machines: "
                            f"{type(exc).__name__}") from None
    nodes: dict[str, dict] = {}
    for node in listed:
        nodes.setdefault(node["machine_id"], node)  # a provider listing one id twice: the first is kept
    kept = [nodes[k] for k in sorted(nodes)[: limits.max_machines]]
    return Listing(spec.id, kept, len(nodes), set(nodes))


def store_nodes(session: Session, spec: CloudSpec, listing: Listing, now: datetime) -> list[Machine]:
    """Upsert a listing's machines and mark the cloud's machines it no longer has `missing`; returns the rows.

    Database only: meant for one short write transaction after fetch_nodes. A machine beyond a cut
    listing is neither added nor marked missing (the provider still has it)."""
    rows = {m.machine_id: m for m in session.scalars(select(Machine).where(Machine.cloud_id == spec.id))}
    for node in listing.nodes:
        row = rows.get(node["machine_id"])
        if row is None:
            row = Machine(id=new_id(), org_id=spec.org_id, cloud_id=spec.id, machine_id=node["machine_id"],
                          created_at=now)
            session.add(row)
            rows[row.machine_id] = row
        row.name = node.get("name")
        row.state = node.get("state")
        row.public_ips = node.get("public_ips") or []
        row.private_ips = node.get("private_ips") or []
        row.tags = node.get("tags") or {}
        row.updated_at = now
    for machine_id, row in rows.items():
        if machine_id not in listing.ids and row.state != "missing":
            row.state = "missing"
            row.updated_at = now
    session.flush()
    return list(rows.values())


@dataclass
class Targets:
    """The machines a run acts on, and the ones that could not be found (reported failed in the run)."""

    machines: list[Machine] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (cloud_id, machine_id, why)


def clouds_to_list(schedule: Schedule, clouds: dict[str, Cloud], need_addresses: bool) -> list[str]:
    """The libcloud clouds whose machines a run must read from the provider before it resolves its targets.

    Tags and addresses live at the provider: a tags selector reads every cloud of the org, a script
    run the clouds it names; a power run by machine id needs no listing (the module lists anyway)."""
    tag_selectors = any(s["type"] == "tags" for s in schedule.selectors or [])
    if not tag_selectors and not need_addresses:
        return []
    wanted = set(clouds) if tag_selectors else {c for c, _ in schedule.machines_per_cloud or []}
    return sorted(c for c in wanted if c in clouds and clouds[c].provider != "other")


def resolve(session: Session, schedule: Schedule, now: datetime, need_addresses: bool,
            listing_errors: dict[str, str] | None = None) -> Targets:
    """Turn machines_per_cloud and selectors into machine rows, each machine once. Database only.

    The clouds clouds_to_list() named were listed (store_nodes) before; listing_errors maps the ones
    that could not be to their error, reported as a failed "<cloud>:*" target."""
    out = Targets()
    seen: set[str] = set()
    missing_seen: set[tuple[str, str]] = set()
    clouds = {c.id: c for c in session.scalars(select(Cloud).where(Cloud.org_id == schedule.org_id))}

    def add(machine: Machine):
        if machine.id not in seen:
            seen.add(machine.id)
            out.machines.append(machine)

    def lost(cloud_id: str, machine_id: str, why: str):
        # Named twice (or through two routes), a machine that is not there is reported once.
        if (cloud_id, machine_id) not in missing_seen:
            missing_seen.add((cloud_id, machine_id))
            out.missing.append((cloud_id, machine_id, why))

    for cloud_id, error in sorted((listing_errors or {}).items()):
        lost(cloud_id, "*", error)

    pairs = schedule.machines_per_cloud or []
    # One query for every pair's machine rows (a run may name hundreds), not one per pair.
    known = {(m.cloud_id, m.machine_id): m for m in session.scalars(
        select(Machine).where(Machine.cloud_id.in_({c for c, _ in pairs} & set(clouds))))} if pairs else {}
    for cloud_id, machine_id in pairs:
        cloud = clouds.get(cloud_id)
        if cloud is None:
            lost(cloud_id, machine_id, f"cloud '{cloud_id}' no longer exists")
            continue
        row = known.get((cloud_id, machine_id))
        if row is None and cloud.provider != "other" and not need_addresses:
            # Not seen yet: keep a row so its id is stable; the power module reports it if the provider lacks it.
            row = Machine(id=new_id(), org_id=schedule.org_id, cloud_id=cloud_id, machine_id=machine_id,
                          state="unknown", public_ips=[], private_ips=[], tags={}, created_at=now, updated_at=now)
            session.add(row)
            known[(cloud_id, machine_id)] = row
        if row is None:
            lost(cloud_id, machine_id, f"machine '{machine_id}' not found in cloud '{cloud_id}'")
        else:
            add(row)
    for sel in schedule.selectors or []:
        if sel["type"] == "machines":
            rows = {m.id: m for m in session.scalars(select(Machine).where(
                Machine.org_id == schedule.org_id, Machine.id.in_(sel["ids"])))}
            for mid in sel["ids"]:
                if mid in rows:
                    add(rows[mid])
                else:
                    lost("", mid, f"machine '{mid}' no longer exists")
        else:
            include = sel["include"]
            for m in session.scalars(select(Machine).where(Machine.org_id == schedule.org_id).order_by(Machine.id)):
                if m.state != "missing" and all((m.tags or {}).get(k) == v for k, v in include.items()):
                    add(m)
    session.flush()
    return out


def ssh_address(machine: Machine) -> str | None:
    """Where to reach a machine over SSH: its override, else its first public, else private address.

    Only a host name or an IP address counts: addresses come from providers, which may be any endpoint a
    tenant points a cloud at, and one starting with '-' would reach ssh as an option.
    """
    candidates = [machine.host, *(machine.public_ips or []), *(machine.private_ips or [])]
    return next((a for a in candidates if a and is_host(a)), None)


def private_key(session: Session, box: Box, machine: Machine) -> str | None:
    if machine.key_id is None:
        return None
    key = session.get(Key, machine.key_id)
    return box.open(key.private_enc, key.org_id) if key else None
