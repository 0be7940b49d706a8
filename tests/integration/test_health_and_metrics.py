"""/healthz, /readyz and /metrics on real service processes: what they answer, and when readiness fails."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.backends import _pg_database
from tests.harness.service import REPO_ROOT, free_port, start_service, wait_until


def get(url, token=None):
    """(status, body text) of a GET."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict:
    """{(sample name, ((label, value), ...)): value} of a scrape, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def ended_run(svc) -> dict:
    """Run a schedule now whose machine was never declared: it ends `failed` without any playbook."""
    _, cloud = svc.api("POST", "clouds", {"title": f"lab-{os.urandom(4).hex()}", "provider": "other"})
    status, sch = svc.api("POST", "schedules", {
        "name": f"s-{os.urandom(4).hex()}", "action": "stop", "machines_per_cloud": [[cloud["id"], "ghost"]],
        "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"}})
    assert status == 200, sch
    status, run = svc.api("POST", f"schedules/{sch['id']}/run")
    assert status == 200, run

    def ended():
        body = svc.api("GET", f"runs/{run['id']}")[1]
        return body if body["status"] not in ("queued", "running") else None

    return wait_until(ended, 60, what="the run to end")


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    """`python -m web serve` with its dispatcher and worker."""
    server = start_service(tmp_path_factory.mktemp("ops") / "data")
    yield server
    server.stop()


def test_healthz_answers_without_a_token(svc):
    status, body = get(svc.url + "/healthz")
    assert status == 200 and '"ok":true' in body.replace(" ", "")


def test_readyz_is_ready_once_the_dispatcher_ticked(svc):
    def ready():
        status, body = get(svc.url + "/readyz")
        return body if status == 200 else None

    body = wait_until(ready, 30, what="/readyz to answer 200")
    assert '"database":"ok"' in body.replace(" ", "") and '"queue":"ok"' in body.replace(" ", "")


def test_status_sees_the_services_own_dispatcher_and_worker(svc):
    def live():
        body = svc.api("GET", "status")[1]
        return body if body["dispatchers"]["live"] == 1 and body["workers"]["live"] == 1 else None

    body = wait_until(live, 30, what="the heartbeats of the dispatcher and the worker")
    assert body["workers"]["slots"] == 2 and body["dispatchers"]["last_tick_age"] < 30


def test_metrics_need_a_token_by_default(svc):
    assert get(svc.url + "/metrics")[0] == 401
    assert get(svc.url + "/metrics", token="0" * 64)[0] == 401


def test_metrics_parse_and_the_run_counters_move_when_a_run_ends(svc):
    key = ("cloudcron_runs_finished_total", (("status", "failed"), ("trigger", "manual")))
    status, text = get(svc.url + "/metrics", token=svc.token)
    assert status == 200, text
    before = samples(text)
    assert before[("cloudcron_database_up", ())] == 1
    assert ("cloudcron_queue_depth", ()) in before and ("cloudcron_worker_slots", ()) in before
    run = ended_run(svc)
    assert run["status"] == "failed"
    after = samples(get(svc.url + "/metrics", token=svc.token)[1])
    assert after[key] == before.get(key, 0) + 1
    count = ("cloudcron_run_duration_seconds_count", (("status", "failed"),))
    assert after[count] == before.get(count, 0) + 1
    assert after[("cloudcron_start_lateness_seconds_count", ())] == \
        before.get(("cloudcron_start_lateness_seconds_count", ()), 0) + 1


def test_without_a_dispatcher_readyz_answers_503_naming_it_and_metrics_can_be_off(tmp_path):
    server = start_service(tmp_path / "data", env={"CLOUDCRON_METRICS": "off"}, serve_args=("--no-dispatcher",))
    try:
        status, body = get(server.url + "/readyz")
        assert status == 503 and "dispatcher: no dispatcher has ticked yet" in body
        assert get(server.url + "/healthz")[0] == 200
        assert get(server.url + "/metrics", token=server.token)[0] == 404
    finally:
        server.stop()


def test_metrics_open_to_an_allowed_network_without_a_token(tmp_path):
    server = start_service(tmp_path / "data", env={"CLOUDCRON_METRICS": "127.0.0.0/8"},
                           serve_args=("--no-dispatcher", "--no-worker"))
    try:
        status, text = get(server.url + "/metrics")
        assert status == 200 and samples(text)[("cloudcron_database_up", ())] == 1
    finally:
        server.stop()


def test_readyz_answers_503_when_the_database_goes_away(tmp_path):
    url, drop = _pg_database()
    server = start_service(tmp_path / "data", env={"CLOUDCRON_DATABASE_URL": url, "CLOUDCRON_METRICS": "open"})
    try:
        wait_until(lambda: get(server.url + "/readyz")[0] == 200, 30, what="/readyz to answer 200")
        drop()
        status, body = get(server.url + "/readyz")
        assert status == 503 and "database: cannot be read" in body
        status, text = get(server.url + "/metrics")  # still answers, and says the database did not
        assert status == 200 and samples(text)[("cloudcron_database_up", ())] == 0
    finally:
        server.stop()
        drop()


def test_with_the_database_gone_a_token_scrape_and_the_api_answer_503_saying_so_not_an_internal_error(tmp_path):
    # The default access mode checks the token in the database: without one, the scrape cannot be allowed.
    url, drop = _pg_database()
    server = start_service(tmp_path / "data", env={"CLOUDCRON_DATABASE_URL": url})
    try:
        assert get(server.url + "/metrics", token=server.token)[0] == 200
        drop()
        status, body = get(server.url + "/metrics", token=server.token)
        assert status == 503 and "database" in body and "CLOUDCRON_METRICS" in body, (status, body)
        # The API too: GET /api/v1/status is what an operator reads then; "internal error" would say nothing.
        status, body = get(server.url + "/api/v1/status", token=server.token)
        assert status == 503 and "the database cannot be reached" in body, (status, body)
    finally:
        server.stop()
        drop()


def test_readyz_answers_503_when_the_queue_goes_away(tmp_path):
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        import redis as redis_client

        wait_until(lambda: _pings(redis_client, port), 15, what="redis-server to answer")
        server = start_service(tmp_path / "data", env={"CLOUDCRON_QUEUE_URL": f"redis://127.0.0.1:{port}/0"})
        wait_until(lambda: get(server.url + "/readyz")[0] == 200, 30, what="/readyz to answer 200")
        os.kill(redis.pid, signal.SIGKILL)
        redis.wait()
        status, body = get(server.url + "/readyz")
        assert status == 503 and "queue: cannot be read" in body and '"database":"ok"' in body.replace(" ", "")
    finally:
        if server is not None:
            server.stop()
        if redis.poll() is None:
            os.kill(redis.pid, signal.SIGKILL)
            redis.wait()


def _pings(redis_client, port) -> bool:
    try:
        return redis_client.Redis(port=port, socket_timeout=1).ping()
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_a_separate_workers_counts_reach_the_apis_metrics_through_the_multiprocess_directory(tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    server = start_service(tmp_path / "data", env=env, serve_args=("--no-worker",))
    worker = None
    try:
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "web", "worker", "--workers", "1"], cwd=REPO_ROOT,
                                      env=server.env, stdout=log, stderr=subprocess.STDOUT)
        run = ended_run(server)  # executed, and counted, by the worker process
        assert run["status"] == "failed"
        text = get(server.url + "/metrics", token=server.token)[1]
        assert samples(text)[("cloudcron_runs_finished_total", (("status", "failed"), ("trigger", "manual")))] == 1
        assert any(p.name.startswith("counter_") for p in shared.iterdir())
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        server.stop()


def get_with(url, headers):
    """(status, body text) of a GET with extra headers."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _session_cookie(url, headers) -> str:
    """The Set-Cookie of the console's sign-in page (it keeps its CSRF token in the session)."""
    with urllib.request.urlopen(urllib.request.Request(url + "/ui/signin", headers=headers), timeout=30) as resp:
        cookie = resp.headers.get("Set-Cookie") or ""
    assert cookie.startswith("cloudcron_session="), cookie
    return cookie


