"""The sandbox: bwrap's argument list from a View (pure), the View of a run, and detection on this host."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import web.runner
from web.config import load_config
from web.sandbox import (
    SandboxError,
    View,
    bwrap_args,
    detect,
    home_in_sandbox,
    not_world_readable,
    run_view,
    secret_paths,
)


def _mounts(args: list[str]) -> list[tuple[str, ...]]:
    """The mount operations of a bwrap command line, in order, as (option, *operands)."""
    arity = {"--ro-bind": 2, "--bind": 2, "--symlink": 2, "--tmpfs": 1, "--perms": 1, "--proc": 1, "--dev": 1,
             "--chdir": 1, "--cap-drop": 1}
    ops, i = [], 1
    while i < len(args):
        option = args[i]
        n = arity.get(option, 0)
        if option not in ("--perms", "--cap-drop", "--chdir") and n:
            ops.append((option, *args[i + 1:i + 1 + n]))
        i += 1 + n
    return ops


def test_a_hidden_data_dir_is_mounted_before_the_run_dir_inside_it_is_shown_again():
    view = View(read_only=("/usr", "/srv/app"), read_write=("/srv/app/data/runs/cloudcron-run-1",),
                private=("/tmp", "/home/svc"), hidden_dirs=("/srv/app/data",),
                hidden_files=("/etc/shadow",), workdir="/srv/app/data/runs/cloudcron-run-1")
    ops = _mounts(bwrap_args(view))
    position = {op: i for i, op in enumerate(ops)}
    assert position[("--ro-bind", "/srv/app", "/srv/app")] < position[("--tmpfs", "/srv/app/data")] \
        < position[("--bind", "/srv/app/data/runs/cloudcron-run-1", "/srv/app/data/runs/cloudcron-run-1")]
    assert ("--ro-bind", "/dev/null", "/etc/shadow") in ops


def test_a_path_inside_the_private_home_is_shown_after_the_home():
    view = View(read_only=("/usr", "/home/svc/.pyenv/versions/3.11"), private=("/tmp", "/home/svc"))
    ops = _mounts(bwrap_args(view))
    assert ops.index(("--tmpfs", "/home/svc")) < ops.index(
        ("--ro-bind", "/home/svc/.pyenv/versions/3.11", "/home/svc/.pyenv/versions/3.11"))


def test_a_path_both_shown_and_hidden_stays_hidden():
    view = View(read_only=("/srv/app",), hidden_dirs=("/srv/app",))
    ops = _mounts(bwrap_args(view))
    assert ops.index(("--ro-bind", "/srv/app", "/srv/app")) < ops.index(("--tmpfs", "/srv/app"))


def test_every_sandbox_drops_capabilities_and_has_its_own_pids_but_the_hosts_network():
    args = bwrap_args(View(read_only=("/usr",), workdir="/usr"), "/usr/bin/bwrap")
    assert args[0] == "/usr/bin/bwrap"
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session", "--die-with-parent",
                 "--unshare-user", "--disable-userns"):
        assert flag in args
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert args[args.index("--proc") + 1] == "/proc" and args[args.index("--chdir") + 1] == "/usr"
    assert "--unshare-net" not in args and "--unshare-all" not in args
    assert ("--bind", "/", "/") not in _mounts(args) and ("--ro-bind", "/", "/") not in _mounts(args)
    assert "--disable-userns" not in bwrap_args(View(read_only=("/usr",), userns=False))


def test_relative_paths_are_refused():
    with pytest.raises(ValueError, match="not absolute"):
        bwrap_args(View(read_only=("usr",)))


def test_secret_paths_cover_the_data_dir_key_database_and_queue_files(tmp_path):
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"),
                          "CLOUDCRON_SECRET_KEY_FILE": str(tmp_path / "etc" / "key"),
                          "CLOUDCRON_DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'cc.db'}"})
    paths = secret_paths(config)
    for path in ("data", "etc/key", "db/cc.db", "db/cc.db-wal", "db/cc.db-shm", "data/queue.db", "data/queue.db-wal"):
        assert str(tmp_path / path) in paths
    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"),
                          "CLOUDCRON_DATABASE_URL": "postgresql://cc:pw@db/cc", "CLOUDCRON_QUEUE_URL": "redis://r/0"})
    assert secret_paths(config) == (str(tmp_path / "data"), str(tmp_path / "data" / "secret.key"))


def test_a_runs_view_hides_the_data_dir_inside_the_checkout_and_shows_its_own_dir(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    data = checkout / "instance"
    private = data / "runs" / "cloudcron-run-x"
    private.mkdir(parents=True)
    (data / "secret.key").write_text("k")
    outside_key = checkout / "conf" / "secret.key"  # configured outside the data dir, inside a shown path
    outside_key.parent.mkdir()
    outside_key.write_text("k")
    monkeypatch.setattr(web.runner, "REPO_ROOT", checkout)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    view = run_view(private, [str(data), str(data / "secret.key"), str(outside_key), str(tmp_path / "gone.db")])
    assert str(checkout) in view.read_only and view.read_write == (str(private),)
    assert [p for p in view.hidden_dirs if not p.startswith("/etc/")] == [str(data)]
    assert str(outside_key) in view.hidden_files and str(tmp_path / "gone.db") not in view.hidden_files
    assert "/tmp" in view.private and str(tmp_path / "home") in view.private
    assert home_in_sandbox(view) == str(tmp_path / "home")
    assert os.path.realpath(sys.prefix) in view.read_only or any(
        os.path.realpath(sys.prefix).startswith(p + "/") for p in view.read_only)
    if os.path.exists("/etc/shadow") and not os.stat("/etc/shadow").st_mode & 0o004:
        assert "/etc/shadow" in view.hidden_files
    assert view.workdir == str(private)


def test_what_other_users_may_not_read_is_found_and_private_dirs_are_not_entered(tmp_path):
    (tmp_path / "public.conf").write_text("x")
    (tmp_path / "private.key").write_text("x")
    (tmp_path / "private.key").chmod(0o600)
    (tmp_path / "ssl" / "private").mkdir(parents=True)
    (tmp_path / "ssl" / "private" / "tls.key").write_text("x")
    (tmp_path / "ssl" / "private").chmod(0o700)
    (tmp_path / "ssl" / "certs").mkdir()
    (tmp_path / "ssl" / "certs" / "ca.pem").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "private.key")
    assert sorted(not_world_readable(str(tmp_path))) == sorted([str(tmp_path / "private.key"),
                                                                str(tmp_path / "ssl" / "private")])


def test_detect_reports_a_missing_bwrap_and_one_that_cannot_build_the_sandbox(tmp_path):
    missing = detect("auto", bwrap=str(tmp_path / "no-bwrap"))
    assert not missing.available and "bwrap" in missing.reason
    broken = detect("auto", bwrap="/bin/false")
    assert not broken.available and "cannot create its namespaces" in broken.reason
    refusal = broken.ansible_refusal()
    assert "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE=1" in refusal and broken.reason in refusal
    assert detect("auto", unsafe_ansible=True, bwrap="/bin/false").ansible_refusal() is None
    with pytest.raises(SandboxError, match="^CLOUDCRON_SANDBOX=required"):
        detect("required", bwrap="/bin/false")
    off = detect("off")
    assert not off.available and "CLOUDCRON_SANDBOX=off" in off.ansible_refusal()


def test_this_host_can_build_the_sandbox():
    # `make test` installs bubblewrap: the rest of the suite relies on it.
    sandbox = detect("required")
    assert sandbox.available and sandbox.ansible_refusal() is None


def test_a_sandboxed_command_sees_its_dir_and_the_system_but_nothing_hidden(tmp_path, monkeypatch):
    data = tmp_path / "data"
    private = data / "runs" / "cloudcron-run-x"
    private.mkdir(parents=True)
    (data / "secret.key").write_text("the-secret-key")
    (data / "runs" / "cloudcron-run-other").mkdir()
    (data / "runs" / "cloudcron-run-other" / "extravars").write_text("other-runs-secret")
    home = tmp_path / "home"
    (home / ".ansible" / "tmp").mkdir(parents=True)
    (home / "worker-dotfile").write_text("worker-home-secret")
    monkeypatch.setenv("HOME", str(home))
    sandbox = detect("required", hidden=[str(data), str(data / "secret.key")])
    view = sandbox.view(private)
    script = f"""
