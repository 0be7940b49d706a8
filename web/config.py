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

# Ranges no notification receiver (webhook, Apprise service) may resolve to unless the operator says otherwise:
# where the instance's own services and its neighbours' live. A receiver is any tenant's URL, sent to from the
# workers' network, which reaches the API, Redis and PostgreSQL on loopback or a private network. Provider endpoints may legitimately be private (an OpenStack on 10.x), receivers of several
# tenants' events may not: hence two lists. Loopback and "this host" (RFC 1122), RFC 1918, shared address
# space (CGNAT, RFC 6598), link-local (the metadata service), IPv6 unique local (RFC 4193, which holds
# EC2's IPv6 metadata address, named too), multicast (RFC 5771, RFC 4291).
NOTIFY_PRIVATE_NETWORKS = (
    "127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128",
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "169.254.0.0/16", "fe80::/10", "fc00::/7", "fd00:ec2::254/128",
    "224.0.0.0/4", "ff00::/8",
)


def notify_default(provider_denied) -> tuple:
    """CLOUDCRON_NOTIFY_DENIED_NETWORKS when unset: NOTIFY_PRIVATE_NETWORKS plus the provider list (CIDR strings),
    so a range an operator denies to providers is denied to receivers too; duplicates dropped, order kept."""
    return tuple(dict.fromkeys((*NOTIFY_PRIVATE_NETWORKS, *provider_denied)))


DEFAULT_NOTIFY_DENIED_NETWORKS = notify_default(DEFAULT_DENIED_NETWORKS)


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
    # CLOUDCRON_SANDBOX_TMPFS_MB: the size of each in-memory directory of a sandboxed run (/tmp, home, /dev/shm)
    sandbox_tmpfs_mb: int = 128
    # Provider calls (libcloud): the most seconds one call may take, retries included, whatever a cloud's
    # options.timeout says; how many machines one listing keeps; which addresses are never contacted.
    provider_timeout: float = 30.0
    max_machines_per_cloud: int = 10_000
    # CLOUDCRON_PROVIDER_MAX_ANSWER_MB: the largest answer one provider request may bring, decoded
    provider_max_answer_mb: int = 128
    denied_networks: tuple = DEFAULT_DENIED_NETWORKS
    # CLOUDCRON_NOTIFY_DENIED_NETWORKS: the ranges no notification receiver is contacted at (web.channels checks
    # URLs when written, web.notify every connection of a delivery).
    notify_denied_networks: tuple = DEFAULT_NOTIFY_DENIED_NETWORKS
    # Listings for API requests: threads for all orgs together, and listings one org may have in flight.
    listing_slots: int = 4
    listings_per_org: int = 2
    # CLOUDCRON_RUN_LISTINGS_PER_ORG: provider listings a worker process does for one org's runs at once
    run_listings_per_org: int = 1
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
    # CLOUDCRON_VERIFY_SECONDS: a power action succeeds only once the provider reports the machine in its
    # end state within this many seconds (0: the accepted API call is enough).
    verify_seconds: float = 120.0
    # CLOUDCRON_RETRY_SLOTS: retry attempts' playbooks a worker process runs at once, all orgs together (retries
    # run outside the queue's worker slots, web.worker); None: as many as the process's worker slots.
    retry_slots: int | None = None
    ui_session_lifetime: timedelta = timedelta(hours=12)
    # CLOUDCRON_AUDIT_RETENTION_DAYS: audit entries older than this are pruned (web.audit.prune).
    audit_retention_days: int = 365
    # GET /metrics: "token" (any org's API token), "org" (tokens of the org named metrics_org only), "open",
    # "off" (404), or "networks" (metrics_networks only).
    metrics: str = "token"
    metrics_networks: tuple = ()
    metrics_org: str | None = None
    # GET /readyz: a dispatcher must have ticked within this many seconds.
    ready_tick_age: float = 30.0
    # Notifications (web.notify): the address links in events start with; seconds one attempt may take;
    # the first wait before a retry (doubling, at most NOTIFY_BACKOFF_CAP); how long a delivery is retried.
    public_url: str = ""
    notify_timeout: float = 10.0
    notify_backoff: float = 5.0
    notify_retry_for: float = 3600.0
    # Retention (web.retention): runs older than this many days, or beyond this many per schedule, are pruned
    # in batches of retention_batch runs, one short transaction each, every retention_every seconds.
    retention_days: float = 30.0
    retention_runs_per_schedule: int = 1000
    retention_batch: int = 200
    retention_every: float = 600.0
    # CLOUDCRON_TRUSTED_PROXY: the reverse proxy's address (or "*"), whose X-Forwarded-For and
    # X-Forwarded-Proto `serve` believes; None: those headers are ignored (anyone can send them).
    trusted_proxy: str | None = None
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
LOG_FORMATS = ("plain", "json")


