"""/metrics access by CLOUDCRON_METRICS, through the application (the scrape itself: tests/integration)."""
from __future__ import annotations

import dataclasses

from web import create_app
from web.config import load_config


def app_with(state, value):
    config = load_config({"CLOUDCRON_DATA_DIR": str(state.config.data_dir), "CLOUDCRON_METRICS": value})
    return create_app(state=dataclasses.replace(state, config=config)).test_client()


def test_an_address_outside_the_allowed_networks_is_refused(state):
    resp = app_with(state, "10.0.0.0/8").get("/metrics")  # the test client comes from 127.0.0.1
    assert resp.status_code == 403 and "CLOUDCRON_METRICS" in resp.get_json()["error"]


def test_an_allowed_network_needs_no_token(state):
    resp = app_with(state, "127.0.0.1/32").get("/metrics")
    assert resp.status_code == 200 and b"cloudcron_queue_depth" in resp.data


def test_open_needs_nothing_and_off_is_not_found(state):
    assert app_with(state, "open").get("/metrics").status_code == 200
    resp = app_with(state, "off").get("/metrics")
    assert resp.status_code == 404 and "error" in resp.get_json()


def test_token_mode_takes_any_orgs_token(api):
    assert api.call("GET", "/metrics", token="")[0] == 401
    status, _, resp = api.call("GET", "/metrics")
    assert status == 200 and resp.mimetype == "text/plain"


def test_an_ipv4_client_seen_through_a_dual_stack_listener_matches_its_ipv4_range(state):
    client = app_with(state, "127.0.0.0/8")
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:127.0.0.1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:10.1.2.3"}).status_code == 403


def test_a_range_written_in_the_ipv4_mapped_form_matches_ipv4_clients(state):
    # The README says a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: an operator may write that form.
    client = app_with(state, "::ffff:10.0.0.0/104")
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "11.1.2.3"}).status_code == 403


def test_org_mode_takes_only_the_named_orgs_tokens(api, other_api):
    """Every org's run counts minus a tenant's own are the other orgs': only the operator's org may read them."""
    client = app_with(api.state, "org:acme")
    assert client.get("/metrics", headers={"Authorization": api.token}).status_code == 200
    resp = client.get("/metrics", headers={"Authorization": other_api.token})
    assert resp.status_code == 403 and "CLOUDCRON_METRICS" in resp.get_json()["error"]
    assert "acme" not in resp.get_json()["error"]  # the operator's org is not told to a tenant
    assert client.get("/metrics").status_code == 401
