"""The bubblewrap sandbox every playbook run executes in, and whether this host can build it.

A run's ansible-playbook, its lookups, `delegate_to: localhost` tasks and the machine module
all execute on the worker, with the worker's rights. Inside the sandbox (bwrap, the Debian
package `bubblewrap`) they see:

- the system (/usr, /etc, /bin, /lib...), the Python and virtualenv running cloudcron and the
  collection's checkout, read-only; files in /etc that other users may not read (shadow, SSH
  host keys, TLS keys, services' passwords) are hidden;
- the run's own private directory, read-write (nothing else of the data directory);
- a private /tmp, a private home and a private /dev/shm, empty tmpfs that vanish with the run, each
  at most CLOUDCRON_SANDBOX_TMPFS_MB in size (tmpfs is memory: unbounded, a run could fill the
  worker's): Ansible's ~/.ansible/tmp, where AnsiballZ files hold the cloud credentials, lives there;
- a minimal /dev (read-only, but for /dev/shm), and the tmpfs that hide secret paths, read-only;
- a fresh /proc of their own pid namespace, a minimal /dev, the host's network.

They never see the data directory (secret key, database, queue, other runs' directories), the
key, database and queue files wherever they are configured, the worker's home, the worker's
environment (ansible-runner's environment is an allowlist, see web/runner.py) or any other
process. Every capability is dropped and no further user namespace can be made, so the
sandboxed process cannot unmount what hides the data directory, even when the worker is root.

`bwrap_args` is pure: a `View` (what the run may see, host paths shown at the same place) in,
bwrap's argument list out. `run_view` builds the View of one run from the filesystem, and
`detect` probes once per process whether bwrap works here.
"""
from __future__ import annotations

import logging
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .config import Config, ConfigError
from .db import SQLITE_SUFFIXES, sqlite_file

log = logging.getLogger(__name__)

