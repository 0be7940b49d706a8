"""Render the playbook, inventory, extra variables and files of one playbook run.

Pure: nothing here touches the network, the database or the clock; the only I/O is reading
the templates in playbooks/. Executing a Rendered is web/runner.py's job.

Conventions shared with web/runner.py:

- Every inventory host carries ``cloudcron_run_id`` and either ``cloudcron_machine_key`` (a
  machine reached over SSH) or ``cloudcron_machines`` (a cloud: provider machine id -> machine
  key), so results are keyed by (run id, machine key) and machines of several runs can share
  one play. A cloud host that serves several runs of a batch carries ``cloudcron_runs`` instead:
  provider machine id -> [[run id, machine key], ...] (a machine two runs name is acted on once,
  and its result goes to both).
- Relative paths in host variables (key files, control sockets) are relative to the private
  directory the run executes in, which is Ansible's working directory there.
- ``Rendered.result_task`` names the task whose result completes a machine; None means a
  machine's result is only known when the playbook ends (user Ansible scripts, which may
  rescue their own failures).
- A script host with ``cloudcron_time_limit`` runs its script under coreutils ``timeout`` on
  the machine: a result with rc 124 or 137 that took at least that long was stopped there.
- A machine that several executable-script runs of a batch reach with the same SSH identity and time
  limit is one host carrying ``cloudcron_jobs`` ([[run id, machine key, time limit or 0], ...])
  instead of a run id and machine key: its script is a launcher (playbooks/launcher.sh.j2) that runs every job's
  script side by side and reports each one (web/results.py, parse_launcher_report). Ansible's
  cost is per inventory host, so a batch of 100 runs on 10 machines costs what 10 hosts cost.
"""
from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml

from .validation import is_host, is_ssh_user

TEMPLATES = Path(__file__).resolve().parent.parent / "playbooks"
POWER_STATES = ("started", "stopped", "restarted", "absent")
EXEC_TYPES = ("executable", "ansible")
RESULT_TASK = "cloudcron result"

# Host key checking is off for run targets: cloud machines are recreated with new host keys
# at the same address all the time, and cloudcron has no channel to learn the new key
# beforehand. IdentitiesOnly keeps ssh from offering any key but the machine's own (never the
# worker user's keys). Connection multiplexing saves most of the CPU of a multi-step task;
# the runner ends the masters when the run ends.
SSH_COMMON_ARGS = (
    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
    "-o IdentitiesOnly=yes -o LogLevel=ERROR"
)
SSH_ARGS = "-o ControlMaster=auto -o ControlPersist=30s"
CONTROL_DIR = "cp"
KEY_DIR = "keys"
FILES_DIR = "files"
# Seconds between the TERM a script gets at its time limit on the machine and the KILL.
REMOTE_KILL_AFTER = 5
# coreutils timeout's exit statuses: the command was sent TERM, or KILL after --kill-after.
TIMEOUT_STATUSES = (124, 137)
# Bytes of each stream kept of a script's output (the runner's default; CLOUDCRON_OUTPUT_CAP).
DEFAULT_OUTPUT_CAP = 256 * 1024
# Jobs a launcher runs at once on one machine; the rest wait for a lane. Ansible's own forks bound
# how many machines are worked on at once, this bounds how many scripts start on one of them.
LAUNCHER_LANES = 20
# Characters of a task result above which ansible-runner hands the runner an empty result (its
# MAX_EVENT_RES, which web/runner.py sets to this). A launcher's result carries every job's report.
EVENT_RESULT_LIMIT = 64 * 1024 * 1024
_SAFE_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    # Our own delimiters, so Ansible's {{ }} in the templates is left for run time.
    block_start_string="[%", block_end_string="%]",
    variable_start_string="[[", variable_end_string="]]",
    comment_start_string="[#", comment_end_string="#]",
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


class RenderError(ValueError):
    """The run cannot be rendered from what was stored (permanent: retrying will not help)."""


@dataclass(frozen=True)
class SshTarget:
    """One machine reached over SSH."""

    run_id: str
    key: str  # our machine id, unique per run
    host: str
    port: int
    user: str
    private_key: str = field(repr=False)  # PEM/OpenSSH text; never logged
    time_limit: int | None = None  # seconds the script may run on the machine, see remote_time_limit
    org_id: str = ""  # the run's org: runs of different orgs never share an SSH connection or a launcher


