#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloud
short_description: Declare a cloudcron cloud, and the SSH machines of an C(other) cloud
description:
  - Makes sure a cloud of the cloudcron service exists with the given provider and options, or does not exist.
  - The cloud is found by O(title) within the org of O(token).
  - Credentials are write-only. They are sent when the cloud is created, and again only with
    O(update_secrets=true); they are never compared, so a task that gives the same
    credentials reports no change.
  - For an V(other) cloud (SSH hosts you declare), O(machines) declares its machines.
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
    details: Credentials are never shown; the diff says whether they would be sent.
  platform:
    platforms: posix
options:
  title:
    description:
      - Title of the cloud, unique within the org.
    type: str
    required: true
    aliases: [name]
  state:
    description:
      - V(present) creates or updates the cloud; V(absent) deletes it (refused while a schedule targets it).
    type: str
    choices: [present, absent]
    default: present
  provider:
    description:
      - Libcloud compute provider name such as V(ec2), V(gce) or V(openstack), or V(other) for SSH hosts you declare.
      - Required to create the cloud; cannot change afterwards.
    type: str
  credentials:
    description:
      - The driver's constructor credentials, for example C(key) and C(secret) for V(ec2).
      - Sent on creation and when O(update_secrets=true). Never logged nor returned.
    type: dict
  options:
    description:
      - Extra driver arguments such as C(region), C(host), C(port), C(secure) or C(signature_version).
      - Compared with the stored options as a whole.
    type: dict
  update_secrets:
    description:
      - Send O(credentials) to an existing cloud. The task then always reports a change.
    type: bool
    default: false
  machines:
    description:
      - Machines of an V(other) cloud, found by O(machines[].machine_id). Missing ones are declared,
        differing ones updated; fields left unset are not managed.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Name of the machine.
        type: str
        required: true
      machine_id:
        description:
          - The machine's id within the cloud, used in schedules' C(machines_per_cloud). Defaults to O(machines[].name).
        type: str
      host:
        description:
          - Address to reach it over SSH. Required to declare a machine.
        type: str
      port:
        description:
          - SSH port (service default 22).
        type: int
      ssh_user:
        description:
          - SSH user (service default V(root)).
        type: str
      key:
        description:
          - SSH key of cloudcron to log in with, by name or id (see M(cloudcron.scheduler.key)). V("") clears it.
        type: str
      tags:
        description:
          - Tags of the machine, matched by schedules' tag selectors and the inventory plugin's groups.
        type: dict
  purge_machines:
    description:
      - Forget the machines of the cloud that O(machines) does not list.
    type: bool
    default: false
seealso:
  - module: cloudcron.scheduler.key
  - module: cloudcron.scheduler.schedule
"""

EXAMPLES = r"""
- name: An EC2 region cloudcron can power machines in
  cloudcron.scheduler.cloud:
    title: aws-dev
    provider: ec2
    credentials:
      key: "{{ aws_access_key_id }}"
      secret: "{{ aws_secret_access_key }}"
    options:
      region: eu-west-1

- name: SSH hosts that scripts run on
  cloudcron.scheduler.cloud:
    title: lab
    provider: other
    machines:
      - name: web1
        host: 192.0.2.10
        ssh_user: deploy
        key: lab-key
        tags:
          env: dev

- name: Rotate the EC2 credentials
  cloudcron.scheduler.cloud:
    title: aws-dev
    credentials: "{{ new_aws_credentials }}"
    update_secrets: true
"""

RETURN = r"""
cloud:
  description: The cloud as the service returns it (never with credentials); null after O(state=absent).
  returned: always
  type: dict
  sample:
    id: b48a696e84554275a52fbe6278f6df56
    title: aws-dev
    provider: ec2
    options: {region: eu-west-1}
    created_at: "2030-01-01T10:00:00Z"
    updated_at: "2030-01-01T10:00:00Z"
machines:
  description: The cloud's declared machines after the task, when O(machines) is given.
  returned: when O(machines) is given
  type: list
  elements: dict
  sample:
    - id: 8fdcddabfc061e694cce253922ab27a9
      machine_id: web1
      name: web1
      host: 192.0.2.10
      port: 22
      ssh_user: deploy
      key_id: 339d309c692de2d92660b77078f6f790
      tags: {env: dev}
changed_fields:
  description: Names of the fields that changed, with C(machines.<machine_id>.<field>) for machines.
  returned: always
  type: list
  elements: str
  sample: [options, machines.web1.host]
