#!/usr/bin/env python
"""Run benchmark (issue 3): overhead of a cloudcron run over bare ansible-playbook, and idle worker memory.

One moto EC2 server (tests/harness/moto.py) on loopback and one real cloudcron server process
(`python -m web serve`, API + dispatcher + Huey worker, as tests/harness/service.py starts it) serve
every round. Each round runs the four variants back to back, interleaved, so a slow moment of a
shared machine lands on all of them:

a  cloudcron, 1 machine: a one_off schedule that stops one running EC2 machine, due a couple of
   seconds ahead; the run is polled through GET /api/v1/runs/<id>.
   fire-to-finished = run.finished_at - run.scheduled_for (dispatcher lateness, Huey pick-up,
   claim, target resolution through libcloud, rendering, ansible-runner, recording, all included).
b  bare, 1 machine: the same playbook that web.playbooks.render_power renders for that stop,
   written with its inventory and extra variables to a temp dir and run as
   `ansible-playbook -i inventory.yml playbook.yml -e @extravars.json`
   (ANSIBLE_COLLECTIONS_PATH -> a tree where cloudcron.scheduler is this checkout). Wall time of
   the process, start to exit.
c  cloudcron, 50 machines: as a, with 50 machines in one schedule (one run, one task).
d  baseline for c: a plain Python loop of libcloud stop_node over the same 50 machines (driver
   built and the nodes listed once, as the module does) plus one bare `ansible-playbook` start-up of
   a trivial localhost playbook (gather_facts false, one debug task).

Machines are started again (boto3 start_instances) before every variant. Reported: medians of each
variant, a/b (target <= 1.3) and c/d (target <= 2.0).

Worker RSS: `python -m web worker` on a fresh data dir, idle for --idle seconds, then VmRSS from
/proc/<pid>/status (plus any child processes); target < 200 MB.

    python bench/bench_runs.py                # 5 rounds
    python bench/bench_runs.py --quick        # 2 rounds, shorter idle wait
    python bench/bench_runs.py --profile      # also profile one in-process 1-machine run (cProfile)

Writes bench/results/runs.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
TARGETS = {"one_ratio": 1.3, "fifty_ratio": 2.0, "worker_rss_mb": 200.0}
LEAD_SECONDS = 2.0  # a one_off is due this far ahead (whole seconds: the API takes "%Y-%m-%d %H:%M:%S")
FIFTY = 50

TRIVIAL_PLAYBOOK = """- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: start-up only
      ansible.builtin.debug:
        msg: hello
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def median(values):
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------- moto

