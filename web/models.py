"""Database tables. Every time is stored as UTC; every resource belongs to an org."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC, so SQLite and PostgreSQL behave the same."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc)


ID = String(32)


class Base(DeclarativeBase):
    pass


class Org(Base):
    __tablename__ = "orgs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """A web console sign-in: the cookie carries a random id, this row its hash and the token it acts for.

    Signing out deletes the row, and so does revoking the token (cascade), so a copied cookie stops
    working at once, not when it expires.
    """

    __tablename__ = "console_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hash_token(the cookie's session id)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Cloud(Base):
    __tablename__ = "clouds"
    __table_args__ = (UniqueConstraint("org_id", "title"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    credentials_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Counts client edits (the API's ETag, checked against If-Match); the dispatcher's bookkeeping does not.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Key(Base):
    __tablename__ = "keys"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    public: Mapped[str] = mapped_column(Text)
    private_enc: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Counts client edits (the API's ETag, checked against If-Match); the dispatcher's bookkeeping does not.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Machine(Base):
    __tablename__ = "machines"
    __table_args__ = (UniqueConstraint("cloud_id", "machine_id"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    cloud_id: Mapped[str] = mapped_column(ForeignKey("clouds.id", ondelete="CASCADE"))
    machine_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    ssh_user: Mapped[str | None] = mapped_column(String(255))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("keys.id", ondelete="SET NULL"))
    state: Mapped[str | None] = mapped_column(String(32))
    public_ips: Mapped[list] = mapped_column(JSON, default=list)
    private_ips: Mapped[list] = mapped_column(JSON, default=list)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Script(Base):
    __tablename__ = "scripts"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    script: Mapped[str] = mapped_column(Text)
    exec_type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Counts client edits (the API's ETag, checked against If-Match); the dispatcher's bookkeeping does not.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        Index("ix_schedules_org_created", "org_id", "created_at"),
        # The dispatcher's poll: only active schedules carry a next_run_at.
        Index(
            "ix_schedules_next_run_at",
            "next_run_at",
            sqlite_where=text("next_run_at IS NOT NULL"),
            postgresql_where=text("next_run_at IS NOT NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(String(16))
    script_id: Mapped[str | None] = mapped_column(ForeignKey("scripts.id", ondelete="RESTRICT"))
    params: Mapped[str | None] = mapped_column(Text)
    machines_per_cloud: Mapped[list] = mapped_column(JSON, default=list)
    selectors: Mapped[list] = mapped_column(JSON, default=list)
    schedule_type: Mapped[str] = mapped_column(String(16))
    schedule_entry: Mapped[object] = mapped_column(JSON)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    run_immediately: Mapped[bool] = mapped_column(Boolean, default=False)
    start_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_run_count: Mapped[int | None] = mapped_column(Integer)
    misfire_grace: Mapped[int] = mapped_column(Integer, default=300)
    concurrency: Mapped[str] = mapped_column(String(16), default="forbid")
    timeout: Mapped[int] = mapped_column(Integer, default=3600)
    total_run_count: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why the last attempt to compute its fire failed (the dispatcher then retries later); null once one
    # succeeds or the schedule is edited.
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Counts client edits (the API's ETag, checked against If-Match); the dispatcher's bookkeeping does not.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Calendar ids in the order given; NULL (not []) when there are none, so the dispatcher's claim
    # decodes no JSON for the schedules that use none. schedule_calendars holds the same ids with
    # foreign keys, so a calendar in use cannot be deleted.
    exclude_calendars: Mapped[list | None] = mapped_column(JSON)
    jitter: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A pause: no fire from paused_at until paused_until (NULL: until resumed).
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_note: Mapped[str | None] = mapped_column(Text)
    # Fires still to skip (recorded as skipped with pause_note as the reason).
    skip_next: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Who hears about its runs: {"on": [statuses], "channels": [channel ids], "after_retries": bool}; NULL: the
    # org's default channels on the default statuses (web.notify).
    notify: Mapped[dict | None] = mapped_column(JSON)
    # Retries of its machines that failed for a transient reason: {"max": N, "delay": seconds, "backoff": factor};
    # NULL: none (web.retries).
    retries: Mapped[dict | None] = mapped_column(JSON)


class Calendar(Base):
    __tablename__ = "calendars"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    entries: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Counts client edits (the API's ETag, checked against If-Match); the dispatcher's bookkeeping does not.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class ScheduleCalendar(Base):
    """Which calendars a schedule excludes; the foreign keys make deleting a calendar in use fail."""

    __tablename__ = "schedule_calendars"
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True)
    # NO ACTION (checked at the end of the statement), not RESTRICT: a calendar in use cannot be deleted,
    # yet deleting an org removes its schedules' links and its calendars in one cascade.
    calendar_id: Mapped[str] = mapped_column(ForeignKey("calendars.id"), primary_key=True, index=True)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_schedule_created", "schedule_id", "created_at"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_created", "created_at"),  # retention's age cut-off
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    # No foreign key: a run's record outlives the schedule that made it.
    schedule_id: Mapped[str] = mapped_column(ID)
    trigger: Mapped[str] = mapped_column(String(16))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # How many times the sweep re-enqueued it because its queue message seemed lost (at most once).
    requeues: Mapped[int] = mapped_column(Integer, server_default="0")  # no Python default: the claim's INSERT leaves it out
    # A run waiting to retry (web.worker._retry_run): when its next attempt is due, and the id of the execution
    # that waits for it; both NULL otherwise. Kept in the database so that when the worker dies during the wait,
    # the sweep hands the run to another worker (status back to queued) rather than interrupting it.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retry_owner: Mapped[str | None] = mapped_column(ID)


class RunMachine(Base):
    __tablename__ = "run_machines"
    __table_args__ = (UniqueConstraint("run_id", "machine_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    # Our machine id when the machine is known, else "<cloud_id>:<provider id>".
    machine_key: Mapped[str] = mapped_column(String(300))
    cloud_id: Mapped[str | None] = mapped_column(ID)
    machine_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    rc: Mapped[int | None] = mapped_column(Integer)
    stdout: Mapped[str | None] = mapped_column(Text)
    stderr: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[float | None] = mapped_column(Float)
    # The earlier attempts of a retried machine, oldest first: [{"attempt": n, "status", "error", "duration"}];
    # NULL when the machine was tried once. The row's own fields are its last attempt's.
    attempts: Mapped[list | None] = mapped_column(JSON)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_org_time", "org_id", "time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    type: Mapped[str] = mapped_column(String(64))
    schedule_id: Mapped[str | None] = mapped_column(ID, index=True)
    run_id: Mapped[str | None] = mapped_column(ID, index=True)
    cloud_id: Mapped[str | None] = mapped_column(ID)
    machine_id: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict] = mapped_column(JSON, default=dict)


class AuditEntry(Base):
    """One change to an org's resource: who (token id and label, kept after the token is revoked), when,
    what (action, resource kind, id, name) and the field-level before/after, secrets masked (web.audit)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_org_time", "org_id", "time"),
        Index("ix_audit_log_org_resource_id", "org_id", "resource_id"),
        Index("ix_audit_log_time", "time"),  # retention deletes by age across orgs
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    # No foreign key: the record of a change outlives the token that made it.
    token_id: Mapped[str | None] = mapped_column(ID)
    token_label: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    resource: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    changes: Mapped[dict] = mapped_column(JSON, default=dict)
