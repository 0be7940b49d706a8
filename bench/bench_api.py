#!/usr/bin/env python
"""API benchmark (issue 2): request rates of the schedules API as ratios of an authenticated trivial endpoint.

The real server, started the README's way (`python -m web serve`: API, dispatcher and a worker in one
process, the embedded default), in a fresh data dir on SQLite, is driven over loopback by --clients
threads, each with one keep-alive http.client connection, closed-loop (send, read the whole answer,
send again).

Setup     A cloud (provider "other") with one declared machine; --schedules (10,000) schedules stored
          through POST /api/v1/schedules by the same clients (the honest path: validation, next_run_at,
          dispatcher wake-up, commit). Every schedule is an interval of 1 day starting in 2099, so it is
          active (it has a next_run_at) but the dispatcher never has anything due.
Rounds    --rounds rounds of: ping, create, get-one, list-100, list-100-deep, each for --duration
          seconds, interleaved, so that machine noise hits all alike. ping = GET /api/v1/ping (token check
          plus one primary-key read), the unit of the ratios; create = POST /schedules (a new unique name
          each); get-one = GET /schedules/<id> of a random stored schedule; list-100 = GET /schedules
          ?limit=100 (the first page, newest first); list-100-deep (information, no target) = the same at
          a random offset. Per op and round: rate (answers/s), ratio = rate / that round's ping rate,
          latency p50/p99, and the server's CPU use (/proc/<pid>/stat, in cores). The report is the
          median across rounds. Creates made by the rounds stay stored (the count is reported).
Grow      Up to --grow-to (100,000) schedules by bulk insert: the body is checked once by the API's own
          code (web.schedules.parse_fields + build + next_run_at, as POST does), then the rows are written
          with SQLAlchemy ORM bulk inserts (executemany) from this process, in batches of one transaction
          each, beside the running server (SQLite WAL). One more round of every op at that size, which
          also exercises list and get, then the server's VmRSS and VmHWM (peak) from /proc/<pid>/status.

Targets: create >= 0.3, get-one >= 0.5, list-100 >= 0.1 of ping's rate; server RSS < 150 MB at 100,000.

    python bench/bench_api.py            # full: 10,000 then 100,000 schedules, 7 rounds of 2.5 s (~3.5 min)
    python bench/bench_api.py --quick    # smoke: 300 then 2,000 schedules, 2 rounds of 1 s
    python bench/bench_api.py --no-dispatcher   # comparison only: serve without the dispatcher thread
    python bench/bench_api.py --profile DIR     # also py-spy the server per op after the rounds (pip install py-spy)

Writes bench/results/api.json (full run; --quick writes only with --out).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {"create": 0.3, "get-one": 0.5, "list-100": 0.1}
RSS_TARGET_MB = 150.0
OPS = ("ping", "create", "get-one", "list-100", "list-100-deep")
FAR = "2099-01-01T00:00:00Z"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m web serve` in its own data dir; the first start's token is read from its stdout."""

    def __init__(self, data_dir: Path, extra_args: tuple = ()):
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, "CLOUDCRON_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        self.log_path = data_dir.parent / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "web", "--log-level", "WARNING", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), *extra_args],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=self._log)
        self.pid = self.proc.pid
        self.token = self._read_token()
        self._wait_listening()

    def _read_token(self) -> str:
        token = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            if line.startswith("Created org 'default'"):
                token = self.proc.stdout.readline().decode().strip()
            if "cloudcron API on" in line:
                if not token:
                    raise RuntimeError("no first-start token on stdout (data dir not fresh?)")
                return token
        raise RuntimeError("server did not start within 60 s")

    def _wait_listening(self):
        # The "API on" line is printed just before waitress binds: wait (bounded) for the port.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server not listening within 30 s")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def memory_mb(self) -> dict:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._log.close()


# ----------------------------------------------------------------------------- clients