def test_x_forwarded_for_is_ignored_unless_it_comes_from_the_trusted_proxy(tmp_path):
    # Anyone can send X-Forwarded-For: only the proxy named in CLOUDCRON_TRUSTED_PROXY is believed.
    server = start_service(tmp_path / "data", env={"CLOUDCRON_METRICS": "10.0.0.0/8"},
                           serve_args=("--no-dispatcher", "--no-worker"))
    try:
        assert get_with(server.url + "/metrics", {"X-Forwarded-For": "10.1.2.3"})[0] == 403
        assert "Secure" not in _session_cookie(server.url, {"X-Forwarded-Proto": "https"})
    finally:
        server.stop()


def test_behind_the_trusted_proxy_metrics_networks_apply_to_the_forwarded_client(tmp_path):
    # The test client is the proxy (127.0.0.1); the address it forwards is the one CLOUDCRON_METRICS judges.
    server = start_service(tmp_path / "data", env={"CLOUDCRON_METRICS": "10.0.0.0/8",
                                                   "CLOUDCRON_TRUSTED_PROXY": "127.0.0.1"},
                           serve_args=("--no-dispatcher", "--no-worker"))
    try:
        assert get_with(server.url + "/metrics", {"X-Forwarded-For": "10.1.2.3"})[0] == 200
        # A client behind the proxy cannot spoof: the proxy appends the real peer, and only that last hop counts.
        assert get_with(server.url + "/metrics", {"X-Forwarded-For": "10.1.2.3, 203.0.113.9"})[0] == 403
        # The proxy itself (no header) is not in the allowed networks.
        assert get_with(server.url + "/metrics", {})[0] == 403
        # The scheme the proxy reports is the one the console's cookie follows (Secure over HTTPS only).
        assert "Secure" in _session_cookie(server.url, {"X-Forwarded-Proto": "https"})
        assert "Secure" not in _session_cookie(server.url, {"X-Forwarded-Proto": "http"})
    finally:
        server.stop()
