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

from ansible_collections.cloudcron.scheduler.plugins.module_utils._module import CloudcronModule, absent, present


def desired_body(params):
    """The options given, as the API's fields."""
    return dict((field, params[field]) for field in ("script", "exec_type", "description") if params.get(field) is not None)


def ensure(client, params, check_mode):
    """Bring the script to the requested state with one apply (or a delete); return the module's result."""
    if params["state"] == "absent":
        return absent(client, "scripts", "script", "name", params["name"], check_mode)
    return present(client, "scripts", "script", params["name"], desired_body(params), check_mode)


def argument_spec():
    """The module's own options (the connection options come from the module base)."""
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        script=dict(type="str"),
        exec_type=dict(type="str", choices=["executable", "ansible"]),
        description=dict(type="str"),
    )


def main():
    """Run the module."""
    CloudcronModule(argument_spec()).run(ensure)


if __name__ == "__main__":
    main()
