"""Configuration from CLOUDCRON_* variables: defaults, and bad values that stop start-up naming the variable."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from sqlalchemy import text

from web import make_state
from web.config import ConfigError, load_config
from web.crypto import load_or_create_key

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_put_everything_in_instance_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config({})
    data = (tmp_path / "instance").resolve()
    assert config.data_dir == data and data.is_dir()
    assert config.database_url == f"sqlite:///{data / 'cloudcron.db'}"
    assert config.secret_key_file == data / "secret.key"
    assert config.queue_url == f"sqlite:///{data / 'queue.db'}"
    assert config.min_interval == timedelta(seconds=1)
    assert config.max_body_bytes == 1024 * 1024
    assert config.sandbox == "auto" and config.unsafe_unsandboxed_ansible is False


def test_sandbox_settings_are_read_in_any_case():
    config = load_config({"CLOUDCRON_SANDBOX": "Required", "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE": "TRUE"})
    assert config.sandbox == "required" and config.unsafe_unsandboxed_ansible is True
    config = load_config({"CLOUDCRON_SANDBOX": "off", "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE": "0"})
    assert config.sandbox == "off" and config.unsafe_unsandboxed_ansible is False


def test_the_data_dir_is_created_private(tmp_path):
    old = os.umask(0o000)
    try:
        config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "new" / "data")})
    finally:
        os.umask(old)
    assert stat.S_IMODE(config.data_dir.stat().st_mode) == 0o700


def test_each_variable_overrides_its_default(tmp_path):
    config = load_config({
        "CLOUDCRON_DATA_DIR": str(tmp_path / "d"),
        "CLOUDCRON_DATABASE_URL": "postgresql+psycopg://cc@db.example/cc",
        "CLOUDCRON_SECRET_KEY_FILE": str(tmp_path / "k" / "key"),
        "CLOUDCRON_QUEUE_URL": "redis://127.0.0.1:6379/3",
        "CLOUDCRON_MIN_INTERVAL": "2.5",
    })
    assert config.data_dir == tmp_path / "d"
    assert config.database_url == "postgresql+psycopg://cc@db.example/cc"
    assert config.secret_key_file == tmp_path / "k" / "key"
    assert config.queue_url == "redis://127.0.0.1:6379/3"
    assert config.min_interval == timedelta(seconds=2.5)


def test_provider_listing_and_drain_settings_have_safe_defaults(tmp_path):
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path)})
    assert config.provider_timeout == 30.0
    assert config.max_machines_per_cloud == 10_000
    # Link-local holds the metadata service (169.254.169.254); fd00:ec2::254 is EC2's IPv6 one.
    assert config.denied_networks == ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
    assert config.listing_slots < 8 and config.listings_per_org < config.listing_slots  # waitress has 8 threads
    assert config.drain_seconds == 25.0


def test_provider_listing_and_drain_settings_are_read_from_the_environment(tmp_path):
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_PROVIDER_TIMEOUT": "5.5",
                          "CLOUDCRON_MAX_MACHINES_PER_CLOUD": "250", "CLOUDCRON_LISTING_SLOTS": "3",
                          "CLOUDCRON_LISTINGS_PER_ORG": "1", "CLOUDCRON_DRAIN_SECONDS": "0",
                          "CLOUDCRON_DENIED_NETWORKS": "169.254.0.0/16 10.0.0.1,fd00::/8"})
    assert (config.provider_timeout, config.max_machines_per_cloud) == (5.5, 250)
    assert (config.listing_slots, config.listings_per_org, config.drain_seconds) == (3, 1, 0.0)
    assert config.denied_networks == ("169.254.0.0/16", "10.0.0.1/32", "fd00::/8")
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_DENIED_NETWORKS": "none"}).denied_networks == ()


def test_notification_receivers_are_refused_every_non_public_range_by_default(tmp_path):
    import ipaddress

    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path)})
    denied = [ipaddress.ip_network(n) for n in config.notify_denied_networks]
    # Loopback, this host, RFC 1918, CGNAT, link-local, ULA, EC2's IPv6 metadata address, multicast.
    for address in ("127.0.0.1", "127.255.255.254", "::1", "0.0.0.0", "0.1.2.3", "::", "10.0.0.1", "172.16.0.1",
                    "172.31.255.255", "192.168.0.1", "100.64.0.1", "100.127.255.254", "169.254.169.254", "fe80::1",
                    "fc00::1", "fdff::1", "fd00:ec2::254", "224.0.0.251", "239.255.255.250", "ff02::1"):
        ip = ipaddress.ip_address(address)
        assert any(ip in net for net in denied if net.version == ip.version), address
    for address in ("8.8.8.8", "172.32.0.1", "100.128.0.1", "192.169.0.1", "2001:4860:4860::8888"):
        ip = ipaddress.ip_address(address)
        assert not any(ip in net for net in denied if net.version == ip.version), address
    # Providers keep their own, shorter list: private clouds on 10.x or this host are legitimate.
    assert config.denied_networks == ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")


def test_the_receivers_default_adds_the_provider_list_and_an_explicit_list_replaces_it(tmp_path):
    base = {"CLOUDCRON_DATA_DIR": str(tmp_path)}
    default = load_config(base).notify_denied_networks
    widened = load_config({**base, "CLOUDCRON_DENIED_NETWORKS": "169.254.0.0/16 203.0.113.0/24"})
    assert widened.notify_denied_networks == (*default, "203.0.113.0/24")
    # Opening providers to everything does not open receivers.
    assert load_config({**base, "CLOUDCRON_DENIED_NETWORKS": "none"}).notify_denied_networks == default
    explicit = load_config({**base, "CLOUDCRON_NOTIFY_DENIED_NETWORKS": "10.0.0.0/8, ::ffff:0:0/96 192.168.1.1",
                            "CLOUDCRON_DENIED_NETWORKS": "203.0.113.0/24"})
    assert explicit.notify_denied_networks == ("10.0.0.0/8", "::ffff:0:0/96", "192.168.1.1/32")
    assert load_config({**base, "CLOUDCRON_NOTIFY_DENIED_NETWORKS": "none"}).notify_denied_networks == ()
    assert load_config({**base, "CLOUDCRON_NOTIFY_DENIED_NETWORKS": " "}).notify_denied_networks == default


def test_batch_and_grace_settings_have_defaults_and_are_read_from_the_environment(tmp_path):
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path)})
    assert (config.batching, config.batch_max_runs, config.batch_max_machines) == (True, 500, 5000)
    assert (config.manual_grace, config.provider_concurrency) == (600.0, 8)
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_BATCHING": "off",
                          "CLOUDCRON_BATCH_MAX_RUNS": "7", "CLOUDCRON_BATCH_MAX_MACHINES": "70",
                          "CLOUDCRON_MANUAL_GRACE": "0", "CLOUDCRON_PROVIDER_CONCURRENCY": "2"})
    assert (config.batching, config.batch_max_runs, config.batch_max_machines) == (False, 7, 70)
    assert (config.manual_grace, config.provider_concurrency) == (0.0, 2)


@pytest.mark.parametrize("name, value", [("CLOUDCRON_BATCHING", "sometimes"), ("CLOUDCRON_BATCH_MAX_RUNS", "0"),
                                         ("CLOUDCRON_BATCH_MAX_MACHINES", "x"), ("CLOUDCRON_MANUAL_GRACE", "-1"),
                                         ("CLOUDCRON_PROVIDER_CONCURRENCY", "0")])
def test_a_bad_batch_or_grace_setting_stops_start_up_naming_it(tmp_path, name, value):
    with pytest.raises(ConfigError, match=f"^{name}:"):
        load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), name: value})


def test_retry_slots_default_to_the_worker_slots_and_are_read(tmp_path):
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path)}).retry_slots is None  # None: the process's worker slots
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_RETRY_SLOTS": "5"}).retry_slots == 5


@pytest.mark.parametrize("value, rule", [("0", "must be at least 1"), ("-2", "must be at least 1"),
                                         ("two", "is not a whole number"), ("1.5", "is not a whole number")])
def test_a_bad_retry_slots_value_stops_start_up_naming_it_and_the_rule(tmp_path, value, rule):
    with pytest.raises(ConfigError, match=f"^CLOUDCRON_RETRY_SLOTS: .*{rule}"):
        load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_RETRY_SLOTS": value})


def test_power_verification_waits_120_s_by_default_and_0_turns_it_off(tmp_path):
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path)}).verify_seconds == 120.0
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_VERIFY_SECONDS": "0"}).verify_seconds == 0.0
    with pytest.raises(ConfigError, match="^CLOUDCRON_VERIFY_SECONDS:"):
        load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_VERIFY_SECONDS": "-5"})


def test_the_console_session_lifetime_is_in_hours(tmp_path):
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path)}).ui_session_lifetime == timedelta(hours=12)
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_UI_SESSION_HOURS": "0.5"})
    assert config.ui_session_lifetime == timedelta(minutes=30)


def test_a_plain_postgresql_url_uses_the_shipped_driver(tmp_path):
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_DATABASE_URL": "postgresql://cc@db/cc"})
    assert config.database_url == "postgresql+psycopg://cc@db/cc"


def test_empty_variables_mean_the_default(tmp_path):
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_DATABASE_URL": "", "CLOUDCRON_MIN_INTERVAL": ""})
    assert config.database_url == f"sqlite:///{tmp_path / 'cloudcron.db'}"
    assert config.min_interval == timedelta(seconds=1)


def bad_values(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return [
        ("CLOUDCRON_DATA_DIR", str(a_file)),
        ("CLOUDCRON_DATA_DIR", str(a_file / "below")),
        ("CLOUDCRON_DATABASE_URL", "mysql://root:hunter2@db/cc"),
        ("CLOUDCRON_DATABASE_URL", "cloudcron.db"),
        ("CLOUDCRON_QUEUE_URL", "amqp://guest:hunter2@mq//"),
        ("CLOUDCRON_MIN_INTERVAL", "fast"),
        ("CLOUDCRON_MIN_INTERVAL", "0"),
        ("CLOUDCRON_MIN_INTERVAL", "-1"),
        ("CLOUDCRON_SANDBOX", "maybe"),
        ("CLOUDCRON_SANDBOX", "bwrap"),
        ("CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE", "please"),
        ("CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE", "2"),
        ("CLOUDCRON_PROVIDER_TIMEOUT", "0"),
        ("CLOUDCRON_PROVIDER_TIMEOUT", "soon"),
        ("CLOUDCRON_MAX_MACHINES_PER_CLOUD", "0"),
        ("CLOUDCRON_MAX_MACHINES_PER_CLOUD", "1e4"),
        ("CLOUDCRON_DENIED_NETWORKS", "169.254.0.0/16, metadata"),
        ("CLOUDCRON_DENIED_NETWORKS", "10.0.0.0/33"),
        ("CLOUDCRON_NOTIFY_DENIED_NETWORKS", "127.0.0.0/8, loopback"),
        ("CLOUDCRON_NOTIFY_DENIED_NETWORKS", "::1/129"),
        ("CLOUDCRON_LISTING_SLOTS", "0"),
        ("CLOUDCRON_LISTINGS_PER_ORG", "two"),
        ("CLOUDCRON_DRAIN_SECONDS", "-5"),
        ("CLOUDCRON_DRAIN_SECONDS", "nan"),
        ("CLOUDCRON_UI_SESSION_HOURS", "a day"),
        ("CLOUDCRON_UI_SESSION_HOURS", "0"),
        ("CLOUDCRON_UI_SESSION_HOURS", "100000"),
        ("CLOUDCRON_PUBLIC_URL", "cron.example.com"),
        ("CLOUDCRON_PUBLIC_URL", "ftp://cron.example.com"),
        ("CLOUDCRON_NOTIFY_TIMEOUT", "0"),
        ("CLOUDCRON_NOTIFY_BACKOFF", "fast"),
        ("CLOUDCRON_NOTIFY_RETRY_SECONDS", "-1"),
        ("CLOUDCRON_RETENTION_DAYS", "0"),
        ("CLOUDCRON_RETENTION_RUNS_PER_SCHEDULE", "0"),
        ("CLOUDCRON_RETENTION_BATCH", "many"),
        ("CLOUDCRON_RETENTION_EVERY", "-1"),
    ]


def test_notification_and_retention_settings_have_defaults_and_are_read(tmp_path):
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data")})
    assert (config.public_url, config.notify_timeout, config.notify_backoff, config.notify_retry_for) == ("", 10, 5, 3600)
    assert (config.retention_days, config.retention_runs_per_schedule, config.retention_batch) == (30, 1000, 200)
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "CLOUDCRON_PUBLIC_URL": "https://cron.example.com/",
                          "CLOUDCRON_RETENTION_DAYS": "7", "CLOUDCRON_RETENTION_RUNS_PER_SCHEDULE": "50"})
    assert (config.public_url, config.retention_days, config.retention_runs_per_schedule) == \
        ("https://cron.example.com", 7, 50)


def test_a_bad_value_is_a_config_error_naming_the_variable(tmp_path):
    for name, value in bad_values(tmp_path):
        env = {"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), name: value}
        with pytest.raises(ConfigError) as err:
            load_config(env)
        assert str(err.value).startswith(f"{name}:"), (name, value, str(err.value))
        assert "hunter2" not in str(err.value)


def test_a_non_finite_min_interval_is_a_config_error_naming_the_variable(tmp_path):
    for value in ("nan", "inf"):
        with pytest.raises(ConfigError, match="^CLOUDCRON_MIN_INTERVAL:"):
            load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_MIN_INTERVAL": value})


def test_an_unreadable_secret_key_file_is_a_config_error_naming_the_variable(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("not a fernet key\n")
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "d"), "CLOUDCRON_SECRET_KEY_FILE": str(key_file)})
    with pytest.raises(ConfigError, match="^CLOUDCRON_SECRET_KEY_FILE:"):
        make_state(config)


def test_a_secret_key_file_that_cannot_be_created_is_a_config_error_naming_the_variable(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    try:
        load_or_create_key(blocked / "key")
        raised = None
    except ConfigError as exc:
        raised = str(exc)
    except RecursionError:
        raised = "RecursionError"  # kept out of the report: a 1000-frame traceback takes pytest a minute to render
    assert raised is not None and raised.startswith("CLOUDCRON_SECRET_KEY_FILE:"), raised


def test_the_secret_key_database_and_queue_files_are_created_with_mode_0600(tmp_path):
    old = os.umask(0o000)  # even a permissive umask must not widen it
    try:
        state = make_state(load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "d")}))
        with state.db.transaction() as session:
            session.execute(text("CREATE TABLE probe (x INTEGER)"))
            session.execute(text("INSERT INTO probe VALUES (1)"))
        state.huey.enqueue(state.huey.execute_run.s("no-such-run"))
    finally:
        os.umask(old)
    key_file = tmp_path / "d" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = key_file.read_bytes()
    files = ["cloudcron.db", "cloudcron.db-wal", "cloudcron.db-shm", "queue.db"]
    # The WAL and SHM files exist while a connection is open: written, not yet checkpointed.
    modes = {name: stat.S_IMODE((tmp_path / "d" / name).stat().st_mode) for name in files}
    assert modes == {name: 0o600 for name in files}
    state.db.dispose()
    assert load_or_create_key(key_file) == first.strip()
    assert key_file.read_bytes() == first


def run_web(env_extra, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCRON_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "web", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name, value", [
    ("CLOUDCRON_MIN_INTERVAL", "fast"),
    ("CLOUDCRON_DATABASE_URL", "mysql://root:hunter2@db/cc"),
    ("CLOUDCRON_RETRY_SLOTS", "0"),
])
def test_migrate_with_a_bad_value_exits_non_zero_naming_the_variable(tmp_path, name, value):
    result = run_web({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), name: value}, "migrate")
    assert result.returncode != 0
    assert name in result.stderr and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert not (tmp_path / "data" / "cloudcron.db").exists()


def test_serve_refuses_as_many_listing_slots_as_request_threads(tmp_path):
    result = run_web({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "CLOUDCRON_LISTING_SLOTS": "8"},
                     "serve", "--port", "1", "--threads", "8")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("cloudcron: configuration error: CLOUDCRON_LISTING_SLOTS:")
    assert "Traceback" not in result.stderr


def test_migrate_with_a_bad_secret_key_file_exits_non_zero_naming_it(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("garbage\n")
    result = run_web({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "CLOUDCRON_SECRET_KEY_FILE": str(key_file)}, "migrate")
    assert result.returncode != 0
    assert "CLOUDCRON_SECRET_KEY_FILE" in result.stderr and "Traceback" not in result.stderr


def test_metrics_access_is_a_mode_or_address_ranges(tmp_path):
    base = {"CLOUDCRON_DATA_DIR": str(tmp_path)}
    assert load_config(base).metrics == "token"
    assert load_config({**base, "CLOUDCRON_METRICS": "OFF"}).metrics == "off"
    config = load_config({**base, "CLOUDCRON_METRICS": "10.0.0.0/8, 127.0.0.1"})
    assert config.metrics == "networks" and [str(n) for n in config.metrics_networks] == ["10.0.0.0/8", "127.0.0.1/32"]
    with pytest.raises(ConfigError, match="CLOUDCRON_METRICS: 'tokens' is not token, org:NAME, open, off or an address range"):
        load_config({**base, "CLOUDCRON_METRICS": "tokens"})
    assert load_config(base).ready_tick_age == 30.0
    with pytest.raises(ConfigError, match="CLOUDCRON_READY_TICK_AGE"):
        load_config({**base, "CLOUDCRON_READY_TICK_AGE": "0"})


def test_a_ready_tick_age_shorter_than_two_heartbeats_is_refused(tmp_path):
    # Dispatchers record a tick every 5 s: a shorter limit would make /readyz answer 503 most of the time.
    with pytest.raises(ConfigError, match="CLOUDCRON_READY_TICK_AGE: must be at least 10"):
        load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_READY_TICK_AGE": "3"})
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_READY_TICK_AGE": "10"}).ready_tick_age == 10


def test_metrics_org_mode_names_one_org(tmp_path):
    base = {"CLOUDCRON_DATA_DIR": str(tmp_path)}
    config = load_config({**base, "CLOUDCRON_METRICS": "org:ops"})
    assert (config.metrics, config.metrics_org) == ("org", "ops")
    with pytest.raises(ConfigError, match="CLOUDCRON_METRICS: 'org:' names no org"):
        load_config({**base, "CLOUDCRON_METRICS": "org: "})


def test_a_metrics_list_of_no_range_is_a_config_error_not_a_silent_403(tmp_path):
    with pytest.raises(ConfigError, match="CLOUDCRON_METRICS: ',' names no address range"):
        load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "CLOUDCRON_METRICS": ","})


def test_the_trusted_proxy_is_one_address_or_a_star(tmp_path):
    base = {"CLOUDCRON_DATA_DIR": str(tmp_path)}
    assert load_config(base).trusted_proxy is None
    assert load_config({**base, "CLOUDCRON_TRUSTED_PROXY": " 127.0.0.1 "}).trusted_proxy == "127.0.0.1"
    assert load_config({**base, "CLOUDCRON_TRUSTED_PROXY": "*"}).trusted_proxy == "*"
    with pytest.raises(ConfigError, match="CLOUDCRON_TRUSTED_PROXY: '10.0.0.0/8' is not an IP address"):
        load_config({**base, "CLOUDCRON_TRUSTED_PROXY": "10.0.0.0/8"})


def test_a_prometheus_multiprocess_directory_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR: .* is not a directory"):
        load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "nope")})
    assert load_config({"CLOUDCRON_DATA_DIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
