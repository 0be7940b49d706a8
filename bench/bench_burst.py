#!/usr/bin/env python
"""Burst benchmark (issue 8): many single-machine schedules due at the same instant, on the embedded default.

One moto EC2 server (tests/harness/moto.py) on loopback; each variant gets a fresh real cloudcron
server process (`python -m web serve`: API, dispatcher and worker threads over SQLite, as
tests/harness/service.py starts it), so no variant inherits another's backlog.

power, for each N (default 100 and 1000):
  batched   N one_off schedules, each stopping one running EC2 machine, all due at one instant T.
            fire-to-last = the last run's finished_at - T (the runs are written after the machine was
            asked to stop, so this bounds the last stop from above). Then every schedule must have
            exactly one run, succeeded, with exactly one per-machine result, succeeded, and every
            machine must be stopped at moto: lost, doubled and unrecorded runs are counted.
  floor     measured in the same round on N other machines of the same endpoint: a bare libcloud loop
            (driver built, nodes listed once, stop_node each) plus one empty ansible-playbook start.
  unbatched the batched workload again with CLOUDCRON_BATCHING=off (one run per playbook). Runs that
            wait longer than their misfire_grace (300 s) are recorded `missed` by design; the table
            counts them. At N=1000 it takes many minutes, so it runs only with --full.
  Target: batched N=1000 within 3x the floor, 0 lost or doubled, every per-machine result recorded.

script: 100 executable-script schedules spread over 10 real sshd targets (10 per target), due at
  once, against one bare ansible-playbook running the same script over those 10 hosts (the playbook
  cloudcron renders, written out and run directly). Target: within 2x.

Schedules are written through web.schedules.build into the server's database (the API's own checks
and next_run_at), in one transaction, so that creating 1,000 of them does not take longer than the
lead time before T.

    python bench/bench_burst.py                  # N = 100 and 1000, script burst
    python bench/bench_burst.py --quick          # N = 20, script burst of 20 over 4 targets
    python bench/bench_burst.py --full           # also batching off at N = 1000

Writes bench/results/burst.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_runs import TRIVIAL_PLAYBOOK, Moto, _parse, ansible_playbook, loop_stop  # noqa: E402

TARGETS = {"power_ratio_at_1000": 3.0, "script_ratio": 2.0}
LEAD_SECONDS = 4.0  # T is this long after the schedules are committed
SCRIPT = "#!/bin/sh\necho \"burst $(hostname) $1\"\n"


# ----------------------------------------------------------------------------- the server side

class Burst:
    """A fresh cloudcron server (its own data dir) and the bench's own handle on its database."""

    def __init__(self, workdir: Path, env: dict):
        from tests.harness.service import start_service
        from web import make_state
        from web.config import load_config

        self.data = workdir / "data"
        self.server = start_service(self.data, env=env)
        self.state = make_state(load_config({"CLOUDCRON_DATA_DIR": str(self.data)}))
        from web.models import Org

        with self.state.db.session() as s:
            self.org_id = s.query(Org).filter_by(name="test").one().id

    def api(self, *args):
        return self.server.api(*args)

    def schedules_due_at(self, bodies: list[dict]) -> tuple[datetime, list[str]]:
        """Store one one_off schedule per body, all due at one instant T; returns (T, ids)."""
        from web.crypto import new_id
        from web.models import Schedule
        from web.schedules import build, next_run_at

        now = datetime.now(timezone.utc)
        # Whole seconds: the API's one_off format has no fraction. Leaves room to write N rows first.
        at = (now + timedelta(seconds=LEAD_SECONDS + len(bodies) / 500)).replace(microsecond=0) + timedelta(seconds=1)
        ids = []
        with self.state.db.transaction() as s:
            for i, body in enumerate(bodies):
                values = build(s, self.org_id, {"name": f"burst-{i}-{new_id()[:6]}", "schedule_type": "one_off",
                                                "schedule_entry": at.strftime("%Y-%m-%d %H:%M:%S"), **body},
                               None, now, timedelta(seconds=1))
                sch = Schedule(id=new_id(), org_id=self.org_id, total_run_count=0, created_at=now, updated_at=now,
                               **values)
                sch.next_run_at = next_run_at(sch, now)
                s.add(sch)
                ids.append(sch.id)
        if datetime.now(timezone.utc) >= at:
            raise RuntimeError("writing the schedules took longer than the lead time")
        return at, ids

    def wait_final(self, schedule_ids: list[str], timeout: float) -> None:
        """Poll the database until every schedule has a finished run (or timeout)."""
        db = sqlite3.connect(f"file:{self.data / 'cloudcron.db'}?mode=ro", uri=True, timeout=30)
        try:
            deadline = time.monotonic() + timeout
            ids = list(schedule_ids)
            marks = ",".join("?" * len(ids))
            while time.monotonic() < deadline:
                done = db.execute(f"SELECT count(DISTINCT schedule_id) FROM runs WHERE schedule_id IN ({marks}) "
                                  "AND status NOT IN ('queued', 'running')", ids).fetchone()[0]
                if done >= len(ids):
                    return
                time.sleep(0.25)
        finally:
            db.close()

    def outcome(self, schedule_ids: list[str], at: datetime) -> dict:
        """Fire-to-last, and the bookkeeping: runs per schedule, statuses, per-machine results."""
        from sqlalchemy import func, select

        from web.models import Run, RunMachine

        with self.state.db.session() as s:
            runs = s.execute(select(Run.id, Run.schedule_id, Run.status, Run.finished_at, Run.started_at)
                             .where(Run.schedule_id.in_(schedule_ids))).all()
            per_run = dict(s.execute(select(RunMachine.run_id, func.count()).where(
                RunMachine.run_id.in_([r.id for r in runs]), RunMachine.status == "succeeded")
                .group_by(RunMachine.run_id)).all())
        by_schedule: dict[str, int] = {}
        statuses: dict[str, int] = {}
        for r in runs:
            by_schedule[r.schedule_id] = by_schedule.get(r.schedule_id, 0) + 1
            statuses[r.status] = statuses.get(r.status, 0) + 1
        finished = [r.finished_at for r in runs if r.finished_at is not None and r.status == "succeeded"]
        started = [r.started_at for r in runs if r.started_at is not None]
        return {
            "fire_to_last_s": (max(finished) - at).total_seconds() if finished else None,
            "fire_to_first_started_s": (min(started) - at).total_seconds() if started else None,
            "fire_to_last_started_s": (max(started) - at).total_seconds() if started else None,
            "batches": len(set(started)),  # runs claimed together share their started_at
            "statuses": statuses,
            "lost": sum(1 for sid in schedule_ids if by_schedule.get(sid, 0) == 0),
            "doubled": sum(1 for n in by_schedule.values() if n > 1),
            "results_recorded": sum(1 for r in runs if per_run.get(r.id) == 1),
        }

    def stop(self) -> None:
        self.server.stop()
        self.state.db.dispose()