class Client:
    """One keep-alive connection; request() returns (status, headers, body bytes)."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.headers = {"Authorization": token, "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None):
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=self.headers)
                resp = self.conn.getresponse()
                return resp.status, resp.headers, resp.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed the kept-alive connection: reconnect once, then give up.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise

    def json(self, method: str, path: str, body=None):
        status, headers, data = self.request(method, path, json.dumps(body).encode() if body is not None else None)
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:300]!r}")
        return json.loads(data), headers

    def close(self):
        self.conn.close()


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def schedule_body(name: str, cloud_id: str, machine_id: str) -> dict:
    return {"name": name, "description": "api benchmark", "action": "stop",
            "machines_per_cloud": [[cloud_id, machine_id]], "schedule_type": "interval",
            "schedule_entry": {"every": 1, "period": "days"}, "start_after": FAR}


class Bench:
    def __init__(self, server: Server, clients: int, cloud_id: str, machine_id: str):
        self.server = server
        self.clients = [Client(server.port, server.token) for _ in range(clients)]
        self.cloud_id, self.machine_id = cloud_id, machine_id
        self.ids: list[str] = []
        self.total = 0          # schedules stored, as last counted
        self.seq = 0            # for unique names
        self.makers = 0         # for the clients' random seeds

    def _request_maker(self, op: str, worker: int):
        """A function returning (method, path, body) for the next request of `op` on one client."""
        self.makers += 1
        rnd = random.Random(self.makers * 1000 + worker)  # a different sequence of ids/offsets each run
        if op == "ping":
            return lambda: ("GET", "/api/v1/ping", None)
        if op == "get-one":
            ids = self.ids
            return lambda: ("GET", f"/api/v1/schedules/{rnd.choice(ids)}", None)
        if op == "list-100":
            return lambda: ("GET", "/api/v1/schedules?limit=100", None)
        if op == "list-100-deep":
            top = max(self.total - 100, 0)
            return lambda: ("GET", f"/api/v1/schedules?limit=100&offset={rnd.randint(0, top)}", None)
        if op == "create":
            prefix = f"c{self.seq}-{worker}-"
            self.seq += 1
            counter = iter(range(10**9))
            cid, mid = self.cloud_id, self.machine_id
            return lambda: ("POST", "/api/v1/schedules",
                            json.dumps(schedule_body(prefix + str(next(counter)), cid, mid)).encode())
        raise ValueError(op)

    def run(self, op: str, duration: float | None = None, count: int | None = None) -> dict:
        """Drive `op` from every client for `duration` seconds (or `count` requests in all)."""
        makers = [self._request_maker(op, i) for i in range(len(self.clients))]
        latencies: list[list[float]] = [[] for _ in self.clients]
        errors: list[str] = []
        created: list[list[str]] = [[] for _ in self.clients]
        ends = [0.0] * len(self.clients)
        remaining = [count] if count is not None else None
        lock = threading.Lock()
        barrier = threading.Barrier(len(self.clients) + 1)
        box = {}

        def work(i):
            client, make, lat = self.clients[i], makers[i], latencies[i]
            barrier.wait()
            deadline = box["start"] + duration if duration is not None else None
            while True:
                if remaining is not None:
                    with lock:
                        if remaining[0] <= 0:
                            break
                        remaining[0] -= 1
                elif time.perf_counter() >= deadline:
                    break
                method, path, body = make()
                t0 = time.perf_counter()
                try:
                    status, _, data = client.request(method, path, body)
                except Exception as exc:  # noqa: BLE001 - recorded, the run fails below
                    errors.append(f"{method} {path}: {exc!r}")
                    break
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"{method} {path}: HTTP {status}: {data[:200]!r}")
                    break
                if op == "create" and count is not None:
                    created[i].append(json.loads(data)["id"])
            ends[i] = time.perf_counter()

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(self.clients))]
        for t in threads:
            t.start()
        cpu0, own0 = self.server.cpu_seconds(), _own_cpu()
        box["start"] = start = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        elapsed = max(ends) - start
        cpu, own = self.server.cpu_seconds() - cpu0, _own_cpu() - own0
        if errors:
            raise RuntimeError(f"{op}: {len(errors)} failed request(s), first: {errors[0]}\n{self.server.log()}")
        lat = sorted(x for per in latencies for x in per)
        n = len(lat)
        if op == "create":
            self.total += n
        for per in created:
            self.ids.extend(per)
        return {"requests": n, "seconds": round(elapsed, 3), "rate": round(n / elapsed, 1) if elapsed else 0.0,
                "p50_ms": round(lat[n // 2] * 1000, 2) if n else None,
                "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
                "server_cpu_cores": round(cpu / elapsed, 2) if elapsed else None,
                "client_cpu_cores": round(own / elapsed, 2) if elapsed else None}

    def count(self) -> int:
        _, headers = self.clients[0].json("GET", "/api/v1/schedules?limit=1")
        self.total = int(headers["X-Total-Count"])
        return self.total

    def round(self, duration: float) -> dict:
        out = {}
        for op in OPS:
            out[op] = self.run(op, duration=duration)
        for op in OPS:
            out[op]["ratio"] = round(out[op]["rate"] / out["ping"]["rate"], 3)
        return out

    def close(self):
        for c in self.clients:
            c.close()


# ----------------------------------------------------------------------------- bulk growth

def bulk_grow(data_dir: Path, to: int, have: int, cloud_id: str, machine_id: str, batch: int = 10_000) -> tuple[list[str], float]:
    """Insert schedules until `to` are stored: the body checked once by the API's code, rows by ORM bulk insert."""
    os.environ["CLOUDCRON_DATA_DIR"] = str(data_dir)
    from sqlalchemy import insert, select

    from web import make_state, schedules
    from web.crypto import new_id
    from web.models import Org, Schedule

    st = make_state()
    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    with st.db.transaction() as session:
        org_id = session.scalar(select(Org.id).where(Org.name == "default"))
        given = schedules.parse_fields(schedule_body("template", cloud_id, machine_id))
        values = schedules.build(session, org_id, given, None, now, st.config.min_interval)
    probe = Schedule(id="probe", org_id=org_id, total_run_count=0, created_at=now, updated_at=now,
                     **{c: values[c] for c in schedules.COLUMNS})
    next_run = schedules.next_run_at(probe, now)
    assert next_run is not None and next_run.year >= 2099, next_run
    need = max(to - have, 0)
    ids = []
    base = now - timedelta(days=30)   # older than the API's rows, so the first page stays theirs
    done = 0
    while done < need:
        rows = []
        for i in range(done, min(done + batch, need)):
            sid = new_id()
            ids.append(sid)
            rows.append({**{c: values[c] for c in schedules.COLUMNS}, "id": sid, "org_id": org_id,
                         "name": f"bulk-{i}", "total_run_count": 0, "next_run_at": next_run,
                         "created_at": base + timedelta(milliseconds=i), "updated_at": base + timedelta(milliseconds=i)})
        with st.db.transaction() as session:
            session.execute(insert(Schedule), rows)
        done += len(rows)
    st.db.dispose()
    return ids, time.perf_counter() - t0


