"""Execute a rendered playbook with ansible-runner and record each machine's result as it arrives.

One playbook run, one fresh private directory (web/rundirs.py) under base_dir, removed in a finally
block: ansible-runner writes extra variables, the environment and event data there, and the run's
key files and credentials live there too, so nothing secret outlives the run. Turning the events
into per-machine results is web/results.py's job.

The collection cloudcron.scheduler is found through a symlink tree in the private directory
(collections/ansible_collections/cloudcron/scheduler -> this repository) unless the caller
passes collections_path, for example when the collection is installed elsewhere.

Strings in the inventory and extra variables are written as !unsafe: they come from users and
clouds, and Ansible must never evaluate them as templates on the worker.

Given a working sandbox (web/sandbox.py), ansible-playbook runs inside bubblewrap: RunnerConfig
prepares the command, and the runner prefixes it with bwrap's arguments. Either way the run's
home and temporary directory are private to it: a tmpfs inside the sandbox, directories of the
private run directory without it, so that AnsiballZ files (which carry credentials) go with
the run, and with purge_leftovers when a worker was killed during it.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from . import rundirs
from .playbooks import EVENT_RESULT_LIMIT
from .results import MachineResult, Recorder as _Recorder, cap_text, inventory_hosts as _inventory_hosts  # noqa: F401 - cap_text is used by callers
from .rundirs import PRIVATE_PREFIX, purge_leftovers  # noqa: F401 - the service and tests use them from here
from .scrub import everywhere

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK_FILE = "main.yml"
INVENTORY_FILE = "inventory/hosts.yml"
MAX_FORKS = 20
# How often the runner loop wakes to check the deadline while ansible-playbook is quiet.
POLL_SECONDS = 0.25
# Worker environment variables the playbook keeps; the rest (database URLs, secret keys,
# the worker user's ssh-agent) is dropped so a user's Ansible script cannot read it.
_ENV_KEEP = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SHELL", "PYTHONPATH",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE",
}
_ENV_KEEP_PREFIXES = ("LC_", "ANSIBLE_", "AWX_", "RUNNER_")
_ENV_KEEP_RUNNER = {"ORIGINAL_STDOUT_CALLBACK", "MAX_EVENT_RES", "AD_HOC_COMMAND_ID"}


@dataclass
class ExecResult:
    """How the playbook run ended, and every expected machine's result keyed by (run_id, key)."""

    status: str  # "finished" | "timed_out" | "cancelled" | "error"
    error: str | None
    results: dict[tuple[str, str], MachineResult] = field(default_factory=dict)
    run_timeouts: dict[str, str] = field(default_factory=dict)  # run id -> why that run timed out