# ----------------------------------------------------------------------------- power

def power_burst(moto: Moto, workdir: Path, machines: list[str], batching: bool, timeout: float) -> dict:
    burst = Burst(workdir, {"CLOUDCRON_BATCHING": "on" if batching else "off"})
    try:
        status, cloud = burst.api("POST", "clouds", {"title": "aws", "provider": "ec2",
                                                     "credentials": dict(moto.server.credentials),
                                                     "options": moto.server.options})
        if status != 200:
            raise RuntimeError(f"cloud not created: {status} {cloud}")
        at, ids = burst.schedules_due_at([{"action": "stop", "machines_per_cloud": [[cloud["id"], m]]}
                                          for m in machines])
        burst.wait_final(ids, timeout=(at - datetime.now(timezone.utc)).total_seconds() + timeout)
        out = burst.outcome(ids, at)
        states = moto.states(machines)
        out["machines_stopped"] = sum(1 for m in machines if states.get(m) in ("stopped", "stopping"))
        return out
    finally:
        burst.stop()


# ----------------------------------------------------------------------------- script

class SshHosts:
    """`count` real sshd servers on loopback accepting one client key (tests/harness/sshd.py's pieces)."""

    def __init__(self, workdir: Path, count: int):
        import pwd

        from tests.harness.sshd import _keygen, _start_one

        self.procs = []
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        _keygen(workdir / "client", "cloudcron-bench")
        keys = workdir / "authorized_keys"
        keys.write_text((workdir / "client.pub").read_text())
        self.private_key = (workdir / "client").read_text()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.ports = []
        for i in range(count):
            host_dir = workdir / f"host{i}"
            host_dir.mkdir()
            proc, port = _start_one(host_dir, keys)
            self.procs.append(proc)
            self.ports.append(port)

    def stop(self) -> None:
        from tests.harness.sshd import _stop

        for proc in self.procs:
            _stop(proc)


