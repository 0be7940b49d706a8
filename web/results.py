"""Collecting per-machine results from ansible-runner events: a pure function of the events.

A Recorder is fed the event dicts ansible-runner produces (runner_on_ok, runner_on_failed,
runner_on_unreachable, playbook_on_stats ...) and turns them into one MachineResult per
(run id, machine key) the rendered playbook expects (see web/playbooks.py for the host variables
that carry those keys). It reads no clock but the deadlines it is given, touches no database
and no network: tests feed it recorded events.

Several runs may share one playbook run (a batch): each run may have a deadline of its own;
when it passes, that run's machines still without a result end `timed_out` and the playbook
goes on for the others (Recorder.run_timeouts names the runs that timed out, with why).
Results are handed on in groups (on_results), once per event, so that they can be written in
one transaction per event rather than one per machine.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

from .playbooks import TIMEOUT_STATUSES
from .scrub import clean_text

ERROR_TAIL_CHARS = 4000
TRUNCATED = "\n[cloudcron: {omitted} bytes of output truncated]\n"
_RESULT_EVENTS = {"runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"}
_OUTPUT_EVENTS = {"verbose", "error", "warning", "system_warning", "deprecated"}


@dataclass
class MachineResult:
    """What one machine's part of a run came to."""

    status: str  # "succeeded" | "failed" | "unreachable" | "timed_out" | "interrupted"
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    duration: float | None = None
    changed: bool | None = None
    state: str | None = None  # power runs: the machine's state as the cloud reported it


def inventory_hosts(inventory: dict) -> dict[str, dict]:
    """Every host of a YAML-style inventory dict with its variables (groups walked recursively)."""
    hosts: dict[str, dict] = {}

    def walk(group: dict) -> None:
        for name, hostvars in (group.get("hosts") or {}).items():
            hosts.setdefault(name, {}).update(hostvars or {})
        for child in (group.get("children") or {}).values():
            walk(child or {})

    for group in inventory.values():
        walk(group or {})
    return hosts


class _Capped:
    """Text that keeps its first and last bytes within a byte budget and counts what it dropped."""

    def __init__(self, cap: int):
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> None:
        if text:
            text = clean_text(text)
            self.parts.append(text)
            self.size += len(text)
            if self.size > 4 * self.cap + 4096:
                # Bound memory for chatty hosts; the final cap below still decides what is kept.
                joined = cap_text("".join(self.parts), 2 * self.cap)
                self.parts, self.size = [joined], len(joined)

    def text(self) -> str:
        return cap_text("".join(self.parts), self.cap)


def cap_text(text: str, cap: int) -> str:
    """Keep text within cap bytes of UTF-8: its head and tail around a visible truncation marker."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= cap:
        return text
    return _cut(data[:cap - cap // 2], data[len(data) - cap // 2:] if cap // 2 else b"", len(data), cap)


def _cut(head: bytes, tail: bytes, size: int, cap: int) -> str:
    """The capped form of `size` bytes, given at least their first cap - cap // 2 and last cap // 2 bytes."""
    marker = TRUNCATED.format(omitted=size - cap)
    room = max(cap - len(marker.encode()), 0)
    keep_head, keep_tail = room - room // 2, room // 2
    marker = TRUNCATED.format(omitted=size - keep_head - keep_tail)
    return (head[:keep_head].decode("utf-8", errors="ignore") + marker
            + (tail[len(tail) - keep_tail:].decode("utf-8", errors="ignore") if keep_tail else ""))


@dataclass
class LauncherJob:
    """One job of a launcher's report (playbooks/launcher.sh.j2): exit status, timing and capped output."""

    rc: int | None  # None: the job left no exit status (it was killed with its launcher)
    duration: float | None  # seconds, from the machine's clock
    precise: bool  # the machine's clock gave fractions of a second
    stdout: str
    stderr: str


