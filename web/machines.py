"""Machines: read from libcloud providers (kept in the database so our ids stay stable) and resolved for runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .crypto import Box, new_id
from .errors import APIError
from .models import Cloud, Key, Machine, Schedule
from .validation import is_host


class ProviderError(APIError):
    """The cloud provider could not be reached or refused: the answer is a 502 naming the cloud."""

    status = 502


def driver_for(box: Box, cloud: Cloud):
    from plugins.module_utils._libcloud import get_driver

    return get_driver(cloud.provider, box.open(cloud.credentials_enc) if cloud.credentials_enc else {}, cloud.options or {})


def refresh_machines(session: Session, box: Box, cloud: Cloud, now: datetime) -> list[Machine]:
    """List a libcloud cloud's machines from the provider and upsert them; returns the cloud's rows."""
    return store_nodes(session, cloud, fetch_nodes(box, cloud), now)


def fetch_nodes(box: Box, cloud: Cloud) -> list[dict]:
    """A libcloud cloud's machines as the provider lists them (network I/O: call with no transaction open)."""
    from plugins.module_utils._libcloud import list_nodes

    try:
        return list_nodes(driver_for(box, cloud))
    except Exception as exc:  # libcloud raises many types; the message is what the user needs
        raise ProviderError(f"cloud '{cloud.id}' ({cloud.provider}): cannot list machines: {exc}") from None


def store_nodes(session: Session, cloud: Cloud, nodes: list[dict], now: datetime) -> list[Machine]:
    """Upsert fetched nodes as the cloud's machine rows (ours keep their ids; vanished ones become `missing`)."""
    rows = {m.machine_id: m for m in session.scalars(select(Machine).where(Machine.cloud_id == cloud.id))}
    for node in nodes:
        row = rows.get(node["machine_id"])
        if row is None:
            row = Machine(id=new_id(), org_id=cloud.org_id, cloud_id=cloud.id, machine_id=node["machine_id"],
                          created_at=now)
            session.add(row)
            rows[row.machine_id] = row
        row.name = node.get("name")
        row.state = node.get("state")
        row.public_ips = node.get("public_ips") or []
        row.private_ips = node.get("private_ips") or []
        row.tags = node.get("tags") or {}
        row.updated_at = now
    seen = {n["machine_id"] for n in nodes}
    for machine_id, row in rows.items():
        if machine_id not in seen and row.state != "missing":
            row.state = "missing"
            row.updated_at = now
    session.flush()
    return list(rows.values())


@dataclass
class Targets:
    """The machines a run acts on, and the ones that could not be found (reported failed in the run)."""

    machines: list[Machine] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (cloud_id, machine_id, why)


def resolve(session: Session, box: Box, schedule: Schedule, now: datetime, need_addresses: bool) -> Targets:
    """Turn machines_per_cloud and selectors into machine rows; providers are asked only when needed."""
    out = Targets()
    seen: set[str] = set()
    clouds = {c.id: c for c in session.scalars(select(Cloud).where(Cloud.org_id == schedule.org_id))}
    refreshed: set[str] = set()

    def refresh(cloud: Cloud):
        if cloud.provider != "other" and cloud.id not in refreshed:
            refreshed.add(cloud.id)
            refresh_machines(session, box, cloud, now)

    def add(machine: Machine):
        if machine.id not in seen:
            seen.add(machine.id)
            out.machines.append(machine)

    tag_selectors = [s for s in schedule.selectors or [] if s["type"] == "tags"]
    if tag_selectors or need_addresses:
        # Tags and addresses live at the provider: read every cloud the schedule may touch once.
        wanted = set(clouds) if tag_selectors else {c for c, _ in schedule.machines_per_cloud or []}
        for cloud_id in wanted:
            if cloud_id in clouds:
                try:
                    refresh(clouds[cloud_id])
                except ProviderError as exc:
                    out.missing.append((cloud_id, "*", exc.message))

    pairs = schedule.machines_per_cloud or []
    # One query for every pair's machine rows (a run may name hundreds), not one per pair.
    known = {(m.cloud_id, m.machine_id): m for m in session.scalars(
        select(Machine).where(Machine.cloud_id.in_({c for c, _ in pairs} & set(clouds))))} if pairs else {}
    for cloud_id, machine_id in pairs:
        cloud = clouds.get(cloud_id)
        if cloud is None:
            out.missing.append((cloud_id, machine_id, f"cloud '{cloud_id}' no longer exists"))
            continue
        row = known.get((cloud_id, machine_id))
        if row is None and cloud.provider != "other" and not need_addresses:
            # Not seen yet: keep a row so its id is stable; the power module reports it if the provider lacks it.
            row = Machine(id=new_id(), org_id=schedule.org_id, cloud_id=cloud_id, machine_id=machine_id,
                          state="unknown", public_ips=[], private_ips=[], tags={}, created_at=now, updated_at=now)
            session.add(row)
            known[(cloud_id, machine_id)] = row
        if row is None:
            out.missing.append((cloud_id, machine_id, f"machine '{machine_id}' not found in cloud '{cloud_id}'"))
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
                    out.missing.append(("", mid, f"machine '{mid}' no longer exists"))
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
    return box.open(key.private_enc) if key else None
