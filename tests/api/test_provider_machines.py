"""Machines of a libcloud cloud are read from the provider (a real moto EC2 server) and keep stable ids."""
from __future__ import annotations

import re
import threading
import time

import pytest
from sqlalchemy import func, select

from tests.harness.endpoints import BlackHole, CannedHTTP, RewritingProxy
from tests.harness.service import wait_until
from web.listings import ListingPool
from web.models import Cloud, Machine


def ec2_cloud(api, moto_server, **extra):
    status, body = api.post("clouds", {"title": "aws", "provider": "ec2", "credentials": dict(moto_server.credentials),
                                       "options": moto_server.options, **extra})
    assert status == 200, body
    return body


def test_it_lists_machines_from_the_provider_with_stable_ids(api, moto_server):
    ids = moto_server.create_machines(2, tags={"env": "listing"})
    cloud = ec2_cloud(api, moto_server)
    status, first = api.get(f"clouds/{cloud['id']}/machines?limit=1000")
    assert status == 200
    mine = {m["machine_id"]: m for m in first if m["machine_id"] in ids}
    assert set(mine) == set(ids)
    for m in mine.values():
        assert len(m["id"]) == 32 and m["state"] == "running" and m["tags"] == {"env": "listing"}
        assert m["cloud_id"] == cloud["id"] and isinstance(m["private_ips"], list)
    status, again = api.get(f"clouds/{cloud['id']}/machines?limit=1000")
    assert {m["machine_id"]: m["id"] for m in again if m["machine_id"] in ids} == {k: v["id"] for k, v in mine.items()}


def test_creating_a_cloud_does_not_contact_the_provider(api):
    status, body = api.post("clouds", {"title": "nowhere", "provider": "ec2", "credentials": {"key": "k", "secret": "s"},
                                       "options": {"host": "127.0.0.1", "port": 9, "secure": False}})
    assert status == 200, body


def test_an_unreachable_provider_is_a_502_naming_the_cloud_without_its_secret(api):
    secret = "sekrit-value-4711"
    status, cloud = api.post("clouds", {"title": "down", "provider": "ec2", "credentials": {"key": "AKIDEXAMPLE", "secret": secret},
                                        "options": {"host": "127.0.0.1", "port": 9, "secure": False, "region": "us-east-1",
                                                    "signature_version": "4"}})
    status, body = api.get(f"clouds/{cloud['id']}/machines")
    assert status == 502
    assert cloud["id"] in body["error"] and secret not in body["error"]


def test_credentials_are_encrypted_at_rest_and_never_answered(api, moto_server):
    cloud = ec2_cloud(api, moto_server, credentials={"key": "AKIDEXAMPLE", "secret": "wJalrXUtnFEMI-secret"})
    with api.state.db.session() as s:
        stored = s.scalar(select(Cloud.credentials_enc).where(Cloud.id == cloud["id"]))
    assert "wJalrXUtnFEMI" not in stored and "AKIDEXAMPLE" not in stored
    for path in ("clouds", f"clouds/{cloud['id']}"):
        assert "wJalrXUtnFEMI" not in str(api.get(path)[1])


# ---------------------------------------------------------------- what a provider may be

def test_libclouds_test_driver_is_refused_as_a_provider(api):
    status, body = api.post("clouds", {"title": "fake", "provider": "dummy", "credentials": {"creds": 10**9}})
    assert status == 400 and body["error"].startswith("provider: 'dummy'") and "test driver" in body["error"]
    assert api.get("clouds")[1] == []


@pytest.mark.parametrize("options, named", [
    ({"host": "169.254.169.254"}, "options.host"),
    ({"host": "fd00:ec2::254"}, "options.host"),
    ({"host": "[fe80::1]"}, "options.host"),
    ({"host": "::ffff:169.254.169.254"}, "options.host"),
    ({"ex_force_auth_url": "http://169.254.169.254/latest/meta-data/"}, "options.ex_force_auth_url"),
])
def test_an_endpoint_literal_in_a_denied_network_is_refused_at_create_and_edit(api, options, named):
    status, body = api.post("clouds", {"title": "meta", "provider": "ec2", "options": options})
    assert status == 400 and body["error"].startswith(named + ":") and "CLOUDCRON_DENIED_NETWORKS" in body["error"]
    status, cloud = api.post("clouds", {"title": "fine", "provider": "ec2", "options": {"host": "ec2.example.com"}})
    assert status == 200, cloud
    status, body = api.patch(f"clouds/{cloud['id']}", {"options": options})
    assert status == 400 and body["error"].startswith(named + ":")
    assert api.get(f"clouds/{cloud['id']}")[1]["options"] == {"host": "ec2.example.com"}