# ----------------------------------------------------------------------------- profile

def profile_ops(bench: Bench, out_dir: Path, seconds: float, top: int = 12) -> dict:
    """py-spy on the server while each op runs: samples of the thread holding the GIL (--gil), by function.

    The server is one Python process, so its request rate is bound by the GIL (it shows as ~1 core of
    server CPU): where the GIL-holding time goes is where the rate goes. Per op: the share of samples in
    waitress's request threads (the rest: dispatcher, Huey consumer, accept loop), and, within the
    request threads, the functions with the most samples inclusive (anywhere on the stack) and self."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for op in OPS:
        raw = out_dir / f"{op}.txt"
        spy = subprocess.Popen([py_spy, "record", "--pid", str(bench.server.pid), "--duration", str(int(seconds) + 1),
                                "--format", "raw", "--function", "--gil", "--nonblocking", "--rate", "250", "-o", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # py-spy attaches
        bench.run(op, duration=seconds)
        try:
            spy.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        summary[op] = collapse_summary(raw, top)
    return summary


def collapse_summary(raw: Path, top: int) -> dict:
    incl, self_, total, everything = {}, {}, 0, 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        n = int(n)
        everything += n
        if not any(f.startswith("ThreadedTaskDispatcher.handler_thread ") for f in frames):
            continue  # only request threads: not the dispatcher, the Huey consumer or the accept loop
        total += n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
        self_[frames[-1]] = self_.get(frames[-1], 0) + n
    share = lambda d: [[f, round(100.0 * c / total, 1)] for f, c in sorted(d.items(), key=lambda kv: -kv[1])[:top]]  # noqa: E731
    return {"samples": everything, "request_threads_pct": round(100.0 * total / max(everything, 1), 1),
            "inclusive_pct": share(incl), "self_pct": share(self_), "raw": str(raw)}


# ----------------------------------------------------------------------------- report

def summarize(rounds: list[dict]) -> dict:
    out = {}
    for op in OPS:
        per = [r[op] for r in rounds]
        ratios = [p["ratio"] for p in per]
        entry = {
            "rate_median": round(statistics.median(p["rate"] for p in per), 1),
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_rounds": ratios,
            "p50_ms_median": round(statistics.median(p["p50_ms"] for p in per), 2),
            "p99_ms_median": round(statistics.median(p["p99_ms"] for p in per), 2),
            "server_cpu_cores_median": round(statistics.median(p["server_cpu_cores"] for p in per), 2),
            "client_cpu_cores_median": round(statistics.median(p["client_cpu_cores"] for p in per), 2),
        }
        if op in TARGETS:
            entry["target"] = TARGETS[op]
            entry["met"] = entry["ratio_median"] >= TARGETS[op]
        out[op] = entry
    return out


def table(report: dict) -> str:
    base, grown = report["ops"], report["grown"]["round"]
    lines = [f"cloudcron API over loopback, {report['config']['clients']} keep-alive clients, "
             f"{report['config']['rounds']} interleaved rounds x {report['config']['duration_s']} s "
             f"(dispatcher {'on' if report['config']['dispatcher'] else 'OFF'}); medians across rounds",
             f"{'op':<14}{'req/s':>8}{'ratio':>8}{'target':>8}{'met':>5}{'p50 ms':>8}{'p99 ms':>8}{'srv cpu':>8}{'cli cpu':>8}"
             f"{'req/s@' + str(report['grown']['schedules_before_round']):>13}{'ratio':>7}"]
    for op in OPS:
        b, g = base[op], grown[op]
        target = f"{b['target']:.2f}" if "target" in b else "-"
        met = ("yes" if b["met"] else "NO") if "met" in b else "-"
        lines.append(f"{op:<14}{b['rate_median']:>8.0f}{b['ratio_median']:>8.3f}{target:>8}{met:>5}"
                     f"{b['p50_ms_median']:>8.1f}{b['p99_ms_median']:>8.1f}{b['server_cpu_cores_median']:>8.2f}"
                     f"{b['client_cpu_cores_median']:>8.2f}"
                     f"{g['rate']:>13.0f}{g['ratio']:>7.3f}")
    s = report["setup"]
    lines.append(f"stored {s['stored_via_api']} via POST in {s['store_seconds']} s ({s['store_rate']}/s); "
                 f"{report['schedules_after_rounds']} after the rounds; grown to {report['grown']['schedules']} "
                 f"by bulk insert in {report['grown']['insert_seconds']} s")
    m = report["rss"]
    lines.append(f"server RSS at {m['schedules']} schedules after list/get/create: {m['VmRSS_mb']:.1f} MB "
                 f"(peak {m['VmHWM_mb']:.1f} MB; at {report['rss_base']['schedules']}: {report['rss_base']['VmRSS_mb']:.1f} MB; "
                 f"idle at start: {report['rss_start']['VmRSS_mb']:.1f} MB) "
                 f"target < {RSS_TARGET_MB:.0f} MB: {'met' if m['met'] else 'NOT met'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, short rounds")
    p.add_argument("--schedules", type=int, help="stored through the API before measuring (10,000)")
    p.add_argument("--grow-to", type=int, help="schedules for the RSS reading (100,000)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (7)")
    p.add_argument("--duration", type=float, help="seconds per op per round (2.5)")
    p.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients (4)")
    p.add_argument("--no-dispatcher", action="store_true", help="comparison only: serve without the dispatcher")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="after the rounds, py-spy the server per op (collapsed stacks in DIR, summary in the JSON)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir and server log")
    p.add_argument("--out", type=Path, help="JSON report (default bench/results/api.json on a full run)")
    args = p.parse_args(argv)
    quick = args.quick
    n_schedules = args.schedules or (300 if quick else 10_000)
    grow_to = args.grow_to or (2_000 if quick else 100_000)
    rounds = args.rounds or (2 if quick else 7)
    duration = args.duration or (1.0 if quick else 2.5)
    out = args.out or (None if quick else ROOT / "bench" / "results" / "api.json")

    tmp = Path(tempfile.mkdtemp(prefix="cloudcron-bench-api-"))
    server = Server(tmp / "data", ("--no-dispatcher",) if args.no_dispatcher else ())
    t_all = time.perf_counter()
    try:
        mem = server.memory_mb()
        rss_start = {"schedules": 0, "VmRSS_mb": round(mem["VmRSS"], 1)}
        setup_client = Client(server.port, server.token)
        cloud, _ = setup_client.json("POST", "/api/v1/clouds", {"title": "bench", "provider": "other"})
        machine, _ = setup_client.json("POST", f"/api/v1/clouds/{cloud['id']}/machines",
                                       {"name": "bench-m1", "host": "127.0.0.1"})
        setup_client.close()
        bench = Bench(server, args.clients, cloud["id"], machine["id"])

        print(f"storing {n_schedules} schedules through POST /api/v1/schedules ...", flush=True)
        store = bench.run("create", count=n_schedules)
        assert bench.count() == n_schedules, (bench.total, n_schedules)
        print(f"  {store['seconds']} s, {store['rate']}/s", flush=True)

        bench.round(min(duration, 1.0) / 2)  # warm-up: every code path once, not counted
        results = []
        for r in range(rounds):
            results.append(bench.round(duration))
            line = "  ".join(f"{op} {results[-1][op]['rate']:.0f}/s" for op in OPS)
            print(f"round {r + 1}/{rounds}: {line}", flush=True)
        after_rounds = bench.count()
        profile = profile_ops(bench, args.profile, max(duration, 5.0)) if args.profile else None
        if profile:
            after_rounds = bench.count()
        rss_base = {"schedules": after_rounds, **{f"{k}_mb": round(v, 1) for k, v in server.memory_mb().items()}}

        print(f"growing to {grow_to} schedules by bulk insert ...", flush=True)
        bulk_ids, insert_s = bulk_grow(server.data_dir, grow_to, after_rounds, cloud["id"], machine["id"])
        bench.ids.extend(bulk_ids)
        before_round = bench.count()
        grown_round = bench.round(duration)  # also what exercises list and get before the RSS reading
        after_grown = bench.count()
        mem = server.memory_mb()
        rss = {"schedules": after_grown, "VmRSS_mb": round(mem["VmRSS"], 1), "VmHWM_mb": round(mem["VmHWM"], 1),
               "target_mb": RSS_TARGET_MB, "met": mem["VmRSS"] < RSS_TARGET_MB}
        bench.close()
    except BaseException:
        print(server.log(), file=sys.stderr)
        raise
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    ops = summarize(results)
    report = {
        "benchmark": "api",
        "config": {"quick": quick, "schedules": n_schedules, "grow_to": grow_to, "rounds": rounds,
                   "duration_s": duration, "clients": args.clients, "dispatcher": not args.no_dispatcher,
                   "server": "python -m web serve (waitress, 8 threads, embedded dispatcher and worker), SQLite",
                   "schedule": "interval every 1 day from 2099-01-01: active, never due",
                   "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                   "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "setup": {"stored_via_api": n_schedules, "store_seconds": store["seconds"], "store_rate": store["rate"]},
        "ops": ops,
        "rounds": results,
        "schedules_after_rounds": after_rounds,
        "rss_start": rss_start,
        "rss_base": rss_base,
        "grown": {"schedules": grow_to if grow_to > after_rounds else after_rounds,
                  "via": "bulk insert: web.schedules.parse_fields + build + next_run_at once, ORM insert executemany",
                  "insert_seconds": round(insert_s, 2), "schedules_before_round": before_round, "round": grown_round},
        "rss": rss,
        "profile": profile,
        "targets_met": all(ops[op]["met"] for op in TARGETS) and rss["met"],
        "wall_seconds": round(time.perf_counter() - t_all, 1),
    }
    print(table(report))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