"""

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronError,
    changed_fields,
    quote_id,
)
from ansible_collections.cloudcron.scheduler.plugins.module_utils._module import CloudcronModule, absent, present

MACHINE_FIELDS = ("name", "host", "port", "ssh_user", "key_id", "tags")


def desired_machine(item, key_id_of):
    """A machine option as the API fields it manages."""
    want = {"machine_id": item.get("machine_id") or item["name"], "name": item["name"]}
    for field in ("host", "port", "ssh_user"):
        if item.get(field) is not None:
            want[field] = item[field]
    if item.get("tags") is not None:
        want["tags"] = {str(k): str(v) for k, v in item["tags"].items()}
    if item.get("key") is not None:
        want["key_id"] = key_id_of(item["key"]) if item["key"] else None
    return want


class KeyIds:
    """Key names to ids, one lookup per distinct name, none for an id a machine already uses."""

    def __init__(self, client, known_ids):
        self.client = client
        self.known = set(known_ids)
        self.cache = {}

    def __call__(self, value):
        if value in self.known:
            return value
        if value not in self.cache:
            self.cache[value] = self.client.find("keys", "name", value, "key")["id"]
        return self.cache[value]


def ensure_machines(client, cloud, items, purge, check_mode):
    """Declare, update and (with purge) forget the machines of an `other` cloud.

    Returns (changed field names, machines after, diff before, diff after); the diffs are keyed by machine_id.
    """
    existing = client.list_all("clouds/%s/machines" % quote_id(cloud["id"])) if cloud.get("id") else []
    by_id = dict((m["machine_id"], m) for m in existing)
    key_id_of = KeyIds(client, [m.get("key_id") for m in existing if m.get("key_id")])
    fields, result, seen, before, after = [], [], set(), {}, {}
    for item in items:
        want = desired_machine(item, key_id_of)
        mid = want["machine_id"]
        seen.add(mid)
        current = by_id.get(mid)
        if current is None:
            if not want.get("host"):
                raise CloudcronError("machines: machine '%s' does not exist; to declare it give its host" % mid)
            fields.append("machines.%s" % mid)
            body = dict((k, v) for k, v in want.items() if v is not None)
            after[mid] = body
            result.append(body if check_mode else client.post("clouds/%s/machines" % quote_id(cloud["id"]), body))
            continue
        changes = [f for f in changed_fields(want, current) if f != "machine_id"]
        if changes:
            fields.extend("machines.%s.%s" % (mid, f) for f in changes)
            patch = dict((f, want[f]) for f in changes)
            before[mid] = dict((f, current.get(f)) for f in changes)
            after[mid] = patch
            current = dict(current, **patch) if check_mode else client.patch(
                "clouds/%s/machines/%s" % (quote_id(cloud["id"]), quote_id(current["id"])), patch)
        result.append(current)
    for machine in existing:
        if machine["machine_id"] in seen:
            continue
        if purge:
            fields.append("machines.%s" % machine["machine_id"])
            before[machine["machine_id"]] = dict((f, machine.get(f)) for f in MACHINE_FIELDS)
            if not check_mode:
                client.delete("clouds/%s/machines/%s" % (quote_id(cloud["id"]), quote_id(machine["id"])))
        else:
            result.append(machine)
    return fields, result, before, after


def ensure(client, params, check_mode):
    """Bring the cloud (one apply, or a delete) and its declared machines to the requested state; return the result."""
    title = params["title"]
    if params["state"] == "absent":
        return absent(client, "clouds", "cloud", "title", title, check_mode)
    if params.get("machines") is not None and params.get("provider") not in (None, "other"):
        raise CloudcronError("machines: only an 'other' cloud takes declared machines; cloud '%s' is '%s'"
                             % (title, params["provider"]))
    body = dict((field, params[field]) for field in ("provider", "options", "credentials")
                if params.get(field) is not None)
    result = present(client, "clouds", "cloud", title, body, check_mode, update_secrets=params["update_secrets"],
                     by="title")
    cloud = result["cloud"]
    if params.get("machines") is not None:
        if cloud.get("provider") != "other":
            raise CloudcronError("machines: only an 'other' cloud takes declared machines; cloud '%s' is '%s'"
                                 % (title, cloud.get("provider")))
        machine_fields, machines, machines_before, machines_after = ensure_machines(
            client, cloud, params["machines"], params["purge_machines"], check_mode)
        result["machines"] = machines
        if machine_fields:
            result["changed"] = True
            result["changed_fields"] = result["changed_fields"] + machine_fields
            result["diff"]["before"]["machines"] = machines_before
            result["diff"]["after"]["machines"] = machines_after
    return result


def argument_spec():
    """The module's own options (the connection options come from the module base)."""
    return dict(
        title=dict(type="str", required=True, aliases=["name"]),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        provider=dict(type="str"),
        credentials=dict(type="dict", no_log=True),
        options=dict(type="dict"),
        update_secrets=dict(type="bool", default=False, no_log=False),
        machines=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            machine_id=dict(type="str"),
            host=dict(type="str"),
            port=dict(type="int"),
            ssh_user=dict(type="str"),
            key=dict(type="str", no_log=False),
            tags=dict(type="dict"),
        )),
        purge_machines=dict(type="bool", default=False),
    )


def main():
    """Run the module."""
    CloudcronModule(argument_spec()).run(ensure)


if __name__ == "__main__":
    main()