def parse_launcher_report(text: str, cap: int) -> dict[int, LauncherJob]:
    """Read a launcher's report: {job index: LauncherJob} for every job it reported completely.

    The report is, per job: `cloudcron-job <i>`, `<rc> <start> <end>` (or `none`), then `stdout` and
    `stderr`, each followed by `size <bytes>` and the first and last bytes of the stream as od hex
    lines. Output beyond cap bytes is cut as cap_text cuts it. A job whose part is cut short or
    malformed is left out (its machine then gets a result saying so); so is everything after
    `cloudcron-end`."""
    jobs: dict[int, LauncherJob] = {}
    lines = text.splitlines()
    pos = 0

    def stream(label: str) -> str | None:
        nonlocal pos
        if pos + 1 >= len(lines) or lines[pos].strip() != label or not lines[pos + 1].startswith("size "):
            return None
        try:
            size = int(lines[pos + 1].split()[1])
        except (IndexError, ValueError):
            return None
        pos += 2
        digits = []
        while pos < len(lines) and lines[pos] and not lines[pos].lstrip().startswith(("cloudcron-", "stdout", "stderr")):
            digits.append(lines[pos])
            pos += 1
        try:
            data = bytes.fromhex("".join(digits).replace(" ", ""))
        except ValueError:
            return None
        if size <= cap or len(data) < cap:
            raw = data.decode("utf-8", errors="surrogateescape")
            return _text(raw)
        return clean_text(_cut(data[:cap - cap // 2], data[cap - cap // 2:], size, cap))

    while pos < len(lines):
        line = lines[pos].strip()
        pos += 1
        if line == "cloudcron-end":
            break
        if not line.startswith("cloudcron-job "):
            continue
        try:
            index = int(line.split()[1])
        except (IndexError, ValueError):
            continue
        status = lines[pos].split() if pos < len(lines) else []
        pos += 1
        stdout = stream("stdout")
        stderr = stream("stderr") if stdout is not None else None
        if stderr is None:
            continue
        rc, duration, precise = None, None, False
        if len(status) == 3 and status[0].lstrip("-").isdigit():
            rc = int(status[0])
            (start, exact_start), (end, exact_end) = _seconds(status[1]), _seconds(status[2])
            if start is not None and end is not None:
                duration, precise = max(end - start, 0.0), exact_start and exact_end
        jobs[index] = LauncherJob(rc, duration, precise, stdout, stderr)
    return jobs


def _seconds(value: str) -> tuple[float | None, bool]:
    """A `date +%s.%N` reading and whether it has fractions: a date without %N leaves text after the point."""
    whole, _, fraction = value.partition(".")
    if not whole.isdigit():
        return None, False
    exact = fraction.isdigit()
    return (float(f"{whole}.{fraction}") if exact else float(whole)), exact


class HostLog:
    """What one SSH host reported so far, for playbooks whose result is only known at the end."""

    def __init__(self, cap: int):
        self.display = _Capped(cap)
        self.stderr = _Capped(cap)
        self.rc: int | None = None
        self.changed = False
        self.duration = 0.0
        self.status: str | None = None  # "failed" | "unreachable" once seen
        self.error: str | None = None


class Recorder:
    """Turns ansible-runner events into per-machine results and hands each one on once."""

    def __init__(self, rendered, output_cap: int, on_result=None, deadline: float | None = None,
                 cancel: threading.Event | None = None, *, on_results=None,
                 run_timeouts: dict[str, float] | None = None, clock: Callable[[], float] = time.monotonic):
        """rendered: a web.playbooks.Rendered; output_cap: bytes kept of each stream per machine.

        on_result(run_id, key, MachineResult) is called for each result, or on_results([(run_id, key,
        MachineResult), ...]) once per event with the results it completed. deadline (clock() seconds)
        stops the whole playbook; run_timeouts ({run_id: seconds from now}) times out one run of a
        shared playbook: its machines without a result end `timed_out`, the others go on."""
        self.cap = output_cap
        self.cancel = cancel
        self.cancelled = False
        self.on_result = on_result
        self.on_results = on_results
        self.clock = clock
        self.deadline = deadline
        start = clock()
        self.run_deadlines = {rid: (start + float(sec), float(sec)) for rid, sec in (run_timeouts or {}).items()
                              if sec is not None}
        self.run_timeouts: dict[str, str] = {}  # run id -> why it timed out
        self.done_early = False  # every machine has a result because runs timed out: the playbook was stopped
        self.pending: list[tuple[str, str, MachineResult]] = []
        self.result_task = rendered.result_task
        self.hosts = inventory_hosts(rendered.inventory)
        self.host_of = {_pair(v): h for h, v in self.hosts.items() if "cloudcron_machine_key" in v}
        self.expected = list(dict.fromkeys(tuple(e) for e in rendered.expected))
        self.runs = list(dict.fromkeys(rid for rid, _ in self.expected))
        self.results: dict[tuple[str, str], MachineResult] = {}
        self.logs: dict[str, HostLog] = {}
        self.tail: deque[str] = deque()
        self.tail_size = 0
        self.saw_stats = False
        self.stats: dict = {}
        self.timed_out = False
        self.remote_timed_out = 0.0  # the time limit a script was stopped at on a machine, if one was
        self.callback_error: BaseException | None = None

    # ansible-runner calls these two from its read loop; an exception escaping them would leave
    # ansible-playbook running, so both catch everything and stop the run instead.
    def should_stop(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
        elif self.deadline is not None and self.clock() > self.deadline:
            self.timed_out = True
        elif self.run_deadlines:
            try:
                self.expire_runs()
            except Exception as exc:  # noqa: BLE001 - see on_event
                if self.callback_error is None:
                    self.callback_error = exc
        return self.cancelled or self.timed_out or self.done_early or self.callback_error is not None

    def expire_runs(self) -> None:
        """Time out each run whose own deadline passed; once every machine has a result, stop."""
        now = self.clock()
        expired = False
        for rid, (deadline, seconds) in list(self.run_deadlines.items()):
            if now > deadline:
                del self.run_deadlines[rid]
                if all(pair in self.results for pair in self.expected if pair[0] == rid):
                    continue  # every machine of the run ended in time: the playbook goes on for others
                error = f"the run timed out after {seconds:g} s"
                self.run_timeouts.setdefault(rid, error)
                self.fail_rest(error, status="timed_out", run_id=rid)
                expired = True
        if expired and all(pair in self.results for pair in self.expected):
            self.done_early = True

    def on_event(self, event: dict) -> bool:
        try:
            self._handle(event)
            self.flush()
        except Exception as exc:  # noqa: BLE001 - see should_stop
            if self.callback_error is None:
                self.callback_error = exc
        return False  # no event files on disk: everything needed is kept in memory

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind in _RESULT_EVENTS:
            self._host_result(kind, data, event.get("stdout") or "")
        elif kind == "playbook_on_stats":
            self.saw_stats = True
            self.stats = data
        elif kind in _OUTPUT_EVENTS:
            self._keep_tail(event.get("stdout") or "")

    def _keep_tail(self, text: str) -> None:
        if not text:
            return
        self.tail.append(text)
        self.tail_size += len(text)
        while self.tail_size > ERROR_TAIL_CHARS and len(self.tail) > 1:
            self.tail_size -= len(self.tail.popleft())

    def output_tail(self) -> str:
        lines = (t.replace("\r", "").strip() for t in self.tail)
        return clean_text("\n".join(line for line in lines if line)[-ERROR_TAIL_CHARS:])

    def _host_result(self, kind: str, data: dict, display: str) -> None:
        host = data.get("host")
        hostvars = self.hosts.get(host)
        if hostvars is None:
            return
        res = data.get("res") or {}
        if not isinstance(res, dict):
            res = {}
        duration = data.get("duration")
        if "cloudcron_machines" in hostvars or "cloudcron_runs" in hostvars:
            self._cloud_result(kind, data, hostvars, res, duration)
            return
        if "cloudcron_jobs" in hostvars:
            self._launcher_result(kind, data, hostvars, res, duration)
            return
        pair = _pair(hostvars)
        if pair in self.results:
            return
        if self.result_task is None:
            self._log_user_task(host, kind, data, res, display)
            return
        if kind == "runner_on_unreachable":
            self._deliver(pair, MachineResult("unreachable", error=_msg(res, "the machine is unreachable"),
                                              duration=duration))
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            self._deliver(pair, MachineResult(
                "failed", rc=res.get("rc"), stdout=cap_text(_text(res.get("stdout")), self.cap),
                stderr=cap_text(_text(res.get("stderr")), self.cap), error=_msg(res, "the task failed"),
                duration=duration, changed=res.get("changed")))
        elif kind == "runner_on_ok" and data.get("task") == self.result_task:
            self._script_result(pair, res.get("rc"), _text(res.get("stdout")), _text(res.get("stderr")), duration,
                                res.get("changed"), hostvars.get("cloudcron_time_limit"), failed=bool(res.get("failed")),
                                msg=_msg(res, "the script did not run"))

    def _cloud_result(self, kind, data, hostvars, res, duration) -> None:
        machines = cloud_pairs(hostvars)  # provider machine id -> [(run_id, key), ...]
        every = [pair for pairs in machines.values() for pair in pairs]
        if kind == "runner_on_unreachable":
            for pair in every:
                self._deliver(pair, MachineResult(
                    "unreachable", error=_msg(res, "the cloud could not be reached"), duration=duration))
            return
        if kind not in ("runner_on_ok", "runner_on_failed") or data.get("task") != self.result_task:
            if kind == "runner_on_failed" and not data.get("ignore_errors"):
                for pair in every:
                    self._deliver(pair, MachineResult("failed", error=_msg(res, "the task failed"),
                                                      duration=duration))
            return
        for entry in res.get("results") or []:
            failed = bool(entry.get("failed"))
            msg = _text(entry.get("msg"))
            for pair in machines.get(str(entry.get("machine_id")), ()):
                self._deliver(pair, MachineResult(
                    "failed" if failed else "succeeded", stdout=cap_text(msg, self.cap),
                    error=(msg or "the cloud action failed") if failed else None,
                    duration=duration, changed=entry.get("changed"), state=entry.get("state")))
        for pair in every:
            # The module failed before it got to these machines (bad credentials, no such region).
            self._deliver(pair, MachineResult(
                "failed", error=_msg(res, "the cloud reported no result for this machine"), duration=duration))

    def _launcher_result(self, kind, data, hostvars, res, duration) -> None:
        """The results of a launcher host's jobs (web/playbooks.py), one per run, from its report."""
        jobs = [(str(rid), str(key), int(limit or 0)) for rid, key, limit in hostvars["cloudcron_jobs"]]
        if kind == "runner_on_unreachable":
            for rid, key, _ in jobs:
                self._deliver((rid, key), MachineResult("unreachable", error=_msg(res, "the machine is unreachable"),
                                                        duration=duration))
            return
        if kind == "runner_on_failed" and not data.get("ignore_errors"):
            for rid, key, _ in jobs:
                self._deliver((rid, key), MachineResult(
                    "failed", rc=res.get("rc"), stderr=cap_text(_text(res.get("stderr")), self.cap),
                    error=_msg(res, "the task failed"), duration=duration))
            return
        if kind != "runner_on_ok" or data.get("task") != self.result_task:
            return
        report = parse_launcher_report(_text(res.get("stdout")), self.cap)
        why = _text(res.get("stderr")).strip()[-ERROR_TAIL_CHARS:]
        for index, (rid, key, limit) in enumerate(jobs):
            job = report.get(index)
            if job is None or job.rc is None:
                error = "the script's result did not come back from the machine" + (
                    f" (exit status {res.get('rc')})" if res.get("rc") else "") + (f": {why}" if why else "")
                self._deliver((rid, key), MachineResult("failed", rc=res.get("rc"), stderr=cap_text(why, self.cap),
                                                        error=error, duration=duration))
                continue
            self._script_result((rid, key), job.rc, job.stdout, job.stderr, job.duration, True, limit,
                                # A machine clock in whole seconds may read a limit of 10 s as 9.
                                slack=0.0 if job.precise else 1.0)

    def _script_result(self, pair, rc, stdout, stderr, duration, changed, limit, slack=0.0, failed=False,
                       msg: str | None = None) -> None:
        """A script's result from its exit status: succeeded, failed, or timed_out at its time limit."""
        ok = rc == 0 and not failed
        status = "succeeded" if ok else "failed"
        if ok:
            error = None
        elif rc is None:
            error = msg or "the script did not run"
        elif limit and rc in TIMEOUT_STATUSES and float(duration or 0) + slack >= float(limit):
            # Only the time limit ends a script with these statuses after that long.
            status, error = "timed_out", f"the script ran past its time limit of {limit} s and was stopped"
            self.remote_timed_out = float(limit)
            self.run_timeouts.setdefault(pair[0], f"the run timed out: a script ran past its time limit of "
                                                  f"{float(limit):g} s on a machine")
        else:
            error = f"the script exited with status {rc}"
        self._deliver(pair, MachineResult(status, rc=rc, stdout=cap_text(stdout, self.cap),
                                          stderr=cap_text(stderr, self.cap), error=error, duration=duration,
                                          changed=changed))

    def _log_user_task(self, host: str, kind: str, data: dict, res: dict, display: str) -> None:
        hlog = self.logs.setdefault(host, HostLog(self.cap))
        # ansible-playbook writes to a pseudo-terminal, hence the \r\n.
        hlog.display.add(f"TASK [{data.get('task') or ''}]\n{display.replace(chr(13), '').strip()}\n")
        if isinstance(res.get("stderr"), str):
            hlog.stderr.add(res["stderr"] if res["stderr"].endswith("\n") or not res["stderr"]
                            else res["stderr"] + "\n")
        if isinstance(res.get("rc"), int):
            hlog.rc = res["rc"]
        hlog.changed = hlog.changed or bool(res.get("changed"))
        hlog.duration += float(data.get("duration") or 0.0)
        if kind == "runner_on_unreachable" and not data.get("ignore_unreachable"):
            hlog.status, hlog.error = "unreachable", _msg(res, "the machine is unreachable")
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            hlog.status, hlog.error = "failed", _msg(res, f"task {data.get('task')!r} failed")

    def finish_from_stats(self) -> None:
        """Complete machines whose result was only known at the end of the playbook."""
        stats = self.stats
        for host, hlog in self.logs.items():
            pair = _pair(self.hosts[host])
            if stats.get("dark", {}).get(host):
                status = "unreachable"
            elif stats.get("failures", {}).get(host):
                status = "failed"
            elif stats:
                # Failures a rescue block handled do not count, as in Ansible's own recap.
                status = "succeeded"
            else:
                status = hlog.status or "succeeded"
            error = None if status == "succeeded" else (hlog.error or f"the machine is {status}")
            self._deliver(pair, MachineResult(
                status, rc=hlog.rc, stdout=hlog.display.text(), stderr=hlog.stderr.text(), error=error,
                duration=hlog.duration, changed=hlog.changed))
        self.flush()

    def fail_rest(self, error: str, status: str = "failed", run_id: str | None = None) -> None:
        """Give every expected machine (of `run_id` only, if given) still without a result this status and error."""
        for pair in self.expected:
            if run_id is not None and pair[0] != run_id:
                continue
            hlog = self.logs.get(self.host_of.get(pair, ""))
            if hlog is None:
                self._deliver(pair, MachineResult(status, error=error))
            else:
                # Output seen before the playbook stopped is still worth keeping.
                self._deliver(pair, MachineResult(
                    hlog.status or status, rc=hlog.rc, stdout=hlog.display.text(), stderr=hlog.stderr.text(),
                    error=hlog.error or error, duration=hlog.duration, changed=hlog.changed))
        self.flush()

    def all_runs_timed_out(self) -> bool:
        """Whether every run of this playbook timed out (on its deadline or a machine's time limit)."""
        return bool(self.runs) and all(rid in self.run_timeouts for rid in self.runs)

    def _deliver(self, pair: tuple[str, str], result: MachineResult) -> None:
        if pair in self.results:
            return
        # Ansible hands output that is not UTF-8 on as lone surrogates (surrogateescape), which no
        # database stores: the readable part is kept, the rest becomes U+FFFD.
        result = replace(result, stdout=clean_text(result.stdout), stderr=clean_text(result.stderr),
                         error=clean_text(result.error), state=clean_text(result.state))
        self.results[pair] = result
        self.pending.append((pair[0], pair[1], result))

    def flush(self) -> None:
        """Hand the results delivered since the last flush to the caller (one call with on_results)."""
        pending, self.pending = self.pending, []
        if not pending or self.callback_error is not None:
            return
        try:
            if self.on_results is not None:
                self.on_results(pending)
            elif self.on_result is not None:
                for run_id, key, result in pending:
                    self.on_result(run_id, key, result)
        except Exception as exc:  # noqa: BLE001 - raised again by execute once the run is stopped
            self.callback_error = exc


def cloud_pairs(hostvars: dict) -> dict[str, list[tuple[str, str]]]:
    """A cloud host's machines: provider machine id -> [(run id, machine key), ...] (see web/playbooks.py)."""
    if "cloudcron_runs" in hostvars:
        return {str(mid): [(str(rid), str(key)) for rid, key in pairs]
                for mid, pairs in hostvars["cloudcron_runs"].items()}
    run_id = str(hostvars["cloudcron_run_id"])
    return {str(mid): [(run_id, str(key))] for mid, key in hostvars["cloudcron_machines"].items()}


def _pair(hostvars: dict) -> tuple[str, str]:
    return str(hostvars["cloudcron_run_id"]), str(hostvars["cloudcron_machine_key"])


def _text(value) -> str:
    """Output as valid UTF-8 text, cleaned before any cap so that what is cut is counted in bytes of UTF-8."""
    return clean_text(value if isinstance(value, str) else ("" if value is None else str(value)))


def _msg(res: dict, default: str) -> str:
    msg = res.get("msg")
    return msg if isinstance(msg, str) and msg else default