def script_burst(workdir: Path, hosts: SshHosts, runs: int, timeout: float) -> dict:
    burst = Burst(workdir, {})
    try:
        _, key = burst.api("POST", "keys", {"name": "bench", "private": hosts.private_key})
        _, lab = burst.api("POST", "clouds", {"title": "lab", "provider": "other"})
        machines = []
        for i, port in enumerate(hosts.ports):
            status, m = burst.api("POST", f"clouds/{lab['id']}/machines", {
                "name": f"t{i}", "host": "127.0.0.1", "port": port, "ssh_user": hosts.user, "key_id": key["id"]})
            if status != 200:
                raise RuntimeError(f"machine not created: {status} {m}")
            machines.append(m["id"])
        status, script = burst.api("POST", "scripts", {"name": "burst", "script": SCRIPT})
        if status != 200:
            raise RuntimeError(f"script not created: {status} {script}")
        at, ids = burst.schedules_due_at([{
            "script_id": script["id"], "params": f"run{i}",
            "selectors": [{"type": "machines", "ids": [machines[i % len(machines)]]}]} for i in range(runs)])
        burst.wait_final(ids, timeout=(at - datetime.now(timezone.utc)).total_seconds() + timeout)
        return burst.outcome(ids, at)
    finally:
        burst.stop()


def bare_script(workdir: Path, hosts: SshHosts, collections: Path, entries: int | None = None) -> float:
    """The play cloudcron renders for the script over the hosts, run by ansible-playbook.

    One run per host, or `entries` runs spread over the hosts (what a batch of that many runs renders: the runs
    that share a host share its launcher)."""
    import yaml

    from web.playbooks import SshTarget, remote_time_limit, render_script
    from web.schedules import DEFAULTS

    count = entries or len(hosts.ports)
    # The time limit the burst's schedules get (the default timeout): runs share a launcher only with the same one.
    limit = remote_time_limit(DEFAULTS["timeout"])
    rendered = render_script("executable", SCRIPT, "bare", [
        SshTarget(run_id=f"bare{i}", key=f"t{i}", host="127.0.0.1", port=hosts.ports[i % len(hosts.ports)],
                  user=hosts.user, private_key=hosts.private_key, time_limit=limit) for i in range(count)])
    workdir.mkdir(parents=True, exist_ok=True)
    for rel, (content, mode) in rendered.files.items():
        path = workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    (workdir / "playbook.yml").write_text(rendered.playbook)
    (workdir / "inventory.yml").write_text(yaml.safe_dump(rendered.inventory))
    return ansible_playbook(workdir, collections, ["-i", "inventory.yml", "playbook.yml"])


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 20; 20 script runs over 4 targets")
    parser.add_argument("--full", action="store_true", help="also batching off at the largest N")
    parser.add_argument("--sizes", help="comma-separated N (default 100,1000; --quick 20)")
    parser.add_argument("--parts", default="power,script", help="which bursts to run (default power,script)")
    parser.add_argument("--script-runs", type=int, help="script runs (default 100; --quick 20)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a burst may take after T")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "burst.json"))
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else ([20] if args.quick else [100, 1000])
    script_runs, script_hosts = (20, 4) if args.quick else (100, 10)
    script_runs = args.script_runs or script_runs
    parts = set(args.parts.split(","))
    if "power" not in parts:
        sizes = []

    from tests.harness.collection import make_collections_path

    tmp = Path(tempfile.mkdtemp(prefix="cloudcron-bench-burst-"))
    moto = hosts = None
    power, script = [], {}
    try:
        collections = make_collections_path(tmp / "collections")
        trivial = tmp / "trivial"
        trivial.mkdir()
        (trivial / "playbook.yml").write_text(TRIVIAL_PLAYBOOK)
        moto = Moto(tmp)
        ansible_playbook(trivial, collections, ["-i", "localhost,", "playbook.yml"])  # warm-up, not counted
        for n in sizes:
            machines, others = moto.server.create_machines(n), moto.server.create_machines(n)
            row = {"n": n}
            row["floor"] = loop_stop(moto, others, trivial, collections)
            print(f"N={n}: floor {row['floor']['total_s']:.2f} s", file=sys.stderr, flush=True)
            row["batched"] = power_burst(moto, tmp / f"on-{n}", machines, True, args.timeout)
            print(f"N={n}: batched {row['batched']}", file=sys.stderr, flush=True)
            if n == max(sizes) and n > 100 and not args.full:
                row["unbatched"] = None  # see --full
            else:
                moto.start(machines)
                row["unbatched"] = power_burst(moto, tmp / f"off-{n}", machines, False, args.timeout)
                print(f"N={n}: unbatched {row['unbatched']}", file=sys.stderr, flush=True)
            row["ratio"] = (row["batched"]["fire_to_last_s"] or float("inf")) / row["floor"]["total_s"]
            power.append(row)
        if "script" in parts:
            script = _script_part(tmp, script_hosts, script_runs, collections, args.timeout)
            hosts = script.pop("hosts")
    finally:
        if hosts is not None:
            hosts.stop()
        if moto is not None:
            moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return _report(args, power, script)