@pytest.mark.parametrize("options, named, scheme", [
    ({"ex_force_auth_url": "file:///etc/passwd"}, "options.ex_force_auth_url", "file"),
    ({"url": "file:/etc/passwd"}, "options.url", "file"),
    ({"endpoint": "ftp://ftp.example.com/"}, "options.endpoint", "ftp"),
    ({"proxy_url": "socks5://127.0.0.1:1080"}, "options.proxy_url", "socks5"),
    ({"ex": {"urls": ["https://ok.example.com", "gopher://x.example.com/"]}}, "options.ex.urls.1", "gopher"),
])
def test_non_http_schemes_are_refused_in_any_url_like_option(api, options, named, scheme):
    status, body = api.post("clouds", {"title": "odd", "provider": "openstack", "options": options})
    assert status == 400 and body["error"].startswith(named + ":") and f"'{scheme}'" in body["error"], body


def test_a_libvirt_uri_in_the_credentials_is_refused_at_create_and_when_the_provider_is_called(api):
    # Credentials are constructor arguments too: a local hypervisor socket is not an HTTP endpoint.
    status, body = api.post("clouds", {"title": "virt", "provider": "libvirt", "credentials": {"uri": "qemu:///system"}})
    assert status == 400 and body["error"].startswith("credentials.uri:") and "'qemu'" in body["error"], body
    # One stored before that check is refused when used.
    status, cloud = api.post("clouds", {"title": "virt", "provider": "libvirt", "credentials": {"uri": "http://h"}})
    assert status == 200, cloud
    with api.state.db.transaction() as session:
        session.get(Cloud, cloud["id"]).credentials_enc = api.state.box.seal({"uri": "qemu:///system"})
    status, body = api.get(f"clouds/{cloud['id']}/machines")
    assert status == 502 and "credentials.uri" in body["error"] and "'qemu'" in body["error"]


def test_host_names_and_ports_are_not_mistaken_for_urls(api):
    for host in ("ec2.example.com:8443", "localhost", "10.1.2.3", "[2001:db8::1]"):
        status, body = api.post("clouds", {"title": host, "provider": "ec2", "options": {"host": host}})
        assert status == 200, (host, body)


# ---------------------------------------------------------------- what a provider says

def test_a_provider_error_page_is_reported_by_its_status_line_only(api):
    page = b"<html><body>INTERNAL-ADMIN-PAGE token=abc123 do not show</body></html>"
    with CannedHTTP(502, page) as endpoint:
        cloud = _cloud(api, endpoint.options())
        status, body = api.get(f"clouds/{cloud['id']}/machines")
        assert endpoint.requests >= 1  # the endpoint was asked, and answered its page
    assert status == 502
    assert "HTTP 502 Bad Gateway" in body["error"] and cloud["id"] in body["error"]
    assert "INTERNAL-ADMIN-PAGE" not in body["error"] and "abc123" not in body["error"]


def test_an_unreadable_provider_answer_is_not_echoed_either(api):
    with CannedHTTP(500, b"plain text SECRET-500-BODY") as endpoint:
        cloud = _cloud(api, endpoint.options())
        status, body = api.get(f"clouds/{cloud['id']}/machines")
    assert status == 502 and "SECRET-500-BODY" not in body["error"], body


def test_a_listing_larger_than_the_bound_is_cut_and_the_answer_says_so(api, moto_server):
    moto_server.create_machines(3)
    api.state.config.max_machines_per_cloud = 2
    cloud = ec2_cloud(api, moto_server)
    status, body, resp = api.call("GET", f"clouds/{cloud['id']}/machines?limit=1000")
    assert status == 200 and len(body) == 2
    listed = len(moto_server.ec2.describe_instances()["Reservations"])  # one reservation per run_instances call
    header = resp.headers["X-Machines-Truncated"]
    kept, total = re.fullmatch(r"(\d+) of (\d+) machines kept \(CLOUDCRON_MAX_MACHINES_PER_CLOUD\)", header).groups()
    assert int(kept) == 2 and int(total) >= max(listed, 3)
    with api.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Machine).where(Machine.cloud_id == cloud["id"])) == 2


def test_a_listing_within_the_bound_has_no_truncation_header(api, moto_server):
    moto_server.create_machines(1)
    cloud = ec2_cloud(api, moto_server)
    status, body, resp = api.call("GET", f"clouds/{cloud['id']}/machines?limit=1000")
    assert status == 200 and body and "X-Machines-Truncated" not in resp.headers


def test_machines_whose_provider_id_is_0_or_empty_are_listed_with_stable_ids(api, moto_server):
    zero, empty, also_empty = moto_server.create_machines(3)

    def provider_ids(body: bytes) -> bytes:
        body = body.replace(f"<instanceId>{zero}</instanceId>".encode(), b"<instanceId>0</instanceId>")
        for machine in (empty, also_empty):  # two machines without an id: the listing keeps one
            body = body.replace(f"<instanceId>{machine}</instanceId>".encode(), b"<instanceId></instanceId>")
        return body

    with RewritingProxy(moto_server.url, provider_ids) as endpoint:
        cloud = ec2_cloud(api, moto_server, options=endpoint.options())
        status, first = api.get(f"clouds/{cloud['id']}/machines?limit=1000")
        assert status == 200, first
        status, again = api.get(f"clouds/{cloud['id']}/machines?limit=1000")
        assert status == 200, again
    ids = {m["machine_id"]: m["id"] for m in first}
    assert "0" in ids and "" in ids and len(ids) == len(first)
    assert {m["machine_id"]: m["id"] for m in again} == ids