def log_format(env=None) -> str:
    """CLOUDCRON_LOG_FORMAT: `plain` (default) or `json` (one JSON object per line); ConfigError otherwise."""
    env = os.environ if env is None else env
    raw = (env.get("CLOUDCRON_LOG_FORMAT") or "plain").strip().lower()
    if raw not in LOG_FORMATS:
        raise ConfigError(f"CLOUDCRON_LOG_FORMAT: '{env.get('CLOUDCRON_LOG_FORMAT')}' is not one of {', '.join(LOG_FORMATS)}")
    return raw


def _flag(env, name) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}: '{env.get(name)}' is not a yes/no value; use 1 or 0")


def _count(env, name, default, minimum=1, maximum=None):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got '{raw}'")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}: must be at most {maximum}, got '{raw}'")
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


METRICS_MODES = ("token", "open", "off")


def _metrics(env, name="CLOUDCRON_METRICS") -> tuple[str, tuple, str | None]:
    """(mode, ranges, org): token | open | off; org:NAME (only that org's tokens); or address ranges (CIDR,
    comma- or space-separated) allowed without a token."""
    raw = (env.get(name) or "").strip() or "token"  # blank is unset, as for every variable
    if raw.lower() in METRICS_MODES:
        return raw.lower(), (), None
    if raw.lower().startswith("org:"):
        org = raw[4:].strip()
        if not org:
            raise ConfigError(f"{name}: 'org:' names no org; use org:NAME (the org whose tokens may scrape)")
        return "org", (), org
    out = []
    for item in raw.replace(",", " ").split():
        try:
            out.append(_unmapped(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: '{item}' is not token, org:NAME, open, off or an address range such as "
                              "10.0.0.0/8 or 127.0.0.1/32") from None
    if not out:  # "," or "  ": a list of nothing would refuse every scrape with 403, silently
        raise ConfigError(f"{name}: '{raw}' names no address range; use token, open, off or ranges such as "
                          "10.0.0.0/8")
    return "networks", tuple(out), None


def _unmapped(net):
    """An IPv4-mapped IPv6 range (::ffff:10.0.0.0/104) as the IPv4 range it stands for (10.0.0.0/8): /metrics
    compares IPv4 clients, also those a dual-stack listener sees as ::ffff:a.b.c.d, in their IPv4 form."""
    if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
        return ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    return net


# Dispatchers record a tick every 5 s (heartbeats.BEAT_EVERY): /readyz needs room for two of them, or it would
# answer 503 between beats.
MIN_READY_TICK_AGE = 10.0


def _ready_tick_age(env, name="CLOUDCRON_READY_TICK_AGE") -> float:
    """Seconds within which a dispatcher must have ticked for /readyz; at least MIN_READY_TICK_AGE."""
    value = _positive_float(env, name, 30.0)
    if value < MIN_READY_TICK_AGE:
        raise ConfigError(f"{name}: must be at least {MIN_READY_TICK_AGE:g} (dispatchers record a tick every 5 s), "
                          f"got '{env[name]}'")
    return value


def _trusted_proxy(env, name="CLOUDCRON_TRUSTED_PROXY") -> str | None:
    """The one address (IPv4 or IPv6) of the reverse proxy in front of `serve`, or "*" (any peer); None when unset.

    waitress then takes the client's address from the last X-Forwarded-For hop and the scheme from
    X-Forwarded-Proto when, and only when, the request comes from that address (waitress's trusted_proxy).
    """
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if raw == "*":
        return raw
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(f"{name}: '{raw}' is not an IP address (the proxy's, such as 127.0.0.1) or *") from None


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
    metrics, metrics_networks, metrics_org = _metrics(env)
    denied_networks = _networks(env, "CLOUDCRON_DENIED_NETWORKS", DEFAULT_DENIED_NETWORKS)
    multiproc = env.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc and not Path(multiproc).is_dir():
        # prometheus_client would fail at every count and every scrape instead.
        raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR: '{multiproc}' is not a directory; create it (empty) before "
                          "cloudcron's processes start, or unset it")
    return Config(
        data_dir=data_dir,
        database_url=database_url,
        secret_key_file=key_file,
        queue_url=queue_url,
        min_interval=timedelta(seconds=min_interval),
        sandbox=sandbox,
        unsafe_unsandboxed_ansible=_flag(env, "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE"),
        sandbox_tmpfs_mb=_count(env, "CLOUDCRON_SANDBOX_TMPFS_MB", 128),
        provider_timeout=_positive_float(env, "CLOUDCRON_PROVIDER_TIMEOUT", 30.0),
        max_machines_per_cloud=_count(env, "CLOUDCRON_MAX_MACHINES_PER_CLOUD", 10_000),
        provider_max_answer_mb=_count(env, "CLOUDCRON_PROVIDER_MAX_ANSWER_MB", 128),
        denied_networks=denied_networks,
        notify_denied_networks=_networks(env, "CLOUDCRON_NOTIFY_DENIED_NETWORKS",
                                         notify_default(denied_networks)),
        listing_slots=_count(env, "CLOUDCRON_LISTING_SLOTS", 4),
        listings_per_org=_count(env, "CLOUDCRON_LISTINGS_PER_ORG", 2),
        run_listings_per_org=_count(env, "CLOUDCRON_RUN_LISTINGS_PER_ORG", 1),
        drain_seconds=_seconds(env, "CLOUDCRON_DRAIN_SECONDS", 25.0),
        manual_grace=_seconds(env, "CLOUDCRON_MANUAL_GRACE", 600.0),
        batching=_flag(env, "CLOUDCRON_BATCHING") if env.get("CLOUDCRON_BATCHING") not in (None, "") else True,
        batch_max_runs=_count(env, "CLOUDCRON_BATCH_MAX_RUNS", 500),
        batch_max_machines=_count(env, "CLOUDCRON_BATCH_MAX_MACHINES", 5000),
        provider_concurrency=_count(env, "CLOUDCRON_PROVIDER_CONCURRENCY", 8),
        verify_seconds=_seconds(env, "CLOUDCRON_VERIFY_SECONDS", 120.0),
        retry_slots=_count(env, "CLOUDCRON_RETRY_SLOTS", None),
        ui_session_lifetime=timedelta(hours=session_hours),
        # At most a century: a longer span reaches before year 1, where no date can be computed.
        audit_retention_days=_count(env, "CLOUDCRON_AUDIT_RETENTION_DAYS", 365, maximum=36_500),
        public_url=_public_url(env),
        notify_timeout=_positive_float(env, "CLOUDCRON_NOTIFY_TIMEOUT", 10.0),
        notify_backoff=_positive_float(env, "CLOUDCRON_NOTIFY_BACKOFF", 5.0),
        notify_retry_for=_seconds(env, "CLOUDCRON_NOTIFY_RETRY_SECONDS", 3600.0),
        retention_days=_positive_float(env, "CLOUDCRON_RETENTION_DAYS", 30.0),
        retention_runs_per_schedule=_count(env, "CLOUDCRON_RETENTION_RUNS_PER_SCHEDULE", 1000),
        retention_batch=_count(env, "CLOUDCRON_RETENTION_BATCH", 200),
        retention_every=_positive_float(env, "CLOUDCRON_RETENTION_EVERY", 600.0),
        metrics=metrics, metrics_networks=metrics_networks, metrics_org=metrics_org,
        ready_tick_age=_ready_tick_age(env),
        trusted_proxy=_trusted_proxy(env),
    )


def _public_url(env) -> str:
    """CLOUDCRON_PUBLIC_URL: http(s)://host[:port][/prefix], the address links in notifications start with."""
    from urllib.parse import urlsplit

    raw = (env.get("CLOUDCRON_PUBLIC_URL") or "").strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"CLOUDCRON_PUBLIC_URL: '{raw}' is not an http(s) address such as https://cron.example.com")
    return raw.rstrip("/")


def _redact(url: str) -> str:
    """Hide a password in a URL before it goes into a message."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url