def execute(rendered, *, base_dir: Path, timeout: float | None, output_cap: int = 256 * 1024,
            on_result: Callable[[str, str, MachineResult], None] | None = None,
            collections_path: str | None = None, sandbox=None,
            cancel: threading.Event | None = None,
            on_results: Callable[[list[tuple[str, str, MachineResult]]], None] | None = None,
            run_timeouts: dict[str, float] | None = None) -> ExecResult:
    """Run the rendered playbook in a fresh private dir, report results as they come, remove the dir.

    sandbox: a web.sandbox.Sandbox; when it is available the playbook runs inside bubblewrap,
    otherwise (or with None) directly, with its home and temporary directory in the private dir.
    Setting `cancel` stops the playbook (within POLL_SECONDS); the outcome is then "cancelled" and the
    machines still without a result are reported "interrupted".

    Several runs may share the playbook: run_timeouts ({run_id: seconds}) gives each its own timeout
    (ExecResult.run_timeouts names those that timed out, with why; the others go on), and on_results
    receives the results of each event in one list, so that the caller can write them together.
    """
    from ansible_runner.exceptions import AnsibleRunnerException, ConfigurationError

    private, lock_fd = rundirs.create(base_dir)
    recorder = _Recorder(rendered, output_cap, on_result,
                         deadline=None if timeout is None else time.monotonic() + timeout, cancel=cancel,
                         on_results=on_results, run_timeouts=run_timeouts)
    try:
        try:
            runner = _prepare(rendered, private, recorder, collections_path, sandbox)
            status, rc = runner.run()
        except (OSError, AnsibleRunnerException, ConfigurationError) as exc:
            log.warning("could not run the playbook: %s", exc)
            outcome = ExecResult("error", f"could not run the playbook: {exc}")
        else:
            if recorder.cancelled:
                outcome = ExecResult("cancelled", "the run was stopped before it finished")
            elif recorder.timed_out:
                outcome = ExecResult("timed_out", f"the run timed out after {timeout:g} s")
            elif recorder.done_early:
                outcome = ExecResult("finished", None)  # every machine has its result; some runs timed out
            elif recorder.remote_timed_out and recorder.all_runs_timed_out():
                # A script stopped at its time limit on a machine: the run's timeout, a little early.
                outcome = ExecResult("timed_out", f"the run timed out: a script ran past its time limit of "
                                                  f"{recorder.remote_timed_out:g} s on a machine")
            elif recorder.saw_stats:
                recorder.finish_from_stats()
                outcome = ExecResult("finished", None)
            else:
                outcome = ExecResult("error", recorder.output_tail()
                                     or f"ansible-playbook ended with status {rc} ({status})")
        # Text of the whole playbook (its output tail) may quote any of its hosts' variables: masked of the
        # secrets of every org it holds runs of before it reaches any run's machines (web/scrub.py).
        outcome.error = everywhere(outcome.error, {run_id for run_id, _ in rendered.expected})
        if outcome.status == "finished":
            recorder.fail_rest("no result was reported for this machine")
        elif outcome.status == "cancelled":
            recorder.fail_rest(outcome.error, status="interrupted")
        else:
            recorder.fail_rest(outcome.error, status="timed_out" if outcome.status == "timed_out" else "failed")
        if recorder.callback_error is not None:
            # The caller could not record a result; the playbook was stopped at once.
            raise recorder.callback_error
        outcome.results = recorder.results
        outcome.run_timeouts = dict(recorder.run_timeouts)
        return outcome
    finally:
        rundirs.remove(private, lock_fd)


def _prepare(rendered, private: Path, recorder: _Recorder, collections_path: str | None, sandbox=None):
    from ansible_runner import Runner, RunnerConfig

    for relpath, (content, mode) in rendered.files.items():
        _write(private, relpath, content, mode)
    sandboxed = sandbox is not None and sandbox.available
    inventory = rendered.inventory
    if not sandboxed:
        # Ansible puts a local connection's module files (AnsiballZ, with the credentials in them)
        # in ~<user>/.ansible/tmp, whatever HOME says: there, they would outlive a killed worker.
        inventory = _with_local_vars(inventory, {"ansible_remote_tmp": str(private / "home" / ".ansible" / "tmp")})
    _write(private, PLAYBOOK_FILE, rendered.playbook, 0o600)
    _write(private, INVENTORY_FILE, _unsafe_yaml(inventory), 0o600)
    # ansible-runner passes env/extravars as -e @file: a file, not the command line, so the
    # secrets in it never show in the process list.
    _write(private, "env/extravars", _unsafe_yaml(rendered.extravars or {}), 0o600)
    _write(private, "env/settings", yaml.safe_dump({
        "pexpect_timeout": POLL_SECONDS,
        "suppress_output_file": True,
        "suppress_ansible_output": True,
    }), 0o600)
    if collections_path is None:
        link = private / "collections" / "ansible_collections" / "cloudcron" / "scheduler"
        link.parent.mkdir(parents=True, mode=0o700)
        link.symlink_to(REPO_ROOT, target_is_directory=True)
        collections_path = str(private / "collections")
    (private / "tmp").mkdir(mode=0o700)
    (private / "home").mkdir(mode=0o700)
    hosts = len(_inventory_hosts(rendered.inventory))
    config = RunnerConfig(
        private_data_dir=str(private),
        playbook=str(private / PLAYBOOK_FILE),
        inventory=str(private / INVENTORY_FILE),
        ident="run",
        quiet=True,
        forks=max(1, min(hosts, MAX_FORKS)),
    )
    config.prepare()
    env = _run_env(config.env, private, collections_path)
    if rendered.task_timeout:
        env["ANSIBLE_TASK_TIMEOUT"] = str(int(rendered.task_timeout))
    if sandboxed:
        from .sandbox import home_in_sandbox

        view = sandbox.view(private, extra_read_only=_collection_dirs(env["ANSIBLE_COLLECTIONS_PATH"]))
        env.update(HOME=home_in_sandbox(view), TMPDIR="/tmp")
        # ansible-playbook and its arguments, as RunnerConfig prepared them, run inside bwrap;
        # bwrap finds ansible-playbook through the job's PATH.
        config.command = sandbox.wrap(config.command, view)
    else:
        # ~ of local connections (~/.ansible/tmp) and Python's temporary files land in the private dir.
        env.update(HOME=str(private / "home"), TMPDIR=str(private / "tmp"))
    config.env = env
    # ansible-runner resolves ansible-playbook (or bwrap) through the job's PATH.
    return Runner(config, event_handler=recorder.on_event, cancel_callback=recorder.should_stop)