def _script_part(tmp: Path, script_hosts: int, script_runs: int, collections: Path, timeout: float) -> dict:
    hosts = SshHosts(tmp / "sshd", script_hosts)
    try:
        bare_script(tmp / "bare-script-warm", hosts, collections)  # warm-up: host keys, page cache
        script = {"runs": script_runs, "targets": script_hosts,
                  "bare_s": bare_script(tmp / "bare-script", hosts, collections),
                  "batched": script_burst(tmp / "script", hosts, script_runs, timeout),
                  # The playbook a batch of script_runs runs renders (one launcher host per target), run bare:
                  # what is left of the ratio beyond it is cloudcron's own (dispatch, claim, plan, record).
                  "bare_entries_s": bare_script(tmp / "bare-entries", hosts, collections, script_runs)}
    except BaseException:
        hosts.stop()
        raise
    script["ratio"] = (script["batched"]["fire_to_last_s"] or float("inf")) / script["bare_s"]
    script["hosts"] = hosts
    return script


def _report(args, power: list, script: dict) -> int:
    biggest = power[-1] if power else None
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg": os.getloadavg()},
        "method": "fresh `python -m web serve` (SQLite) per variant; N one_off schedules due at T; "
                  "fire-to-last = max(run.finished_at) - T; floor = libcloud loop + one empty ansible-playbook",
        "targets": TARGETS,
        "power": power,
        "script": script,
        "meets_target": {
            "power": biggest is None or biggest["n"] < 1000 or (biggest["ratio"] <= TARGETS["power_ratio_at_1000"]
                                             and biggest["batched"]["lost"] == biggest["batched"]["doubled"] == 0
                                             and biggest["batched"]["results_recorded"] == biggest["n"]),
            "script": not script or script["ratio"] <= TARGETS["script_ratio"],
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    print("\nburst benchmark: N single-machine stops due at one instant (s from T to the last run finished)")
    print(f"{'N':>6}{'batched':>10}{'floor':>9}{'ratio':>8}{'unbatched':>11}  lost/doubled/recorded  unbatched statuses")
    for row in power:
        b, u = row["batched"], row["unbatched"]
        unb = f"{u['fire_to_last_s']:11.2f}" if u and u["fire_to_last_s"] is not None else f"{'-':>11}"
        print(f"{row['n']:6d}{b['fire_to_last_s']:10.2f}{row['floor']['total_s']:9.2f}{row['ratio']:8.2f}{unb}"
              f"  {b['lost']}/{b['doubled']}/{b['results_recorded']}"
              f"{'':>10}{u['statuses'] if u else 'not run (--full)'}")
    if not script:
        print(f"\nwritten to {out}")
        return 0
    b = script["batched"]
    print(f"script: {script['runs']} runs on {script['targets']} sshd targets {b['fire_to_last_s']:.2f} s, "
          f"one bare ansible-playbook over the targets {script['bare_s']:.2f} s, ratio {script['ratio']:.2f} "
          f"(target <= {TARGETS['script_ratio']}); lost/doubled/recorded {b['lost']}/{b['doubled']}/"
          f"{b['results_recorded']}")
    print(f"        the batch's own playbook ({script['runs']} runs, {script['targets']} launcher hosts) run bare "
          f"{script['bare_entries_s']:.2f} s")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
