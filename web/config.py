"""Settings from the environment: defaults first, then CLOUDCRON_* variables; bad values stop start-up."""
from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

# Ranges no provider endpoint may resolve to unless the operator says otherwise: link-local (which holds
# the cloud metadata service at 169.254.169.254) and EC2's IPv6 metadata address.
DEFAULT_DENIED_NETWORKS = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")


class StartupError(Exception):
    """The service cannot start (a port in use, a database it cannot write); the message says why, in one line."""


class ConfigError(StartupError):
    """A setting that cannot be used; the message names the variable."""


@dataclass
class Config:
    data_dir: Path
    database_url: str
    secret_key_file: Path
    queue_url: str
    min_interval: timedelta = timedelta(seconds=1)
    max_body_bytes: int = 1024 * 1024
    output_cap: int = 256 * 1024
    # CLOUDCRON_SANDBOX: auto (bubblewrap when it works here) | required (refuse to start without) | off
    sandbox: str = "auto"
    # CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE: run Ansible scripts even where runs are not sandboxed
    unsafe_unsandboxed_ansible: bool = False
    # Provider calls (libcloud): the most seconds one call may take, retries included, whatever a cloud's
    # options.timeout says; how many machines one listing keeps; which addresses are never contacted.
    provider_timeout: float = 30.0
    max_machines_per_cloud: int = 10_000
    denied_networks: tuple = DEFAULT_DENIED_NETWORKS
    # Listings for API requests: threads for all orgs together, and listings one org may have in flight.
    listing_slots: int = 4
    listings_per_org: int = 2
    # SIGTERM: how long runs in progress may go on before they are stopped and recorded interrupted.
    drain_seconds: float = 25.0
    # A manual or immediate run that waited longer than this in the queue is recorded missed (seconds);
    # scheduled runs use their schedule's misfire_grace.
    manual_grace: float = 600.0
    # Batches: runs ready together share playbook runs (CLOUDCRON_BATCHING=off: one run per playbook),
    # bounded by runs and by machines named.
    batching: bool = True
    batch_max_runs: int = 500
    batch_max_machines: int = 5000
    # Machines the power module acts on at once, per cloud of a playbook (cloud APIs throttle).
    provider_concurrency: int = 8
    ui_session_lifetime: timedelta = timedelta(hours=12)
    extra: dict = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def work_dir(self) -> Path:
        """Where the worker makes its private run directories."""
        return self.data_dir / "runs"


def _positive_float(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be greater than 0, got '{raw}'")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
SANDBOX_MODES = ("auto", "required", "off")


def _flag(env, name) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}: '{env.get(name)}' is not a yes/no value; use 1 or 0")


def _count(env, name, default, minimum=1):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got '{raw}'")
    return value


def _seconds(env, name, default):
    """A number of seconds, 0 allowed."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: must be 0 or more seconds, got '{raw}'")
    return value


def _networks(env, name, default):
    """Address ranges, comma- or space-separated CIDR; 'none' for no range at all."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() == "none":
        return ()
    out = []
    for item in raw.replace(",", " ").split():
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: '{item}' is not an address range such as 169.254.0.0/16 or fe80::/10") from None
    return tuple(out)


def load_config(env=None, **overrides) -> Config:
    """Build the configuration from `env` (default os.environ) and keyword overrides."""
    env = dict(os.environ if env is None else env)
    env.update({k: str(v) for k, v in overrides.items() if v is not None})

    data_dir = Path(env.get("CLOUDCRON_DATA_DIR") or "instance").resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"CLOUDCRON_DATA_DIR: '{data_dir}' exists and is not a directory")
    try:
        # 0700: the data dir holds the key file, the database and the queue of the whole service.
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"CLOUDCRON_DATA_DIR: cannot create '{data_dir}': {exc.strerror}") from None

    database_url = env.get("CLOUDCRON_DATABASE_URL") or f"sqlite:///{data_dir / 'cloudcron.db'}"
    if not database_url.startswith(("sqlite://", "postgresql")):
        raise ConfigError(
            f"CLOUDCRON_DATABASE_URL: '{_redact(database_url)}' is not supported; "
            "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        )
    if database_url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]

    key_file = Path(env.get("CLOUDCRON_SECRET_KEY_FILE") or data_dir / "secret.key")
    queue_url = env.get("CLOUDCRON_QUEUE_URL") or f"sqlite:///{data_dir / 'queue.db'}"
    if not queue_url.startswith(("sqlite:///", "redis://", "rediss://")):
        raise ConfigError(
            f"CLOUDCRON_QUEUE_URL: '{_redact(queue_url)}' is not supported; use sqlite:///PATH or redis://HOST:PORT/DB"
        )
    min_interval = _positive_float(env, "CLOUDCRON_MIN_INTERVAL", 1.0)
    sandbox = (env.get("CLOUDCRON_SANDBOX") or "auto").strip().lower()
    if sandbox not in SANDBOX_MODES:
        raise ConfigError(f"CLOUDCRON_SANDBOX: '{env.get('CLOUDCRON_SANDBOX')}' is not one of {', '.join(SANDBOX_MODES)}")
    session_hours = _positive_float(env, "CLOUDCRON_UI_SESSION_HOURS", 12.0)
    if session_hours > 24 * 366:
        raise ConfigError(f"CLOUDCRON_UI_SESSION_HOURS: must be at most {24 * 366}, got '{env['CLOUDCRON_UI_SESSION_HOURS']}'")
    return Config(
        data_dir=data_dir,
        database_url=database_url,
        secret_key_file=key_file,
        queue_url=queue_url,
        min_interval=timedelta(seconds=min_interval),
        sandbox=sandbox,
        unsafe_unsandboxed_ansible=_flag(env, "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE"),
        provider_timeout=_positive_float(env, "CLOUDCRON_PROVIDER_TIMEOUT", 30.0),
        max_machines_per_cloud=_count(env, "CLOUDCRON_MAX_MACHINES_PER_CLOUD", 10_000),
        denied_networks=_networks(env, "CLOUDCRON_DENIED_NETWORKS", DEFAULT_DENIED_NETWORKS),
        listing_slots=_count(env, "CLOUDCRON_LISTING_SLOTS", 4),
        listings_per_org=_count(env, "CLOUDCRON_LISTINGS_PER_ORG", 2),
        drain_seconds=_seconds(env, "CLOUDCRON_DRAIN_SECONDS", 25.0),
        manual_grace=_seconds(env, "CLOUDCRON_MANUAL_GRACE", 600.0),
        batching=_flag(env, "CLOUDCRON_BATCHING") if env.get("CLOUDCRON_BATCHING") not in (None, "") else True,
        batch_max_runs=_count(env, "CLOUDCRON_BATCH_MAX_RUNS", 500),
        batch_max_machines=_count(env, "CLOUDCRON_BATCH_MAX_MACHINES", 5000),
        provider_concurrency=_count(env, "CLOUDCRON_PROVIDER_CONCURRENCY", 8),
        ui_session_lifetime=timedelta(hours=session_hours),
    )


def _redact(url: str) -> str:
    """Hide a password in a URL before it goes into a message."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url
