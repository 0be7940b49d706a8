#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: key
short_description: Declare an SSH key cloudcron logs in to machines with
description:
  - Makes sure an SSH key of the cloudcron service exists, or does not exist.
  - The key is found by O(name) within the org of O(token).
  - The private key is write-only. It is sent when the key is created, and again only with
    O(update_secrets=true); it is never compared, so a task that gives the same key reports no change.
author:
  - cloudcron contributors (!UNKNOWN)
extends_documentation_fragment:
  - cloudcron.scheduler.connection
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The private key is never shown; the diff says whether it would be sent.
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the key, unique within the org.
    type: str
    required: true
  state:
    description:
      - V(present) creates the key (or replaces its secret with O(update_secrets=true)); V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  private:
    description:
      - The private key in OpenSSH or PEM form. Never logged nor returned.
      - Mutually exclusive with O(generate). One of them is required to create the key.
    type: str
  generate:
    description:
      - Let the service generate a new private key (its public half is returned).
      - Mutually exclusive with O(private).
    type: bool
  update_secrets:
    description:
      - Replace the private key of an existing key with O(private), or with a newly generated one
        when O(generate=true). The task then always reports a change.
    type: bool
    default: false
seealso:
  - module: cloudcron.scheduler.cloud
"""

EXAMPLES = r"""
- name: The key scripts log in with
  cloudcron.scheduler.key:
    name: lab-key
    private: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519') }}"

- name: A key the service generates; install its public half on the machines
  cloudcron.scheduler.key:
    name: generated
    generate: true
  register: generated

- name: Show the public key
  ansible.builtin.debug:
    msg: "{{ generated.key.public }}"
"""

RETURN = r"""
key:
  description: The key as the service returns it (never the private key); null after O(state=absent).
  returned: always
  type: dict
  sample:
    id: 339d309c692de2d92660b77078f6f790
    name: lab-key
    public: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDNie1aGIBXBCoyhdCEol/jrF1xiY2cogutHKtmW1zFJ
    created_at: "2030-01-01T10:00:00Z"
    updated_at: "2030-01-01T10:00:00Z"
"""

from ansible_collections.cloudcron.scheduler.plugins.module_utils._module import CloudcronModule, absent, present


def desired_body(params):
    """The write-only key material given: sent on create, and to an existing key with update_secrets."""
    if params.get("generate"):
        return {"generate": True}
    if params.get("private"):
        return {"private": params["private"]}
    return {}


def ensure(client, params, check_mode):
    """Bring the key to the requested state with one apply (or a delete); return the module's result."""
    if params["state"] == "absent":
        return absent(client, "keys", "key", "name", params["name"], check_mode)
    return present(client, "keys", "key", params["name"], desired_body(params), check_mode,
                   update_secrets=params["update_secrets"])


def argument_spec():
    """The module's own options (the connection options come from the module base)."""
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        private=dict(type="str", no_log=True),
        generate=dict(type="bool"),
        update_secrets=dict(type="bool", default=False, no_log=False),
    )


def main():
    """Run the module."""
    CloudcronModule(argument_spec(), mutually_exclusive=[("private", "generate")]).run(ensure)


if __name__ == "__main__":
    main()