def test_a_commit_elsewhere_during_a_listing_does_not_fail_it(api, other_api, moto_server):
    moto_server.create_machines(1)
    with RewritingProxy(moto_server.url, delay=1.5) as endpoint:
        cloud = ec2_cloud(api, moto_server, options=endpoint.options())
        answers = []
        listing = threading.Thread(target=lambda: answers.append(api.get(f"clouds/{cloud['id']}/machines")))
        listing.start()
        wait_until(lambda: endpoint.requests, 30, interval=0.02, what="the listing to reach the provider")
        status, body = other_api.post("clouds", {"title": "written meanwhile", "provider": "other"})
        assert status == 200, body
        listing.join(timeout=60)
    [(status, body)] = answers
    assert status == 200 and body, body


# ---------------------------------------------------------------- how many listings at once

def test_listings_over_the_orgs_limit_are_answered_429_at_once_and_other_orgs_still_list(api, other_api, moto_server):
    api.state.config.provider_timeout = 4
    api.state._listings = ListingPool(slots=3, per_org=2, wait=4)
    moto_server.create_machines(1)
    with BlackHole() as hole:
        slow = _cloud(api, hole.options())
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(api.get(f"clouds/{slow['id']}/machines")))
                   for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: hole.accepted >= 2, 30, interval=0.02, what="two listings to reach the black hole")
        started = time.monotonic()
        status, body, resp = api.call("GET", f"clouds/{slow['id']}/machines")
        assert status == 429 and time.monotonic() - started < 3  # not after the 4 s listings
        assert "CLOUDCRON_LISTINGS_PER_ORG" in body["error"] and resp.headers["Retry-After"] == "4"
        # Another org lists a healthy cloud meanwhile: one slot of three is still free.
        healthy = ec2_cloud(other_api, moto_server)
        status, body = other_api.get(f"clouds/{healthy['id']}/machines")
        assert status == 200 and body
        for t in threads:
            t.join(timeout=60)
    assert sorted(s for s, _ in answers) == [502, 502]
    assert all("did not answer within 4 s" in b["error"] or "timed out after 4 s" in b["error"] for _, b in answers)


def test_when_every_listing_slot_is_taken_a_listing_is_answered_429_naming_the_setting(api, other_api):
    api.state.config.provider_timeout = 3
    api.state._listings = ListingPool(slots=2, per_org=2, wait=3)
    with BlackHole() as hole:
        slow = _cloud(api, hole.options())
        threads = [threading.Thread(target=api.get, args=(f"clouds/{slow['id']}/machines",)) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: hole.accepted >= 2, 30, interval=0.02, what="two listings to reach the black hole")
        other = _cloud(other_api, hole.options(), title="other's")
        status, body, resp = other_api.call("GET", f"clouds/{other['id']}/machines")
        assert status == 429 and "CLOUDCRON_LISTING_SLOTS" in body["error"] and resp.headers["Retry-After"] == "3"
        for t in threads:
            t.join(timeout=60)
    assert api.state.listings.in_flight() == 0


def test_the_provider_timeout_caps_a_clouds_own_timeout(api):
    api.state.config.provider_timeout = 2
    with BlackHole() as hole:
        cloud = _cloud(api, hole.options(timeout=3600))
        started = time.monotonic()
        status, body = api.get(f"clouds/{cloud['id']}/machines")
        elapsed = time.monotonic() - started
    assert status == 502 and ("timed out after 2 s" in body["error"] or "within 2 s" in body["error"]), body
    assert elapsed < 30  # bounded by the server's 2 s, not the cloud's 3600 s


def test_a_host_name_that_resolves_into_a_denied_network_is_refused_when_called(api):
    api.state.config.denied_networks = ("127.0.0.0/8", "::1/128")
    with CannedHTTP(200, b"<never/>") as endpoint:
        cloud = _cloud(api, endpoint.options(host="localhost"))  # a name, so create cannot tell
        status, body = api.get(f"clouds/{cloud['id']}/machines")
        assert endpoint.requests == 0
    assert status == 502 and "refused to connect to localhost" in body["error"] and "127.0.0.1" in body["error"]


def _cloud(api, options, title="slow"):
    status, body = api.post("clouds", {"title": title, "provider": "ec2",
                                       "credentials": {"key": "AKIDEXAMPLE", "secret": "not-a-secret"},
                                       "options": options})
    assert status == 200, body
    return body