UNSAFE_VARIABLE = "CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE"
# The system a playbook needs, shown read-only (a symlink such as /bin -> usr/bin stays a symlink).
SYSTEM_PATHS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Shown directories whose files only some users may read (shadow, SSH host keys, TLS keys, service
# configurations with passwords): what others may not read is hidden, since a sandboxed root owns
# root's files. /usr holds no such files and is too large to walk for every run.
SCANNED_SYSTEM_PATHS = ("/etc",)
# Namespaces and limits of every sandbox. The network namespace is kept: runs reach clouds and machines.
NAMESPACE_ARGS = ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
# No user namespace inside the sandbox: one would give the tenant capabilities there again.
USERNS_ARGS = ("--unshare-user", "--disable-userns")
# --new-session: no terminal ioctls into the worker's session; --die-with-parent: a worker killed
# with SIGKILL takes its sandboxes, and every process in them, along.
LIFETIME_ARGS = ("--new-session", "--die-with-parent", "--cap-drop", "ALL")
PROBE_TIMEOUT = 30.0
PRIVATE_HOME_FALLBACK = "/tmp/home"
# POSIX shared memory (Python's multiprocessing locks, which Ansible's workers use) lives here.
SHM = "/dev/shm"
DEFAULT_TMPFS_MB = 128


class SandboxError(ConfigError):
    """The sandbox is required (CLOUDCRON_SANDBOX=required) and cannot be built on this host."""


@dataclass(frozen=True)
class View:
    """What one sandboxed run sees; every path is an absolute host path shown at the same place.

    read_only / read_write: directories or files bound in. symlinks: (target, path) pairs made as
    symlinks. private: empty writable tmpfs directories (/tmp, the home). hidden_dirs /
    hidden_files: paths inside something shown that appear empty (an empty tmpfs; /dev/null).
    A deeper path always wins over a shallower one, so a directory can be hidden and one of its
    subdirectories shown again (the data directory hidden, the run's own directory shown).
    """

    read_only: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()
    symlinks: tuple[tuple[str, str], ...] = ()
    private: tuple[str, ...] = ()
    hidden_dirs: tuple[str, ...] = ()
    hidden_files: tuple[str, ...] = ()
    workdir: str | None = None
    userns: bool = True
    tmpfs_bytes: int | None = DEFAULT_TMPFS_MB * 1024 * 1024  # size of each private tmpfs (None: the kernel's default, half the RAM)


# Among mounts at the same depth: private tmpfs first, then what is shown, then what is hidden,
# so that a hidden path equal to a shown one stays hidden.
_RANK = {"private": 0, "symlink": 1, "read_only": 2, "read_write": 3, "hidden_dir": 4, "hidden_file": 5}


def bwrap_args(view: View, bwrap: str = "bwrap") -> list[str]:
    """The bwrap command line (without the command to run) that builds `view`; pure.

    Mounts are ordered parents first (by path depth), which is what lets a subdirectory of a
    hidden or private directory be shown again. Every private tmpfs (and /dev/shm) gets
    view.tmpfs_bytes; /dev and the tmpfs that hide paths are made read-only last, once whatever is
    shown inside them has been mounted (a remount is not recursive: those mounts stay writable).
    """
    ops: list[tuple[str, str, str | None]] = []  # (kind, path, symlink target)
    ops += [("private", p, None) for p in view.private]
    ops += [("symlink", path, target) for target, path in view.symlinks]
    ops += [("read_only", p, None) for p in view.read_only]
    ops += [("read_write", p, None) for p in view.read_write]
    ops += [("hidden_dir", p, None) for p in view.hidden_dirs]
    ops += [("hidden_file", p, None) for p in view.hidden_files]
    for kind, path, _ in ops:
        if not os.path.isabs(path):
            raise ValueError(f"sandbox path {path!r} is not absolute")
    ops.sort(key=lambda op: (len(Path(op[1]).parts), _RANK[op[0]]))
    size = ["--size", str(int(view.tmpfs_bytes))] if view.tmpfs_bytes else []
    args = [bwrap, *(USERNS_ARGS if view.userns else ()), *NAMESPACE_ARGS, *LIFETIME_ARGS,
            "--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", SHM]
    read_only_tmpfs = ["/dev"]
    seen: set[tuple[str, str]] = set()
    for kind, path, target in ops:
        if (kind, path) in seen:
            continue
        seen.add((kind, path))
        if kind == "private":
            args += [*size, "--perms", "0700", "--tmpfs", path]
        elif kind == "symlink":
            args += ["--symlink", target, path]
        elif kind == "read_only":
            args += ["--ro-bind", path, path]
        elif kind == "read_write":
            args += ["--bind", path, path]
        elif kind == "hidden_dir":
            args += ["--perms", "0700", "--tmpfs", path]
            read_only_tmpfs.append(path)
        else:
            args += ["--ro-bind", "/dev/null", path]
    for path in read_only_tmpfs:
        # An empty tmpfs left writable would be memory a run may fill without bound.
        args += ["--remount-ro", path]
    if view.workdir:
        args += ["--chdir", view.workdir]
    return args


@dataclass(frozen=True)
class Sandbox:
    """How runs execute on this host: in bwrap (`bwrap` set) or not, and why not.

    mode is CLOUDCRON_SANDBOX (auto | required | off); unsafe_ansible is
    CLOUDCRON_UNSAFE_UNSANDBOXED_ANSIBLE: Ansible scripts run even without the sandbox.
    """

    mode: str
    bwrap: str | None = None
    reason: str | None = None  # why runs are not sandboxed (None when they are)
    unsafe_ansible: bool = False
    userns: bool = True
    hidden: tuple[str, ...] = field(default=())  # secret paths of this configuration, see secret_paths
    # CLOUDCRON_SANDBOX_TMPFS_MB: size of each private tmpfs of a run; None where bwrap cannot size them
    tmpfs_mb: int | None = DEFAULT_TMPFS_MB

    @property
    def available(self) -> bool:
        return self.bwrap is not None

    def ansible_refusal(self) -> str | None:
        """Why an Ansible script may not run here (the message for a run or a 400), or None."""
        if self.available or self.unsafe_ansible:
            return None
        return (f"Ansible scripts run only in the bubblewrap sandbox, and runs are not sandboxed here "
                f"({self.reason}); an operator may set {UNSAFE_VARIABLE}=1 to run them without it, "
                "which lets them read every org's secrets")

    def describe(self) -> str:
        """One line for the start-up log."""
        if self.available and self.tmpfs_mb is None:
            return (f"runs execute in a bubblewrap sandbox ({self.bwrap}), but their /tmp, home and /dev/shm are "
                    "not size-limited: this bwrap has no --size option (bubblewrap 0.7 or later, not setuid, has it)")
        if self.available:
            return f"runs execute in a bubblewrap sandbox ({self.bwrap})"
        if self.unsafe_ansible:
            return (f"runs are NOT sandboxed ({self.reason}); {UNSAFE_VARIABLE}=1: Ansible scripts run "
                    "unsandboxed and can read every org's secrets")
        return f"runs are NOT sandboxed ({self.reason}); Ansible scripts are refused"

    def announce(self) -> None:
        """Say at start, in one log line, whether runs are sandboxed here."""
        (log.info if self.available else log.warning)("%s", self.describe())

    def view(self, private: Path, extra_read_only: Iterable[str] = ()) -> View:
        """The View of one run whose private directory is `private`."""
        return run_view(private, self.hidden, extra_read_only, userns=self.userns, tmpfs_mb=self.tmpfs_mb)

    def wrap(self, command: list[str], view: View) -> list[str]:
        """`command` prefixed so it runs inside the sandbox described by `view`."""
        if self.bwrap is None:
            raise RuntimeError("no sandbox on this host")
        return [*bwrap_args(view, self.bwrap), "--", *command]


def secret_paths(config: Config) -> tuple[str, ...]:
    """Paths no run may see: the data directory, the key file, SQLite database and queue files."""
    paths = [config.data_dir, config.secret_key_file]
    for url in (config.database_url, config.queue_url):
        path = sqlite_file(url)
        if path:
            paths += [Path(str(path) + suffix) for suffix in SQLITE_SUFFIXES]
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths))


