"""Private run directories and the processes in them: made for one playbook run, removed with everything in it.

A playbook run gets a fresh directory (mode 0700) under the worker's base directory, locked with
flock for as long as the worker uses it: ansible-runner writes extra variables, the environment and
event data there, and a run's key files and credentials live there too. remove() stops every process
still working in it (ssh masters, a playbook that was stopped) and deletes it; purge_leftovers()
does the same for directories whose worker died (the kernel released its lock).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_PREFIX = "cloudcron-run-"
LOCK_FILE = ".lock"
# A private directory without a lock file is only a leftover once it is this old: a live
# worker creates the lock right after the directory.
UNLOCKED_GRACE_SECONDS = 60.0


def create(base_dir: Path) -> tuple[Path, int]:
    """A fresh private directory under base_dir (made 0700 if missing) and the descriptor of its held lock."""
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX, dir=base_dir))
    return private, _lock(private)


def remove(private: Path, lock_fd: int) -> None:
    """Stop the processes working in a private directory, delete it, then release its lock."""
    try:
        _stop_processes_in(private)
        shutil.rmtree(private, ignore_errors=True)
    finally:
        os.close(lock_fd)


def purge_leftovers(base_dir: Path) -> int:
    """Remove private run dirs whose worker is gone (and any process still using them); return how many."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        return 0
    removed = 0
    for entry in base_dir.iterdir():
        if not entry.name.startswith(PRIVATE_PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            fd = os.open(entry / LOCK_FILE, os.O_RDWR)
        except FileNotFoundError:
            if time.time() - entry.stat().st_mtime < UNLOCKED_GRACE_SECONDS:
                continue
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live worker holds it
            # A worker killed hard leaves ansible-playbook and ssh masters running in the dir.
            _stop_processes_in(entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed += not entry.exists()
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def _lock(private: Path) -> int:
    # flock is released by the kernel when the worker dies, which is what tells
    # purge_leftovers in another worker that the directory is abandoned.
    fd = os.open(private / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _stop_processes_in(private: Path) -> None:
    """Stop every process working in the private dir: ssh masters, or a playbook a dead worker left."""
    needle = str(private)
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            cwd = ""
        if cwd == needle or cwd.startswith(needle + "/"):
            pids.append(int(entry.name))
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                if needle.encode() in handle.read():
                    pids.append(int(entry.name))
        except OSError:
            pass
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            log.warning("could not signal process %d: %s", pid, exc)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # A zombie has finished; its parent (often init) reaps it.
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False