import os
def read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        return type(exc).__name__
print("key", read({str(data / 'secret.key')!r}))
print("other", read({str(data / 'runs' / 'cloudcron-run-other' / 'extravars')!r}))
print("runs", sorted(os.listdir({str(data / 'runs')!r})))
print("home", sorted(os.listdir({str(home)!r})))
print("passwd", read("/etc/passwd").startswith("root:"))
print("pids", len([p for p in os.listdir("/proc") if p.isdigit()]))
open("written", "w").write("from inside")
"""
    proc = subprocess.run(sandbox.wrap([sys.executable, "-I", "-c", script], view), capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["key"] in ("FileNotFoundError", "PermissionError")
    assert lines["other"] in ("FileNotFoundError", "PermissionError")
    assert lines["runs"] == "['cloudcron-run-x']"
    assert lines["home"] == "[]"
    assert lines["passwd"] == "True"
    assert int(lines["pids"]) <= 2  # bwrap's init and the command: nothing of the host
    assert (private / "written").read_text() == "from inside"
    assert (home / "worker-dotfile").read_text() == "worker-home-secret"  # hidden, not harmed
    assert not Path(home / "written").exists()


def test_a_runs_view_never_shows_the_root_or_the_workers_working_directory(tmp_path, monkeypatch):
    # `python -m web worker` started from / or from a home puts that directory first in sys.path.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(sys, "path", ["/", str(home), *sys.path])
    private = tmp_path / "runs" / "cloudcron-run-x"
    private.mkdir(parents=True)
    view = run_view(private, [])
    assert "/" not in view.read_only and str(home) not in view.read_only
    assert str(home) in view.private


def test_every_private_tmpfs_is_sized_and_dev_and_hiding_tmpfs_are_made_read_only_last():
    view = View(read_only=("/usr", "/srv/app"), read_write=("/srv/app/data/runs/cloudcron-run-1",),
                private=("/tmp", "/home/svc"), hidden_dirs=("/srv/app/data",), tmpfs_bytes=8 * 1024 * 1024)
    args = bwrap_args(view)
    for path in ("/tmp", "/home/svc", "/dev/shm"):
        at = [i for i, a in enumerate(args) if a == "--tmpfs" and args[i + 1] == path]
        assert len(at) == 1, path
        before = args[max(0, at[0] - 4):at[0]]
        assert before[before.index("--size") + 1] == str(8 * 1024 * 1024), (path, before)
    # The tmpfs hiding the data directory holds no size: it is remounted read-only, after the run's
    # own directory inside it is bound (a remount is not recursive, so that one stays writable).
    hide = args.index("/srv/app/data")
    assert "--size" not in args[hide - 4:hide]
    remounts = [args[i + 1] for i, a in enumerate(args) if a == "--remount-ro"]
    assert remounts == ["/dev", "/srv/app/data"]
    assert args.index("--remount-ro") > args.index("/srv/app/data/runs/cloudcron-run-1")


def test_a_run_cannot_fill_memory_through_its_tmpfs_but_writes_its_own_dir(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    data = tmp_path / "srv" / "data"
    private = data / "runs" / "cloudcron-run-x"
    private.mkdir(parents=True)
    sandbox = detect("required", tmpfs_mb=4)
    view = sandbox.view(private)
    # The data directory is hidden by an empty tmpfs when it lies inside something shown: make it so.
    view = View(**{**view.__dict__, "read_only": (*view.read_only, str(tmp_path / "srv")),
                   "hidden_dirs": (str(data),)})
    script = f"""