def _python_paths() -> list[str]:
    """The interpreter, its standard library, the virtualenv and its site-packages, as real paths.

    Not sys.path as a whole: `python -m` puts the working directory there, which may be / or a home.
    """
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    paths += [sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")]
    paths += site.getsitepackages()
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        paths.append(site.getusersitepackages())
    # PYTHONPATH reaches ansible-playbook too (the runner keeps it): what it names must be there.
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    real = (os.path.realpath(p) for p in paths if p and os.path.exists(p))
    return [p for p in real if p != "/"]


def _homes() -> list[str]:
    homes = [os.environ.get("HOME") or ""]
    try:
        homes.append(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    return [os.path.realpath(h) for h in dict.fromkeys(homes) if h and os.path.isabs(h) and os.path.realpath(h) != "/"]


def _within(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def run_view(private: Path, hidden: Iterable[str], extra_read_only: Iterable[str] = (), userns: bool = True,
             tmpfs_mb: int | None = DEFAULT_TMPFS_MB) -> View:
    """The View of one run: system, Python and checkout read-only, `private` read-write, the rest hidden.

    `hidden` are secret paths (see secret_paths); only those lying inside something shown need
    covering. The worker's home becomes the run's private home, empty and writable; it, /tmp and
    /dev/shm hold at most `tmpfs_mb` MiB each.
    """
    from .runner import REPO_ROOT  # the collection's checkout, which the run loads modules from

    private = os.path.realpath(private)
    symlinks, read_only = [], []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            symlinks.append((os.readlink(path), path))
        elif os.path.isdir(path):
            read_only.append(path)
    resolv = os.path.realpath("/etc/resolv.conf")
    if os.path.exists(resolv) and not _within(resolv, read_only):
        read_only.append(resolv)  # systemd-resolved keeps it in /run
    needed = [*_python_paths(), os.path.realpath(REPO_ROOT),
              *(os.path.realpath(p) for p in extra_read_only if p and os.path.exists(p))]
    for path in sorted(dict.fromkeys(needed), key=lambda p: len(Path(p).parts)):
        if not _within(path, read_only):
            read_only.append(path)
    shown = read_only + [private]
    # The worker's home becomes the run's, empty; unless the checkout or Python is that very directory.
    homes = [h for h in _homes() if h not in needed]
    secrets = [os.path.realpath(p) for p in hidden]
    for path in SCANNED_SYSTEM_PATHS:
        secrets += not_world_readable(path)
    hidden_dirs, hidden_files = [], []
    for path in dict.fromkeys(secrets):
        if path == private or not os.path.lexists(path) or not _within(path, shown):
            continue
        (hidden_dirs if os.path.isdir(path) else hidden_files).append(path)
    return View(read_only=tuple(read_only), read_write=(private,), symlinks=tuple(symlinks),
                private=("/tmp", *homes), hidden_dirs=tuple(hidden_dirs), hidden_files=tuple(hidden_files),
                workdir=private, userns=userns, tmpfs_bytes=tmpfs_mb * 1024 * 1024 if tmpfs_mb else None)


def not_world_readable(root: str) -> list[str]:
    """Files under `root` that other users may not read, and directories they may not enter (not descended)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        entered = []
        for name in dirnames:
            path = os.path.join(dirpath, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode) and mode & 0o005 != 0o005:
                found.append(path)
            elif stat.S_ISDIR(mode):
                entered.append(name)
        dirnames[:] = entered
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and not mode & 0o004:
                found.append(path)
    return found


def home_in_sandbox(view: View) -> str:
    """HOME for a run in `view`: the worker's home path, private there, else a directory in /tmp."""
    homes = [p for p in view.private if p != "/tmp"]
    return homes[0] if homes else PRIVATE_HOME_FALLBACK


def detect(mode: str = "auto", unsafe_ansible: bool = False, hidden: Iterable[str] = (),
           bwrap: str | None = None, tmpfs_mb: int = DEFAULT_TMPFS_MB) -> Sandbox:
    """Probe whether bwrap can build a run's sandbox here; `required` raises SandboxError when not.

    tmpfs_mb (CLOUDCRON_SANDBOX_TMPFS_MB) sizes each run's /tmp, home and /dev/shm. A bwrap without
    --size (before 0.7, or installed setuid) still sandboxes: its Sandbox has tmpfs_mb None, which
    describe() says at start, rather than no sandbox at all."""
    hidden = tuple(hidden)
    if mode == "off":
        return Sandbox(mode, reason="CLOUDCRON_SANDBOX=off", unsafe_ansible=unsafe_ansible, hidden=hidden,
                       tmpfs_mb=tmpfs_mb)
    path = bwrap or shutil.which("bwrap")
    reason = None
    userns = True
    if path is None:
        reason = "bwrap not found: install the bubblewrap package"
    else:
        for size in (tmpfs_mb, None):
            reason = _probe(path, userns=True, tmpfs_mb=size)
            if reason is not None and _probe(path, userns=False, tmpfs_mb=size) is None:
                # Root in a container where user namespaces are off: everything but the inner lock holds.
                reason, userns = None, False
            if reason is None or not _knows_no_size(path):
                break
            # Isolation matters more than the size of the in-memory directories: sandbox without it.
            tmpfs_mb = None
    if reason is not None:
        if mode == "required":
            raise SandboxError(f"CLOUDCRON_SANDBOX=required, but runs cannot be sandboxed here: {reason}")
        return Sandbox(mode, reason=reason, unsafe_ansible=unsafe_ansible, hidden=hidden, tmpfs_mb=tmpfs_mb)
    return Sandbox(mode, bwrap=path, unsafe_ansible=unsafe_ansible, userns=userns, hidden=hidden, tmpfs_mb=tmpfs_mb)


def _knows_no_size(bwrap: str) -> bool:
    """Whether this bwrap refuses --size (too old, or setuid), so a sandbox without it is worth probing."""
    try:
        proc = subprocess.run([bwrap, "--size", "1024", "--tmpfs", "/tmp", "--ro-bind", "/", "/", "true"],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    error = proc.stderr.decode(errors="replace")
    return proc.returncode != 0 and "--size" in error


def _probe(bwrap: str, userns: bool, tmpfs_mb: int | None = DEFAULT_TMPFS_MB) -> str | None:
    """Run Python in a sandbox like a run's and have it write to its private directory; None when it worked."""
    private = Path(tempfile.mkdtemp(prefix="cloudcron-sandbox-probe-"))
    try:
        view = run_view(private, (), userns=userns, tmpfs_mb=tmpfs_mb)
        marker = private / "probe"
        command = [*bwrap_args(view, bwrap), "--", sys.executable, "-I", "-c",
                   "import sys; open(sys.argv[1], 'w').write('ok')", str(marker)]
        try:
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT,
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{bwrap} could not be run: {exc}"
        if proc.returncode == 0 and marker.is_file() and marker.read_text() == "ok":
            return None
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        return f"{bwrap} cannot create its namespaces here: {detail[-1] if detail else f'exit status {proc.returncode}'}"
    finally:
        shutil.rmtree(private, ignore_errors=True)
