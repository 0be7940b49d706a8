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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronClient,
    CloudcronError,
    connection_argument_spec,
    quote_id,
)

SECRET_SHOWN = "(write-only: sent)"


def secret_body(params):
    """The write-only part of a create or update."""
    if params.get("generate"):
        return {"generate": True}
    if params.get("private"):
        return {"private": params["private"]}
    return None


def ensure(client, params, check_mode):
    """Bring the key to the requested state; return the module's result."""
    name = params["name"]
    current = client.find_one("keys", "name", name)
    if params["state"] == "absent":
        if current is None:
            return dict(changed=False, key=None, diff=dict(before={}, after={}))
        if not check_mode:
            client.delete("keys/" + quote_id(current["id"]))
        return dict(changed=True, key=None, diff=dict(before=current, after={}))
    secret = secret_body(params)
    if current is None:
        if secret is None:
            raise CloudcronError("key '%s' does not exist; to create it give private or generate: true" % name)
        body = dict(secret, name=name)
        created = dict(name=name, public=None) if check_mode else client.post("keys", body)
        return dict(changed=True, key=created, diff=dict(before={}, after=dict(name=name, private=SECRET_SHOWN)))
    if params["update_secrets"] and secret is not None:
        updated = current if check_mode else client.patch("keys/" + quote_id(current["id"]), secret)
        return dict(changed=True, key=updated,
                    diff=dict(before=dict(private="(write-only)"), after=dict(private=SECRET_SHOWN)))
    return dict(changed=False, key=current, diff=dict(before={}, after={}))


def main():
    """Run the module."""
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        private=dict(type="str", no_log=True),
        generate=dict(type="bool"),
        update_secrets=dict(type="bool", default=False, no_log=False),
    )
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=[("private", "generate")],
                           supports_check_mode=True)
    try:
        client = CloudcronClient.from_params(module.params)
        result = ensure(client, module.params, module.check_mode)
    except CloudcronError as exc:
        module.fail_json(msg=exc.message, status=exc.status)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