@dataclass(frozen=True)
class CloudTargets:
    """Machines of one libcloud cloud that one run brings to a power state."""

    run_id: str
    provider: str
    credentials: dict = field(repr=False)
    options: dict
    machines: dict[str, str]  # provider machine_id -> our machine key
    cloud_id: str = ""  # our cloud id: runs of a batch on the same cloud and state share one task
    state: str | None = None  # the power state, when runs of different actions are rendered together


@dataclass
class Rendered:
    """Everything one ansible-playbook run needs; extravars and files may hold secrets."""

    playbook: str
    inventory: dict
    extravars: dict = field(repr=False)
    files: dict[str, tuple[str, int]] = field(repr=False)  # relpath in the private dir -> (content, mode)
    expected: list[tuple[str, str]]  # (run_id, key) of every machine a result is due for
    result_task: str | None = RESULT_TASK
    task_timeout: int | None = None  # Ansible's own per-task time limit (ANSIBLE_TASK_TIMEOUT), seconds


def remote_time_limit(timeout: float) -> int:
    """Seconds a script may run on a machine in a run of `timeout` seconds.

    A little under the run's timeout: the time to connect and copy the script comes before
    the limit starts, and after it the script module still has to remove its copy of the
    script from the machine before the run's deadline stops the playbook. The margin is a
    quarter of the timeout, at least 15 s and at most 60 s, and never more than half of it.
    """
    margin = min(max(timeout / 4, 15.0), 60.0, timeout / 2)
    return max(1, int(timeout - margin))


def _time_limit_wrapper(limit: int) -> str:
    """The script module's `executable`: run the script under coreutils timeout when the machine has it.

    The script module appends the script's path and the parameters, which reach the wrapper as
    $0 and $@. timeout signals the script's whole process group; a machine without timeout
    runs the script as before, without a limit.
    """
    return ("sh -c 'if command -v timeout >/dev/null 2>&1; then "
            f"exec timeout -k {REMOTE_KILL_AFTER} {int(limit)} \"$0\" \"$@\"; fi; exec \"$0\" \"$@\"'")


def render_power(state: str | None, clouds: list[CloudTargets], call_timeout: float | None = None,
                 denied_networks: list[str] | tuple | None = None, concurrency: int | None = None,
                 verify_seconds: float | None = None) -> Rendered:
    """Render one task per cloud and power state that calls cloudcron.scheduler.machine.

    state applies to every CloudTargets without a state of its own. CloudTargets of several runs with
    the same cloud_id and state become one host (one module call over all their machines, the provider
    listed once); without a cloud_id each CloudTargets is a host of its own. call_timeout (seconds) and
    denied_networks (CIDR strings) and concurrency (machines acted on at once per cloud) are the server's
    provider limits, passed to the module; left out, the module's defaults apply. verify_seconds: how long the
    module waits for each machine to reach its end state (CLOUDCRON_VERIFY_SECONDS; 0 or None: no check)."""
    if not clouds:
        raise RenderError("a power run needs at least one cloud")
    groups: dict[tuple, list[CloudTargets]] = {}
    for index, cloud in enumerate(clouds):
        cloud_state = cloud.state or state
        if cloud_state not in POWER_STATES:
            raise RenderError(f"state must be one of {', '.join(POWER_STATES)}, not {cloud_state!r}")
        if not cloud.machines:
            raise RenderError(f"cloud {index} of run {cloud.run_id} has no machines")
        groups.setdefault((cloud.cloud_id or f"#{index}", cloud_state), []).append(cloud)
    hosts: dict[str, dict] = {}
    credentials: dict[str, dict] = {}
    expected: list[tuple[str, str]] = []
    for index, ((_, cloud_state), members) in enumerate(groups.items()):
        first = members[0]
        name = f"cloud-{index}"
        host = {
            "ansible_connection": "local",
            "cloudcron_run_id": first.run_id,
            "cloudcron_provider": first.provider,
            "cloudcron_driver_options": dict(first.options or {}),
            "cloudcron_state": cloud_state,
        }
        if len(members) == 1:
            host["cloudcron_machines"] = dict(first.machines)
            host["cloudcron_machine_ids"] = list(first.machines)
        else:
            runs: dict[str, list[list[str]]] = {}
            for member in members:
                for machine_id, key in member.machines.items():
                    runs.setdefault(machine_id, []).append([member.run_id, key])
            host["cloudcron_runs"] = runs
            host["cloudcron_machine_ids"] = list(runs)
        if call_timeout is not None:
            host["cloudcron_call_timeout"] = float(call_timeout)
        if denied_networks is not None:
            host["cloudcron_denied_networks"] = list(denied_networks)
        if concurrency is not None:
            host["cloudcron_concurrency"] = int(concurrency)
        if verify_seconds:
            host["cloudcron_verify_seconds"] = float(verify_seconds)
        hosts[name] = host
        credentials[name] = dict(first.credentials or {})
        for member in members:
            expected.extend((member.run_id, key) for key in member.machines.values())
    return Rendered(
        playbook=_env.get_template("power.yml.j2").render(result_task=RESULT_TASK),
        inventory={"all": {"hosts": hosts}},
        extravars={"cloudcron_credentials": credentials},
        files={},
        expected=expected,
    )