class ProcessHeartbeat(Base):
    """A dispatcher or worker process saying it is alive: written at start, beaten every few seconds, deleted
    at a clean exit (web.heartbeats). A row whose beat is older than heartbeats.STALE is a dead process."""

    __tablename__ = "process_heartbeats"
    __table_args__ = (Index("ix_process_heartbeats_kind_beat", "kind", "beat_at"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))   # "dispatcher" or "worker"
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A dispatcher beats from its claim loop, so this is its last tick; a worker beats from a thread.
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    slots: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # runs a worker executes at once
class Channel(Base):
    """Where an org's notifications go: an Apprise URL, or a webhook signed with a secret (web.channels)."""

    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    # Box-sealed {"url": ..., "secret": ...}: both may hold credentials (a Slack token is in the URL's path).
    target_enc: Mapped[str] = mapped_column(Text)
    # What answers show of the URL (scheme and, for a webhook, the host), computed when it is written.
    url_shown: Mapped[str] = mapped_column(String(300))
    # Schedules without a notify setting notify the org's default channels.
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    """One notification to one channel (an outbox row): written with the run's final status, sent afterwards.

    next_attempt_at is when a sender may try it next (NULL once delivered or given up); a sender claims it by
    moving next_attempt_at forward with a conditional UPDATE, so a crashed sender's claim lapses on its own.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_due", "next_attempt_at",
              sqlite_where=text("next_attempt_at IS NOT NULL"), postgresql_where=text("next_attempt_at IS NOT NULL")),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    # No foreign keys: the record stays readable after its channel is deleted; retention prunes it with its run.
    run_id: Mapped[str | None] = mapped_column(ID, index=True)
    channel_id: Mapped[str] = mapped_column(ID)
    channel_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # "run" | "test"
    event: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # "pending" | "delivered" | "failed"
    attempts: Mapped[list] = mapped_column(JSON, default=list)  # [{"at", "ok", "error", "duration"}, ...]
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
