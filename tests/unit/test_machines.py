"""Where a run reaches a machine over SSH."""
from __future__ import annotations

from web.machines import ssh_address
from web.models import Machine


def test_the_override_wins_then_public_then_private_addresses():
    assert ssh_address(Machine(host="h.example", public_ips=["1.2.3.4"], private_ips=["10.0.0.1"])) == "h.example"
    assert ssh_address(Machine(host=None, public_ips=["1.2.3.4"], private_ips=["10.0.0.1"])) == "1.2.3.4"
    assert ssh_address(Machine(host=None, public_ips=[], private_ips=["10.0.0.1"])) == "10.0.0.1"
    assert ssh_address(Machine(host=None, public_ips=[], private_ips=[])) is None


def test_an_address_a_provider_lists_that_ssh_would_read_as_an_option_is_skipped():
    # A cloud can point at any endpoint, so its listing is no more trusted than a request.
    machine = Machine(host=None, public_ips=["-oProxyCommand=touch /tmp/x", "1.2.3.4 5"], private_ips=["10.0.0.9"])
    assert ssh_address(machine) == "10.0.0.9"
    assert ssh_address(Machine(host="-oX", public_ips=["-p1"], private_ips=[])) is None
