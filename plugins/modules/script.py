#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: script
short_description: Declare a cloudcron script that schedules run on machines
description:
  - Makes sure a script of the cloudcron service exists with the given content, or does not exist.
  - The script is found by O(name) within the org of O(token); only differing fields are sent.
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
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the script, unique within the org.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the script; V(absent) deletes it (refused while a schedule uses it).
    type: str
    choices: [present, absent]
    default: present
  script:
    description:
      - The script's content. Required to create it.
      - For V(executable), a program with its C(#!) line; for V(ansible), a task list or a playbook.
    type: str
  exec_type:
    description:
      - How runs execute it (service default V(executable)).
    type: str
    choices: [executable, ansible]
  description:
    description:
      - Free text about the script. V("") clears it.
    type: str
seealso:
  - module: cloudcron.scheduler.schedule
"""

EXAMPLES = r"""
- name: A script that reports uptime
  cloudcron.scheduler.script:
    name: uptime
    description: load and uptime of the machine
    script: |
      #!/bin/sh
      uptime

- name: An Ansible task list run on the target machines
  cloudcron.scheduler.script:
    name: clean-tmp
    exec_type: ansible
    script: "{{ lookup('ansible.builtin.file', 'files/clean-tmp.yml') }}"
"""

RETURN = r"""
script:
  description: The script as the service returns it; null after O(state=absent).
  returned: always
  type: dict
  sample:
    id: 875cabc81fa1438b98ef25f099bbdf09
    name: uptime
    description: load and uptime of the machine
    script: "#!/bin/sh\nuptime\n"
    exec_type: executable
    created_at: "2030-01-01T10:00:00Z"
    updated_at: "2030-01-01T10:00:00Z"
changed_fields:
  description: Names of the fields that changed (or would, in check mode).
  returned: always
  type: list
  elements: str
  sample: [script]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronClient,
    CloudcronError,
    changed_fields,
    connection_argument_spec,
    diff_of,
    quote_id,
)


def desired_fields(params):
    """The fields the task manages, as the API stores them."""
    want = {}
    for field in ("script", "exec_type"):
        if params.get(field) is not None:
            want[field] = params[field]
    if params.get("description") is not None:
        want["description"] = params["description"] or None
    return want


def ensure(client, params, check_mode):
    """Bring the script to the requested state; return the module's result."""
    name = params["name"]
    current = client.find_one("scripts", "name", name)
    if params["state"] == "absent":
        if current is None:
            return dict(changed=False, script=None, changed_fields=[], diff=dict(before={}, after={}))
        if not check_mode:
            client.delete("scripts/" + quote_id(current["id"]))
        return dict(changed=True, script=None, changed_fields=["state"], diff=dict(before=current, after={}))
    want = desired_fields(params)
    if current is None:
        if not want.get("script"):
            raise CloudcronError("script '%s' does not exist; to create it give script" % name)
        body = dict((k, v) for k, v in want.items() if v is not None)
        body["name"] = name
        fields = sorted(body)
        created = dict(body) if check_mode else client.post("scripts", body)
        return dict(changed=True, script=created, changed_fields=fields, diff=diff_of(fields, {}, created))
    fields = changed_fields(want, current)
    if not fields:
        return dict(changed=False, script=current, changed_fields=[], diff=dict(before={}, after={}))
    patch = dict((f, want[f]) for f in fields)
    after = dict(current, **patch) if check_mode else client.patch("scripts/" + quote_id(current["id"]), patch)
    return dict(changed=True, script=after, changed_fields=fields, diff=diff_of(fields, current, after))


def main():
    """Run the module."""
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        script=dict(type="str"),
        exec_type=dict(type="str", choices=["executable", "ansible"]),
        description=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        client = CloudcronClient.from_params(module.params)
        result = ensure(client, module.params, module.check_mode)
    except CloudcronError as exc:
        module.fail_json(msg=exc.message, status=exc.status)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