import errno, multiprocessing, os
def fill(path):
    try:
        with open(path, "wb") as handle:
            for _ in range(8):
                handle.write(b"x" * (1024 * 1024))
                handle.flush()
        return "wrote 8 MiB"
    except OSError as exc:
        return errno.errorcode[exc.errno]
print("tmp", fill("/tmp/fill"))
print("home", fill({str(home / 'fill')!r}))
print("shm", fill("/dev/shm/fill"))
print("dev", fill("/dev/fill"))
print("hidden", fill({str(data / 'fill')!r}))
print("own", fill("own-fill"))
os.unlink("/dev/shm/fill")
lock = multiprocessing.Lock()
print("lock", lock.acquire(timeout=5))
"""
    proc = subprocess.run(sandbox.wrap([sys.executable, "-I", "-c", script], view), capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["tmp"] == lines["home"] == lines["shm"] == "ENOSPC"
    assert lines["dev"] == lines["hidden"] == "EROFS"
    assert lines["own"] == "wrote 8 MiB" and (private / "own-fill").stat().st_size == 8 * 1024 * 1024
    assert lines["lock"] == "True"  # POSIX semaphores (Ansible's multiprocessing) still work in /dev/shm
    assert not (data / "fill").exists() and not (home / "fill").exists()


def test_a_bwrap_without_size_still_sandboxes_and_says_its_tmpfs_are_not_limited(tmp_path):
    # bubblewrap before 0.7 (Ubuntu 22.04 has 0.6) and setuid installs refuse --size.
    real = shutil.which("bwrap")
    old = tmp_path / "bwrap"
    old.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --size ] && { echo 'bwrap: Unknown option --size' >&2; "
                   f"exit 1; }}; done\nexec {real} \"$@\"\n")
    old.chmod(0o755)
    sandbox = detect("required", bwrap=str(old), tmpfs_mb=16)
    assert sandbox.available and sandbox.tmpfs_mb is None
    assert "not size-limited" in sandbox.describe() and "--size" in sandbox.describe()
    view = sandbox.view(tmp_path / "private")
    assert "--size" not in bwrap_args(view) and "--remount-ro" in bwrap_args(view)
    assert detect("required", tmpfs_mb=16).tmpfs_mb == 16  # the real one sizes them
