"""Provider answers are bounded: in time on every thread, also when a server trickles bytes, and in size.

The providers here are real HTTP servers on loopback misbehaving on purpose; the calls are libcloud's EC2
driver through the API's listing pool (a thread of its own) or a plain thread, as a worker's listing is."""
from __future__ import annotations

import gzip
import socket
import threading
import time

import pytest

from tests.harness.endpoints import EC2_OPTIONS, CannedHTTP
from tests.harness.service import wait_until
from web.machines import CloudSpec, ProviderError, ProviderLimits, fetch_nodes
from web.models import Cloud


class RawEndpoint:
    """A loopback TCP server answering each request with what `answer(conn)` writes (in a thread per connection)."""

    def __init__(self, answer):
        self._answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def options(self, **extra):
        return {"host": "127.0.0.1", "port": self.port, **EC2_OPTIONS, **extra}

    def _accept(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(60)
            if conn.recv(65536):
                self.requests += 1
                self._answer(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed.set()
        self.sock.close()


def trickle(where):
    """An answer that sends one byte every 0.2 s, in its headers or its body, for as long as it is read."""
    def answer(conn, endpoint):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 1000000\r\n\r\n"
        if where == "body":
            conn.sendall(head)
            head = b"<" * 1000000
        for byte in head:
            if endpoint.closed.is_set():
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.2)
    return answer


def spec(options):
    return CloudSpec("c1", "org", "ec2", {"key": "AKIDEXAMPLE", "secret": "not-a-secret"}, options)


LIMITS = ProviderLimits(timeout=2, max_machines=100, denied_networks=(), max_answer_bytes=1024 * 1024)


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_listing_on_any_thread_ends_within_the_provider_timeout_when_the_server_trickles(where):
    outcome = {}

    def listing():
        started = time.monotonic()
        try:
            fetch_nodes(spec(endpoint.options(timeout=3600)), LIMITS)
        except ProviderError as exc:
            outcome["error"] = exc.message
        outcome["elapsed"] = time.monotonic() - started

    with RawEndpoint(trickle(where)) as endpoint:
        worker = threading.Thread(target=listing)  # not the main thread: no SIGALRM there
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the listing went on past its timeout while bytes kept coming"
    assert endpoint.requests >= 1
    assert "timed out after 2 s" in outcome["error"], outcome
    assert outcome["elapsed"] < 2 + 3  # the timeout, and the time to notice it: not a byte every 0.2 s for ever


def test_an_api_listing_of_a_trickling_provider_frees_its_slot_by_the_provider_timeout(api):
    api.state.config.provider_timeout = 2
    with RawEndpoint(trickle("body")) as endpoint:
        status, cloud = api.post("clouds", {"title": "slow", "provider": "ec2", "options": endpoint.options(),
                                            "credentials": {"key": "AKIDEXAMPLE", "secret": "not-a-secret"}})
        assert status == 200, cloud
        status, body = api.get(f"clouds/{cloud['id']}/machines")
        assert status == 502 and cloud["id"] in body["error"], body
        # The slot is the pool's thread: it is free again, not held while the server keeps trickling.
        wait_until(lambda: api.state.listings.in_flight() == 0, 5, what="the listing slot to be freed")


def test_an_answer_declaring_more_than_the_cap_is_refused_unread():
    def answer(conn, endpoint):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 314572800\r\n\r\n")
        conn.sendall(b"<" * (4 * 1024 * 1024))  # and more would follow

    with RawEndpoint(answer) as endpoint:
        with pytest.raises(ProviderError) as caught:
            fetch_nodes(spec(endpoint.options()), LIMITS)
    assert "larger than 1048576 bytes" in caught.value.message and "314572800" in caught.value.message


@pytest.mark.parametrize("encoding", ["chunked", "gzip"])
def test_an_answer_growing_past_the_cap_is_cut_off_and_refused(encoding):
    body = b"<" * (5 * 1024 * 1024)

    def answer(conn, endpoint):
        if encoding == "gzip":
            packed = gzip.compress(body)  # a few KiB on the wire, 5 MiB once decoded
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Encoding: gzip\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(packed) + packed)
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 65536):
            piece = body[i:i + 65536]
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    with RawEndpoint(answer) as endpoint:
        with pytest.raises(ProviderError) as caught:
            fetch_nodes(spec(endpoint.options()), LIMITS)
    assert "larger than 1048576 bytes" in caught.value.message, caught.value.message


def test_an_answer_within_the_cap_is_read_whole(api, moto_server):
    # Under the cap nothing changes: moto's real answers list the machines.
    moto_server.create_machines(2)
    listing = fetch_nodes(CloudSpec("c1", "org", "ec2", dict(moto_server.credentials), moto_server.options), LIMITS)
    assert listing.listed >= 2


@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::"])
def test_a_stored_cloud_at_an_ipv6_form_of_a_denied_address_is_refused_when_listed(api, host):
    with CannedHTTP(200, b"<never/>") as endpoint:
        status, cloud = api.post("clouds", {"title": "v6", "provider": "ec2", "options": endpoint.options(),
                                            "credentials": {"key": "AKIDEXAMPLE", "secret": "not-a-secret"}})
        assert status == 200, cloud
        api.state.config.denied_networks = ("127.0.0.0/8",)
        status, body = api.post("clouds", {"title": "v6-new", "provider": "ec2", "options": endpoint.options(host=host),
                                           "credentials": {"key": "AKIDEXAMPLE", "secret": "not-a-secret"}})
        assert status == 400 and "CLOUDCRON_DENIED_NETWORKS" in body["error"], body
        # One stored before the rule (or while the setting said otherwise) is refused when it is listed.
        with api.state.db.transaction() as session:
            session.get(Cloud, cloud["id"]).options = endpoint.options(host=host)
        status, body = api.get(f"clouds/{cloud['id']}/machines")
        assert endpoint.requests == 0
    assert status == 502 and "does not contact" in body["error"], body
