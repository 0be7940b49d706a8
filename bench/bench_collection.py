#!/usr/bin/env python
"""Collection benchmark (issues 4, 11): applying 100 unchanged schedules, next to 100 ansible.builtin.uri GETs.

A real service (`python -m web serve`, SQLite) holds N schedules. Two playbooks run on localhost with
the same loop over the N names, back to back, alternating, each R times:

schedule  cloudcron.scheduler.schedule with every field as stored (targets as `machines` with the
          cloud given by title, which the service resolves within the one apply request).
uri       ansible.builtin.uri GET /api/v1/schedules?name=<name> with the token header.

Reported: the median wall time of each playbook (ansible-playbook start to exit), their ratio
(target: at most 1.2), and, from one extra run of the schedule playbook through a counting proxy,
HTTP requests per schedule (target: 1) and schedules written (updated_at changed; target: 0).

    python bench/bench_collection.py              # 100 schedules, 3 rounds
    python bench/bench_collection.py --quick      # 20 schedules, 1 round (smoke)

Writes bench/results/collection.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.harness.collection import make_collections_path  # noqa: E402
from tests.harness.service import CountingProxy, start_service  # noqa: E402

BIN = Path(sys.executable).parent
ENTRY = {"minute": "30", "hour": "2", "day_of_week": "mon-fri", "day_of_month": "*", "month_of_year": "*"}


def seed(service, count: int) -> list[str]:
    """A cloud with one machine and `count` schedules targeting it; return the schedule names."""
    status, cloud = service.api("POST", "clouds", {"title": "bench", "provider": "other"})
    assert status == 200, cloud
    status, machine = service.api("POST", "clouds/%s/machines" % cloud["id"], {"name": "m1", "host": "192.0.2.1"})
    assert status == 200, machine
    names = []
    for i in range(count):
        name = "bench-%03d" % i
        body = {"name": name, "action": "stop", "machines_per_cloud": [[cloud["id"], "m1"]],
                "schedule_type": "crontab", "schedule_entry": ENTRY, "timezone": "Europe/Athens",
                "expires": "2030-01-01T08:00:00Z", "description": "benchmark schedule %d" % i}
        status, answer = service.api("POST", "schedules", body)
        assert status == 200, answer
        names.append(name)
    return names


def playbooks(workdir: Path, names: list[str]) -> dict[str, Path]:
    """The two playbooks, as JSON (which is YAML)."""
    schedule_task = {
        "name": "Declare the schedules",
        "cloudcron.scheduler.schedule": {
            "name": "{{ item }}", "action": "stop", "machines": [{"cloud": "bench", "machine": "m1"}],
            "schedule_type": "crontab", "schedule_entry": {"minute": 30, "hour": 2, "day_of_week": "MON-FRI"},
            "timezone": "Europe/Athens", "expires": "2030-1-1 10:00", "description": "benchmark schedule {{ idx }}",
        },
        "loop": names, "loop_control": {"index_var": "idx"},
    }
    uri_task = {
        "name": "Read the schedules",
        "ansible.builtin.uri": {
            "url": "{{ lookup('env', 'CLOUDCRON_URL') }}/api/v1/schedules?name={{ item }}",
            "headers": {"Authorization": "Bearer {{ lookup('env', 'CLOUDCRON_TOKEN') }}"},
            "return_content": True,
        },
        "loop": names, "no_log": True,
    }
    out = {}
    for kind, task in (("schedule", schedule_task), ("uri", uri_task)):
        path = workdir / ("%s.yml" % kind)
        path.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}], indent=1))
        out[kind] = path
    return out


def run_playbook(path: Path, env: dict) -> tuple[float, str]:
    """Wall seconds of one ansible-playbook run, and its output; fails loudly on a failed or changed run."""
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable, str(path)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "changed=0" not in output:
        raise SystemExit("%s did not run cleanly unchanged:\n%s" % (path.name, output[-3000:]))
    return elapsed, output


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schedules", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20 schedules, 1 round")
    ap.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "collection.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.schedules, args.rounds = 20, 1

    root = Path(tempfile.mkdtemp(prefix="cloudcron-bench-collection-"))
    service = start_service(root / "data", org="bench")
    try:
        names = seed(service, args.schedules)
        paths = playbooks(root, names)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "CLOUDCRON_"))}
        base_env.update(ANSIBLE_COLLECTIONS_PATH=str(make_collections_path(root / "collections")),
                        ANSIBLE_HOME=str(root / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(root / "ansible-tmp"),
                        ANSIBLE_NOCOLOR="1", CLOUDCRON_TOKEN=service.token)
        env = dict(base_env, CLOUDCRON_URL=service.url)

        # The first apply of the declared fields must already be a no-op: the seed stored the same values.
        print("warm-up (one run each) ...", flush=True)
        for kind in ("schedule", "uri"):
            run_playbook(paths[kind], env)
        times = {"schedule": [], "uri": []}
        for r in range(args.rounds):
            for kind in ("schedule", "uri") if r % 2 == 0 else ("uri", "schedule"):
                elapsed, _ = run_playbook(paths[kind], env)
                times[kind].append(elapsed)
                print("  round %d %-8s %6.1f s" % (r + 1, kind, elapsed), flush=True)

        stamps = lambda: {s["name"]: s["updated_at"] for s in service.api("GET", "schedules?limit=1000")[1]}  # noqa: E731
        before = stamps()
        proxy = CountingProxy(service.url)
        try:
            run_playbook(paths["schedule"], dict(base_env, CLOUDCRON_URL=proxy.url))
            requests = list(proxy.requests)
        finally:
            proxy.close()
        written = [name for name, stamp in stamps().items() if before.get(name) != stamp]
    finally:
        service.stop()

    medians = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "schedules": args.schedules,
        "rounds": args.rounds,
        "seconds": times,
        "median_seconds": medians,
        "ratio_schedule_to_uri": medians["schedule"] / medians["uri"],
        "requests_per_schedule": len(requests) / args.schedules,
        "writes": len(written),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    report["meets_targets"] = {
        "ratio <= 1.2": report["ratio_schedule_to_uri"] <= 1.2,
        "requests/schedule == 1": report["requests_per_schedule"] == 1,
        "no writes": report["writes"] == 0,
    }
    print()
    print("| playbook of %d unchanged schedules | median wall time |" % args.schedules)
    print("| --- | --- |")
    print("| cloudcron.scheduler.schedule | %.1f s |" % medians["schedule"])
    print("| ansible.builtin.uri GET | %.1f s |" % medians["uri"])
    print("ratio %.2f; %.2f HTTP requests per schedule; %d schedules written" % (
        report["ratio_schedule_to_uri"], report["requests_per_schedule"], report["writes"]))
    print("targets met:", ", ".join("%s %s" % (k, "yes" if v else "NO") for k, v in report["meets_targets"].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("wrote %s" % out)
    return 0 if all(report["meets_targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