@dataclass(frozen=True)
class ScriptTarget:
    """One machine of an executable-script run in a batch: the machine, and the run's script and parameters."""

    target: SshTarget
    script: str = field(repr=False)
    params: str = ""


def render_executables(items: list[ScriptTarget], output_cap: int = DEFAULT_OUTPUT_CAP) -> Rendered:
    """One play running each machine's own executable script (runs of a batch may differ in script and params).

    Items that reach a machine with the same SSH identity (org, address, port, user and key; see
    _identity) and have the same time limit become one host (see _launcher_key), up to launcher_jobs_max
    of them: alone, the item's script runs there directly; two or more, a launcher runs all of them side
    by side (see the module docstring). output_cap: bytes of each stream a launcher sends back per job
    (the runner keeps the same cap of a script run directly)."""
    if not items:
        raise RenderError("a script run needs at least one machine")
    files: dict[str, tuple[str, int]] = {}
    groups: dict[tuple, list[ScriptTarget]] = {}
    for index, item in enumerate(items):
        groups.setdefault(_launcher_key(item, index), []).append(item)
    hosts: dict[str, dict] = {}
    identities: dict[tuple, int] = {}
    per_launcher = launcher_jobs_max(output_cap)
    chunks = [group[i:i + per_launcher] for group in groups.values() for i in range(0, len(group), per_launcher)]
    for group in chunks:
        name, host = _ssh_host(group[0].target, len(hosts), hosts, files, identities)
        if len(group) == 1:
            item = group[0]
            script_name = _file_name(item.script)
            files[f"{FILES_DIR}/{script_name}"] = (item.script, 0o600)
            host["cloudcron_script_cmd"] = f"{script_name} {item.params}" if item.params else script_name
            if item.target.time_limit:
                host["cloudcron_time_limit"] = int(item.target.time_limit)
                host["cloudcron_script_executable"] = _time_limit_wrapper(item.target.time_limit)
        else:
            launcher = _launcher(group, output_cap)
            launcher_name = _file_name(launcher)
            files[f"{FILES_DIR}/{launcher_name}"] = (launcher, 0o600)
            del host["cloudcron_run_id"], host["cloudcron_machine_key"]
            host["cloudcron_jobs"] = [[i.target.run_id, i.target.key, int(i.target.time_limit or 0)] for i in group]
            host["cloudcron_script_cmd"] = launcher_name
        hosts[name] = host
    playbook = _env.get_template("script.yml.j2").render(result_task=RESULT_TASK)
    return Rendered(playbook, {"all": {"hosts": hosts}}, {}, files, [(i.target.run_id, i.target.key) for i in items])


