"""Real sshd processes on loopback, so run tests reach machines the way a worker does.

The session fixture ``sshd_hosts`` starts three Debian OpenSSH servers, each with its own host
key, config and free port, all accepting one ed25519 client key for the current user. They are
stopped by pid when the session ends.
"""
from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
HOST_COUNT = 3
# Generous because the whole suite shares two cores; only reached when sshd never answers.
START_DEADLINE = 30.0
STOP_DEADLINE = 10.0


@dataclass(frozen=True)
class SshHost:
    """One running sshd that accepts the harness client key."""

    host: str
    port: int
    user: str
    private_key: str = field(repr=False)  # kept out of pytest's failure output
    pid: int = 0


def _die_with_parent() -> None:
    # A pytest killed before its teardown must not leave sshd listening: the kernel sends
    # SIGTERM to sshd when the process that started it exits (PR_SET_PDEATHSIG = 1).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _write_config(workdir: Path, port: int, authorized_keys: Path) -> Path:
    config = workdir / "sshd_config"
    host_key = workdir / "ssh_host_ed25519_key"
    config.write_text(
        "\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            # Tests run as root in CI; key-only root login keeps that close to a cloud image.
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The temp dir and key files belong to whoever runs pytest, not a real home.
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            # Parallel ansible workers and ssh multiplexing open many sessions at once.
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "LogLevel ERROR",
            "",
        ])
    )
    return config


def _start_one(workdir: Path, authorized_keys: Path) -> tuple[subprocess.Popen, int]:
    """Start sshd on a free port, retrying when another process grabs the port first."""
    _keygen(workdir / "ssh_host_ed25519_key", "cloudcron-test-host")
    log = workdir / "sshd.log"
    for _attempt in range(5):
        port = _free_port()
        config = _write_config(workdir, port, authorized_keys)
        with open(log, "ab") as log_file:
            # -D keeps sshd in the foreground so the pid we hold is the listener itself.
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_ssh(port):
                return proc, port
            time.sleep(0.05)
        _stop(proc)
    raise RuntimeError(f"sshd did not start; its log: {log.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def sshd_hosts():
    """Three real sshd servers on loopback that accept one shared client key."""
    if not os.access(SSHD, os.X_OK) or shutil.which(SSH_KEYGEN) is None:
        pytest.fail(
            f"{SSHD} or ssh-keygen not found: the run tests need Debian's openssh-server "
            "(`make test` installs it)", pytrace=False,
        )
    if os.getuid() == 0:
        # sshd refuses to start as root without its privilege separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    root = Path(tempfile.mkdtemp(prefix="cloudcron-sshd-"))
    procs: list[subprocess.Popen] = []
    try:
        client_key = root / "client_ed25519"
        _keygen(client_key, "cloudcron-test-client")
        authorized_keys = root / "authorized_keys"
        authorized_keys.write_text((root / "client_ed25519.pub").read_text())
        private_key = client_key.read_text()
        hosts = []
        for index in range(HOST_COUNT):
            workdir = root / f"host{index}"
            workdir.mkdir()
            proc, port = _start_one(workdir, authorized_keys)
            procs.append(proc)
            hosts.append(SshHost("127.0.0.1", port, user, private_key, proc.pid))
        yield hosts
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)