def _with_local_vars(inventory: dict, extra: dict) -> dict:
    """A copy of a YAML-style inventory whose local-connection hosts also carry `extra`."""
    def group(g: dict) -> dict:
        g = dict(g or {})
        if g.get("hosts"):
            g["hosts"] = {name: {**(v or {}), **extra} if (v or {}).get("ansible_connection") == "local" else v
                          for name, v in g["hosts"].items()}
        if g.get("children"):
            g["children"] = {name: group(child) for name, child in g["children"].items()}
        return g

    return {name: group(g) for name, g in inventory.items()}


def _collection_dirs(collections_path: str) -> list[str]:
    """The absolute directories of ANSIBLE_COLLECTIONS_PATH, which a sandboxed run must see."""
    return [p for p in collections_path.split(os.pathsep) if os.path.isabs(p) and os.path.isdir(p)]


def _run_env(env: dict[str, str], private: Path, collections_path: str) -> dict[str, str]:
    kept = {k: v for k, v in env.items()
            if k in _ENV_KEEP or k in _ENV_KEEP_RUNNER or k.startswith(_ENV_KEEP_PREFIXES)}
    # The ansible-playbook beside this Python, not whichever comes first on PATH.
    bin_dir = os.path.dirname(sys.executable)
    if os.access(os.path.join(bin_dir, "ansible-playbook"), os.X_OK):
        kept["PATH"] = os.pathsep.join(filter(None, [bin_dir, kept.get("PATH")]))
    paths = [collections_path, kept.get("ANSIBLE_COLLECTIONS_PATH")
             or "~/.ansible/collections:/usr/share/ansible/collections"]
    kept.update({
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(paths),
        "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        # Results larger than this reach the runner empty; the output cap applies later.
        "MAX_EVENT_RES": str(EVENT_RESULT_LIMIT),
    })
    return kept


def _write(private: Path, relpath: str, content: str, mode: int) -> None:
    if Path(relpath).is_absolute() or ".." in Path(relpath).parts:
        raise ValueError(f"file {relpath!r} would land outside the private directory")
    path = private / relpath
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, mode)
        handle.write(content)


class _Unsafe(str):
    pass


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(_Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data)))


def _mark_unsafe(value):
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, dict):
        # Keys stay plain: they are names cloudcron chose (hosts, variables, credential fields).
        return {k: _mark_unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark_unsafe(v) for v in value]
    return value


def _unsafe_yaml(data: dict) -> str:
    # No line folding: a value split over lines could not be recognised (and redacted) should
    # Ansible ever quote this file in an error.
    return yaml.dump(_mark_unsafe(data), Dumper=_UnsafeDumper, sort_keys=False, allow_unicode=True,
                     width=float("inf"))