def launcher_jobs_max(output_cap: int) -> int:
    """Jobs one launcher may carry so that its result stays under EVENT_RESULT_LIMIT with every job at the cap.

    output_cap: bytes kept per stream per job. The script module's result holds the launcher's report
    twice (stdout and stdout_lines, each line quoted), and od writes 16 bytes per line of 49 characters;
    a quarter of the limit is left for od formats that pad more. Runs past this many on one machine get
    several launchers, which run at the same time."""
    per_stream = (max(int(output_cap), 2) // 16 + 1) * (49 * 2 + 4) + 64
    return max(1, (EVENT_RESULT_LIMIT * 3 // 4) // (2 * per_stream + 256))


def _launcher_key(item: ScriptTarget, index: int) -> tuple:
    """Which items may share a launcher: the same SSH identity and the same time limit.

    A launcher's results arrive together, when its last job ends, so a job may hold its siblings'
    results until its own end: only with the same limit does every sibling's result come back by its
    own deadline (the limit is under each run's timeout, remote_time_limit). An item without a limit
    could hold the others for ever, so it runs alone (index keeps its key unique)."""
    limit = int(item.target.time_limit or 0)
    return (_identity(item.target), limit) if limit else (_identity(item.target), 0, index)


def _file_name(text: str) -> str:
    # A name no one writes by chance: Ansible swaps its first occurrence in the command line for
    # the uploaded path, so it must not also appear inside the parameters.
    return "cloudcron-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _launcher(group: list[ScriptTarget], output_cap: int) -> str:
    """The launcher script running every item's script on their one machine (playbooks/launcher.sh.j2)."""
    scripts: dict[str, str] = {}  # script text -> file name in the launcher's directory
    jobs = []
    for index, item in enumerate(group):
        script = scripts.setdefault(item.script, f"s{len(scripts)}")
        # shlex.quote gives one POSIX shell word: the parameters reach the job as one argument, which
        # the job evaluates (see the template).
        jobs.append({"index": index, "script": script, "limit": int(item.target.time_limit or 0),
                     "params": shlex.quote(item.params)})
    cap = max(int(output_cap), 2)
    return _env.get_template("launcher.sh.j2").render(
        scripts=[(name, shlex.quote(text)) for text, name in scripts.items()],
        lanes=[jobs[i::LAUNCHER_LANES] for i in range(min(LAUNCHER_LANES, len(jobs)))],
        jobs=jobs, cap=cap, head=cap - cap // 2, tail=cap // 2, kill_after=REMOTE_KILL_AFTER)


def render_script(exec_type: str, script: str, params: str, targets: list[SshTarget]) -> Rendered:
    """Render a run of a user's script (an executable, or Ansible tasks or plays) on each target."""
    if exec_type not in EXEC_TYPES:
        raise RenderError(f"exec_type must be one of {', '.join(EXEC_TYPES)}, not {exec_type!r}")
    if not targets:
        raise RenderError("a script run needs at least one machine")
    if exec_type == "executable":
        return render_executables([ScriptTarget(t, script, params) for t in targets])
    files: dict[str, tuple[str, int]] = {}
    hosts = _ssh_hosts(targets, files)
    expected = [(t.run_id, t.key) for t in targets]
    kind, text = _user_ansible(script)
    user_file = f"{FILES_DIR}/cloudcron-user-{kind}.yml"
    files[user_file] = (text, 0o600)
    playbook = _env.get_template("ansible_tasks.yml.j2").render(kind=kind, user_file=user_file)
    limits = [int(t.time_limit) for t in targets if t.time_limit]
    # Ansible's task timeout is one setting per playbook run: the shortest limit of its runs.
    return Rendered(playbook, {"all": {"hosts": hosts}}, {}, files, expected, result_task=None,
                    task_timeout=min(limits) if limits else None)


def _identity(target: SshTarget) -> tuple:
    """Who reaches which machine how: entries with the same identity share a key file and an ssh master."""
    key_text = target.private_key if target.private_key.endswith("\n") else target.private_key + "\n"
    return (target.org_id, target.host, int(target.port), target.user, hashlib.sha256(key_text.encode()).hexdigest())


def _ssh_hosts(targets: list[SshTarget], files: dict[str, tuple[str, int]]) -> dict[str, dict]:
    hosts: dict[str, dict] = {}
    identities: dict[tuple, int] = {}
    for index, target in enumerate(targets):
        name, host = _ssh_host(target, index, hosts, files, identities)
        hosts[name] = host
    return hosts


def _ssh_host(target: SshTarget, index: int, hosts: dict[str, dict], files: dict[str, tuple[str, int]],
              identities: dict[tuple, int]) -> tuple[str, dict]:
    """The inventory name and variables of one entry reaching target; its key file is added to files.

    hosts: the entries so far (names stay unique); identities: identity -> key file number, so far.
    Entries of a batch that reach the same machine as the same user with the same key (and org) share one
    key file and one ssh master: one authentication per machine, not per run."""
    # Both reach ssh's command line: the worker checks them, this keeps any other caller honest.
    if not is_host(target.host) or not is_ssh_user(target.user):
        raise RenderError(f"machine {target.key}: host {target.host!r} or user {target.user!r} "
                          "is not a plain host name or address and user name")
    # The machine key reads well in Ansible's output; the index keeps names unique when a
    # machine appears twice or its key is not a plain name.
    name = target.key if _SAFE_HOSTNAME.match(target.key) else f"m{index}"
    while name in hosts:
        name = f"m{index}-{name}"
    identity = _identity(target)
    slot = identities.get(identity)
    if slot is None:
        slot = identities[identity] = len(identities)
        key_text = target.private_key if target.private_key.endswith("\n") else target.private_key + "\n"
        files[f"{KEY_DIR}/{slot}"] = (key_text, 0o600)
    return name, {
        "ansible_host": target.host,
        "ansible_port": int(target.port),
        "ansible_user": target.user,
        "ansible_ssh_private_key_file": f"{KEY_DIR}/{slot}",
        # Without a TTY the remote stdout and stderr come back as separate streams.
        "ansible_ssh_use_tty": False,
        "ansible_host_key_checking": False,
        "ansible_ssh_common_args": SSH_COMMON_ARGS,
        "ansible_ssh_args": SSH_ARGS,
        "ansible_control_path_dir": CONTROL_DIR,
        # One master per identity (address, port, user and key): two entries with the same address
        # but different keys must not share an authenticated connection. Relative to the private
        # directory, because a socket path must fit in 108 bytes wherever base_dir is.
        "ansible_control_path": f"{CONTROL_DIR}/{slot}",
        "ansible_pipelining": True,
        "ansible_python_interpreter": "auto_silent",
        "cloudcron_run_id": target.run_id,
        "cloudcron_machine_key": target.key,
    }


class _Tagged:
    """A YAML scalar with a tag such as !unsafe or !vault, kept as written."""

    def __init__(self, tag: str, value: str, style: str | None):
        self.tag, self.value, self.style = tag, value, style


class _UserLoader(yaml.SafeLoader):
    pass


class _UserDumper(yaml.SafeDumper):
    pass


def _construct_tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> _Tagged:
    if not isinstance(node, yaml.ScalarNode):
        raise RenderError(f"the ansible script uses the tag {node.tag} on a collection; only scalar tags are kept")
    return _Tagged(node.tag, node.value, node.style)


_UserLoader.add_multi_constructor("!", _construct_tagged)
_UserDumper.add_representer(_Tagged, lambda dumper, data: dumper.represent_scalar(data.tag, data.value, style=data.style))

_PLAY_KEYS = {"hosts", "import_playbook", "ansible.builtin.import_playbook"}


def _user_ansible(script: str) -> tuple[str, str]:
    """Tell a task list from a playbook; return ("tasks", text) or ("playbook", text with hosts set)."""
    try:
        data = yaml.load(script, Loader=_UserLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RenderError(f"the ansible script is not valid YAML: {exc}") from exc
    if not isinstance(data, list) or not data or not all(isinstance(item, dict) for item in data):
        raise RenderError("the ansible script must be a YAML list of tasks or a list of plays")
    plays = [bool(_PLAY_KEYS & item.keys()) for item in data]
    if not any(plays):
        # Kept byte for byte: nothing of the user's text needs changing.
        return "tasks", script
    if not all(plays):
        raise RenderError("the ansible script mixes plays and tasks; write a list of tasks or a list of plays")
    for play in data:
        if _PLAY_KEYS & (play.keys() - {"hosts"}):
            raise RenderError("the ansible script may not import other playbooks: only its own text is sent")
        # The run decides the machines, whatever the play names.
        play["hosts"] = "all"
    return "playbook", yaml.dump(data, Dumper=_UserDumper, sort_keys=False, allow_unicode=True)