class Moto:
    """A moto server process (python -m tests.harness.moto PORT_FILE), stopped by pid."""

    def __init__(self, workdir: Path):
        from tests.harness.moto import MotoServer, _wait_ready

        port_file, log_file = workdir / "moto.port", workdir / "moto.log"
        self._log = open(log_file, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.harness.moto", str(port_file)], cwd=str(ROOT),
                                     env=_env(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.server = MotoServer("127.0.0.1", _wait_ready(self.proc, port_file, log_file))

    def start(self, ids: list[str]) -> None:
        """Bring machines back to running (moto moves stopped -> running at once)."""
        self.server.ec2.start_instances(InstanceIds=ids)

    def states(self, ids: list[str]) -> dict[str, str]:
        out = {}
        for r in self.server.ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for i in r["Instances"]:
                out[i["InstanceId"]] = i["State"]["Name"]
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _assert_all(moto: Moto, ids: list[str], wanted: set[str], what: str) -> None:
    states = moto.states(ids)
    bad = {m: s for m, s in states.items() if s not in wanted}
    if bad or len(states) != len(ids):
        raise RuntimeError(f"{what}: machines not in {sorted(wanted)}: {dict(list(bad.items())[:5])}")


# ----------------------------------------------------------------------------- cloudcron side

def _parse(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def cloudcron_stop(server, cloud_id: str, ids: list[str], name: str) -> dict:
    """One one_off stop of ids through the real server; returns fire-to-finished and the run's times."""
    when = (datetime.now(timezone.utc) + timedelta(seconds=LEAD_SECONDS + 1)).replace(microsecond=0)
    status, sch = server.api("POST", "schedules", {
        "name": name, "action": "stop", "machines_per_cloud": [[cloud_id, m] for m in ids],
        "schedule_type": "one_off", "schedule_entry": when.strftime("%Y-%m-%d %H:%M:%S")})
    if status != 200:
        raise RuntimeError(f"schedule not created: {status} {sch}")
    deadline = time.monotonic() + LEAD_SECONDS + 120
    run = None
    while time.monotonic() < deadline:
        status, runs = server.api("GET", f"schedules/{sch['id']}/runs")
        done = [r for r in runs if r["status"] not in ("queued", "running")] if status == 200 else []
        if done:
            run = done[0]
            break
        time.sleep(0.05)
    if run is None:
        raise RuntimeError(f"no finished run of {name}:\n{server.log()}")
    if run["status"] != "succeeded":
        _, full = server.api("GET", f"runs/{run['id']}")
        raise RuntimeError(f"run of {name} ended {run['status']}: {run.get('error')} {full}")
    fired, started, finished = (_parse(run[k]) for k in ("scheduled_for", "started_at", "finished_at"))
    return {"fire_to_finished_s": (finished - fired).total_seconds(),
            "fire_to_started_s": (started - fired).total_seconds(),
            "started_to_finished_s": (finished - started).total_seconds()}


# ----------------------------------------------------------------------------- bare side

def write_bare(moto: Moto, ids: list[str], workdir: Path) -> Path:
    """The playbook, inventory and extravars cloudcron renders for stopping ids, in a dir of their own."""
    import yaml

    from web.playbooks import CloudTargets, render_power

    rendered = render_power("stopped", [CloudTargets(
        run_id="bench", provider="ec2", credentials=dict(moto.server.credentials), options=dict(moto.server.options),
        machines={m: f"k{i}" for i, m in enumerate(ids)})])
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "playbook.yml").write_text(rendered.playbook)
    (workdir / "inventory.yml").write_text(yaml.safe_dump(rendered.inventory))
    (workdir / "extravars.json").write_text(json.dumps(rendered.extravars))
    return workdir


def ansible_playbook(workdir: Path, collections: Path, args: list[str]) -> float:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_RETRY_FILES_ENABLED": "0",
           "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([str(BIN / "ansible-playbook"), *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-playbook {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return elapsed


def bare_stop(workdir: Path, collections: Path) -> float:
    return ansible_playbook(workdir, collections, ["-i", "inventory.yml", "playbook.yml", "-e", "@extravars.json"])


def loop_stop(moto: Moto, ids: list[str], trivial_dir: Path, collections: Path) -> dict:
    """Plain libcloud: build the driver, list the nodes once, stop_node each; then one bare ansible start-up."""
    from plugins.module_utils._libcloud import get_driver

    t0 = time.perf_counter()
    driver = get_driver("ec2", dict(moto.server.credentials), dict(moto.server.options))
    wanted = set(ids)
    nodes = [n for n in driver.list_nodes() if n.id in wanted]
    for node in nodes:
        if driver.stop_node(node) is False:
            raise RuntimeError(f"stop_node refused {node.id}")
    loop = time.perf_counter() - t0
    if len(nodes) != len(ids):
        raise RuntimeError(f"listed {len(nodes)} of {len(ids)} machines")
    startup = ansible_playbook(trivial_dir, collections, ["-i", "localhost,", "playbook.yml"])
    return {"loop_s": loop, "ansible_startup_s": startup, "total_s": loop + startup}


# ----------------------------------------------------------------------------- worker RSS

def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
                out.extend(_children(int(entry.name)))
    return out


def worker_rss(workdir: Path, idle: float) -> dict:
    data = workdir / "worker-data"
    data.mkdir(parents=True)
    log_path = workdir / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "web", "worker"], cwd=str(ROOT),
                                env={**_env(), "CLOUDCRON_DATA_DIR": str(data)},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(min(2.0, idle))  # start-up (imports, migrations) is not idle time
        cpu0, t0 = _cpu_ticks(proc.pid), time.monotonic()
        time.sleep(max(idle - 2.0, 0.5))
        cpu_pct = 100.0 * (_cpu_ticks(proc.pid) - cpu0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        kids = _children(proc.pid)
        main_kb = _rss_kb(proc.pid)
        kids_kb = sum(_rss_kb(k) for k in kids)
        with open(f"/proc/{proc.pid}/status") as fh:
            hwm = next((int(l.split()[1]) for l in fh if l.startswith("VmHWM:")), 0)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"idle_s": idle, "pid_rss_mb": round(main_kb / 1024, 1), "children": len(kids),
            "children_rss_mb": round(kids_kb / 1024, 1), "total_rss_mb": round((main_kb + kids_kb) / 1024, 1),
            "peak_rss_mb": round(hwm / 1024, 1), "idle_cpu_pct": round(cpu_pct, 2)}


# ----------------------------------------------------------------------------- profile

def profile_one(moto: Moto, workdir: Path, n: int = 1, top: int = 25) -> str:
    """cProfile one n-machine run in-process (Dispatcher.claim + web.worker.execute_run); the top cumulative lines.

    In-process, so the API, dispatcher and worker share the bench's interpreter: this splits the worker's
    time (claim, prepare = target resolution + render, execute = ansible-runner, finish), it is not a/c.
    """
    import cProfile
    import io
    import pstats

    os.environ["CLOUDCRON_DATA_DIR"] = str(workdir / f"profile-data-{n}")
    from web import make_state
    from web.dispatcher import Dispatcher
    from web.migrate import upgrade
    from web.worker import execute_run

    state = make_state()
    upgrade(state.db)
    from web import create_app
    from web.__main__ import first_start

    app = create_app(state=state).test_client()
    token = first_start(state)
    hdr = {"Authorization": token}
    cloud = app.post("/api/v1/clouds", json={"title": "aws", "provider": "ec2", "credentials": dict(moto.server.credentials),
                                             "options": moto.server.options}, headers=hdr).get_json()
    if not isinstance(cloud, dict) or "id" not in cloud:
        return f"profile skipped: cloud not created: {cloud}"
    mids = moto.server.create_machines(n)
    when = (datetime.now(timezone.utc) + timedelta(seconds=2)).replace(microsecond=0)
    sch = app.post("/api/v1/schedules", json={"name": "p", "action": "stop", "machines_per_cloud": [[cloud["id"], m] for m in mids],
                                        "schedule_type": "one_off",
                                        "schedule_entry": when.strftime("%Y-%m-%d %H:%M:%S")}, headers=hdr)
    if sch.status_code != 200:
        return f"profile skipped: schedule not created: {sch.status_code} {sch.get_json()}"
    ids: list[str] = []
    dispatcher = Dispatcher(state, lambda run_ids: None)  # claim() returns the run ids; nothing is enqueued
    deadline = time.monotonic() + 30
    while not ids:
        if time.monotonic() > deadline:
            return "profile skipped: the one_off was never claimed"
        ids.extend(dispatcher.claim(datetime.now(timezone.utc)))
        time.sleep(0.01)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    status = execute_run(state, ids[0])
    prof.disable()
    elapsed = time.perf_counter() - t0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(r"web/|runner|_libcloud|subprocess", top)
    return f"{n} machine(s): execute_run -> {status} in {elapsed:.3f} s (in-process)\n" + buf.getvalue()


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 3 s idle for the RSS reading")
    parser.add_argument("--rounds", type=int, help="rounds of the four variants (default 5, --quick 2)")
    parser.add_argument("--idle", type=float, help="seconds the worker idles before its RSS is read (default 10)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one in-process run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "runs.json"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    idle = args.idle if args.idle is not None else (3.0 if args.quick else 10.0)

    from tests.harness.collection import make_collections_path
    from tests.harness.service import start_service

    tmp = Path(tempfile.mkdtemp(prefix="cloudcron-bench-runs-"))
    moto = server = None
    samples = {"a": [], "b": [], "c": [], "d": []}
    try:
        collections = make_collections_path(tmp / "collections")
        trivial = tmp / "trivial"
        trivial.mkdir()
        (trivial / "playbook.yml").write_text(TRIVIAL_PLAYBOOK)
        moto = Moto(tmp)
        server = start_service(tmp / "data")
        status, cloud = server.api("POST", "clouds", {"title": "aws", "provider": "ec2",
                                                      "credentials": dict(moto.server.credentials),
                                                      "options": moto.server.options})
        if status != 200:
            raise RuntimeError(f"cloud not created: {status} {cloud}")
        [one] = moto.server.create_machines(1)
        fifty = moto.server.create_machines(FIFTY)
        bare_one = write_bare(moto, [one], tmp / "bare-one")
        # Warm-up, not counted: first imports, the OS page cache, the server's first libcloud listing.
        bare_stop(bare_one, collections)
        moto.start([one])
        cloudcron_stop(server, cloud["id"], [one], "warm-up")
        for r in range(rounds):
            moto.start([one])
            _assert_all(moto, [one], {"running", "pending"}, "before a")
            samples["a"].append(cloudcron_stop(server, cloud["id"], [one], f"one-{r}"))
            _assert_all(moto, [one], {"stopping", "stopped"}, "after a")
            moto.start([one])
            _assert_all(moto, [one], {"running", "pending"}, "before b")
            samples["b"].append(bare_stop(bare_one, collections))
            _assert_all(moto, [one], {"stopping", "stopped"}, "after b")
            moto.start(fifty)
            samples["c"].append(cloudcron_stop(server, cloud["id"], fifty, f"fifty-{r}"))
            _assert_all(moto, fifty, {"stopping", "stopped"}, "after c")
            moto.start(fifty)
            _assert_all(moto, fifty, {"running", "pending"}, "before d")
            samples["d"].append(loop_stop(moto, fifty, trivial, collections))
            _assert_all(moto, fifty, {"stopping", "stopped"}, "after d")
            print(f"round {r + 1}/{rounds}: a {samples['a'][-1]['fire_to_finished_s']:.3f} s  "
                  f"b {samples['b'][-1]:.3f} s  c {samples['c'][-1]['fire_to_finished_s']:.3f} s  "
                  f"d {samples['d'][-1]['total_s']:.3f} s", file=sys.stderr, flush=True)
        server.stop()
        server = None
        profile = "\n".join(profile_one(moto, tmp, n) for n in (1, FIFTY)) if args.profile else None
        rss = worker_rss(tmp, idle)
    finally:
        if server is not None:
            server.stop()
        if moto is not None:
            moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    a = median([s["fire_to_finished_s"] for s in samples["a"]])
    b = median(samples["b"])
    c = median([s["fire_to_finished_s"] for s in samples["c"]])
    d = median([s["total_s"] for s in samples["d"]])
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg": os.getloadavg()},
        "method": "real server process (python -m web serve) for a and c: one_off schedules, "
                  "fire-to-finished = run.finished_at - run.scheduled_for; b and d are wall times of subprocesses",
        "rounds": rounds,
        "targets": TARGETS,
        "one_machine": {
            "cloudcron_s": a, "bare_ansible_s": b, "ratio": a / b,
            "cloudcron_fire_to_started_s": median([s["fire_to_started_s"] for s in samples["a"]]),
            "cloudcron_started_to_finished_s": median([s["started_to_finished_s"] for s in samples["a"]]),
            "samples": {"cloudcron": samples["a"], "bare_ansible": samples["b"]},
            "meets_target": a / b <= TARGETS["one_ratio"],
        },
        "fifty_machines": {
            "cloudcron_s": c, "baseline_s": d, "ratio": c / d,
            "baseline_loop_s": median([s["loop_s"] for s in samples["d"]]),
            "baseline_ansible_startup_s": median([s["ansible_startup_s"] for s in samples["d"]]),
            "cloudcron_fire_to_started_s": median([s["fire_to_started_s"] for s in samples["c"]]),
            "cloudcron_started_to_finished_s": median([s["started_to_finished_s"] for s in samples["c"]]),
            "samples": {"cloudcron": samples["c"], "baseline": samples["d"]},
            "meets_target": c / d <= TARGETS["fifty_ratio"],
        },
        "worker_rss": {**rss, "meets_target": rss["total_rss_mb"] < TARGETS["worker_rss_mb"]},
    }
    if profile:
        report["profile"] = profile
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    one, many, w = report["one_machine"], report["fifty_machines"], report["worker_rss"]
    print(f"\nrun benchmark, {rounds} round(s), medians (s)")
    print(f"{'':34}{'cloudcron':>10}{'baseline':>10}{'ratio':>8}{'target':>8}  ok")
    print(f"{'stop 1 machine (a / b)':34}{a:10.3f}{b:10.3f}{one['ratio']:8.2f}{'<=1.3':>8}  {one['meets_target']}")
    print(f"{'stop 50 machines (c / d)':34}{c:10.3f}{d:10.3f}{many['ratio']:8.2f}{'<=2.0':>8}  {many['meets_target']}")
    print(f"  a: fire->started {one['cloudcron_fire_to_started_s']:.3f}, started->finished "
          f"{one['cloudcron_started_to_finished_s']:.3f}")
    print(f"  c: fire->started {many['cloudcron_fire_to_started_s']:.3f}, started->finished "
          f"{many['cloudcron_started_to_finished_s']:.3f}")
    print(f"  d: libcloud loop {many['baseline_loop_s']:.3f} + ansible start-up {many['baseline_ansible_startup_s']:.3f}")
    print(f"{'worker RSS idle ' + str(w['idle_s']) + ' s (MB)':34}{w['total_rss_mb']:10.1f}{'':10}{'':8}"
          f"{'<200':>8}  {w['meets_target']}  (pid {w['pid_rss_mb']}, {w['children']} children "
          f"{w['children_rss_mb']}, peak {w['peak_rss_mb']}, idle CPU {w['idle_cpu_pct']}%)")
    if profile:
        print("\n" + profile)
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
