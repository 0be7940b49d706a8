#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: machine
short_description: Start, stop, restart or remove cloud machines through Apache Libcloud
description:
  - Brings a list of cloud machines to a power state with one Apache Libcloud compute driver.
  - Lists the provider's machines once, then acts only on the machines not yet in the requested
    state, so running the task again changes nothing.
  - With V(ec2), the listing asks only for the machines in O(machine_ids) (an instance-id filter,
    200 ids per call), so its cost does not grow with the number of machines in the account.
  - This is the action cloudcron runs for the C(start), C(stop), C(reboot) and C(destroy)
    schedule actions; it can also be used on its own.
  - The module talks to the cloud API from the host it runs on, usually C(localhost).
author:
  - cloudcron contributors (!UNKNOWN)
requirements:
  - apache-libcloud >= 3.8
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  provider:
    description:
      - Libcloud compute provider name, for example V(ec2), V(gce), V(openstack) or V(azure_arm).
    type: str
    required: true
  credentials:
    description:
      - The driver's constructor credentials, for example C(key) (AWS access key id),
        C(secret) (AWS secret access key) and C(token) (AWS session token) for V(ec2).
      - Never logged nor shown in output. Where a value would appear in a message (also percent-encoded,
        base64-encoded or escaped), it is replaced by C(********) as a whole word; values of fewer than 4
        characters are left to Ansible's own no_log masking.
    type: dict
    required: true
  driver_options:
    description:
      - Extra keyword arguments for the driver, for example C(region), C(host), C(port), C(secure)
        or C(signature_version).
      - A C(timeout) in seconds for each API call defaults to 60 when the driver accepts one.
      - A URL in any option must be C(http) or C(https); a C(host) that is an address in O(denied_networks) is refused.
      - Keep secrets in O(credentials); these options may appear in output.
    type: dict
    default: {}
  call_timeout:
    description:
      - The most seconds one cloud call (the listing, or one machine's action) may take, retries included.
      - Lowers the C(timeout) of O(driver_options) to it when that is larger.
      - Unset, calls are bounded only by the driver's C(timeout) and the retries.
    type: float
  denied_networks:
    description:
      - Address ranges (CIDR) the module never connects to, checked on the address a host name resolves to.
      - The default refuses link-local addresses, which hold cloud metadata services, and EC2's IPv6 metadata address.
      - An empty list allows every address.
    type: list
    elements: str
    default: ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"]
  concurrency:
    description:
      - How many machines are acted on at once; each concurrent call uses a driver of its own.
      - Cloud APIs throttle; answers that say so are retried after growing pauses with jitter.
    type: int
    default: 8
  verify_seconds:
    description:
      - After acting, wait until the cloud reports each machine in its end state (V(started) and V(restarted)
        running, V(stopped) stopped, V(absent) terminated or gone), at most this many seconds.
      - A machine that does not get there fails with C(did not reach <state> within N s).
      - V(0) trusts the accepted API call.
    type: float
    default: 0
  machine_ids:
    description:
      - Provider ids of the machines to act on, for example EC2 instance ids. Repeated ids are acted on once.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(started) starts machines that are not running or booting.
      - V(stopped) stops machines that are not stopped or stopping.
      - V(restarted) reboots running machines. Machines that are stopped stay stopped and are reported
        unchanged; machines that are booting already are also left alone.
      - V(absent) destroys machines. Machines already terminated, or no longer listed by the provider,
        are reported unchanged.
      - A machine id the provider does not list fails, except with V(absent). A terminated machine fails
        with every state but V(absent).
    type: str
    required: true
    choices: [started, stopped, restarted, absent]
notes:
  - The task fails when any machine failed; the other machines are still acted on and every
    machine's outcome is in RV(results).
  - Network errors and server errors are retried twice, throttling answers (HTTP 429, EC2's
    C(RequestLimitExceeded)) four times; authentication errors and refused requests are not retried.
"""

EXAMPLES = r"""
- name: Stop two EC2 instances
  cloudcron.scheduler.machine:
    provider: ec2
    credentials:
      key: "{{ aws_access_key_id }}"
      secret: "{{ aws_secret_access_key }}"
    driver_options:
      region: eu-west-1
    machine_ids:
      - i-0123456789abcdef0
      - i-0fedcba9876543210
    state: stopped

- name: Reboot a machine against an EC2-compatible endpoint
  cloudcron.scheduler.machine:
    provider: ec2
    credentials: "{{ ec2_credentials }}"
    driver_options:
      host: ec2.internal.example.com
      port: 8443
      region: us-east-1
      signature_version: "4"
    machine_ids: [i-0123456789abcdef0]
    state: restarted
"""

RETURN = r"""
results:
  description: One entry per distinct requested machine, in the order requested.
  returned: always
  type: list
  elements: dict
  contains:
    machine_id:
      description: The requested machine id.
      type: str
      returned: always
      sample: i-0123456789abcdef0
    changed:
      description: Whether an action was requested from the cloud (or would be, in check mode).
      type: bool
      returned: always
      sample: true
    failed:
      description: Whether the machine could not be brought to the requested state.
      type: bool
      returned: always
      sample: false
    state:
      description:
        - Libcloud node state after the task as far as it is known, such as V(running), V(stopped) or V(terminated).
        - After an accepted action, the state the machine is on its way to; in check mode, its current state.
        - V(null) when the provider does not list the machine.
      type: str
      returned: always
      sample: stopped
    msg:
      description: What was done or why not.
      type: str
      returned: always
      sample: asked the cloud to stop machine i-0123456789abcdef0 (was running)
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.cloudcron.scheduler.plugins.module_utils._libcloud import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DENIED_NETWORKS,
    HAS_LIBCLOUD,
    LIBCLOUD_IMPORT_ERROR,
    POWER_STATES,
    get_driver,
    power,
)
from ansible_collections.cloudcron.scheduler.plugins.module_utils._redact import Redactor, secret_forms, secret_strings

NO_LOG_MARK = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def _marked(value):
    if isinstance(value, dict):
        return {k: _marked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_marked(v) for v in value]
    return value if value is None or isinstance(value, bool) else NO_LOG_MARK


def hide_credentials(module):
    """Take over the masking of the credentials from Ansible; return (redactor, invocation to report).

    Ansible masks a no_log value wherever it occurs, inside words too: a secret "list" made
    "listing machines failed" read "********ing machines failed". Here the credentials are
    masked as whole tokens and in their encoded forms (module_utils/_redact.py), and the module's
    arguments are reported with the credentials replaced by Ansible's usual marker. Values too
    short for that redaction stay under Ansible's own masking.
    """
    credentials = module.params["credentials"]
    module.no_log_values.difference_update(v for v in secret_strings(credentials) if secret_forms(v))
    invocation = {"module_args": dict(module.params, credentials=_marked(credentials))}
    return Redactor([credentials]), invocation


def main():
    """Run the module."""
    module = AnsibleModule(
        argument_spec=dict(
            provider=dict(type="str", required=True),
            credentials=dict(type="dict", required=True, no_log=True),
            driver_options=dict(type="dict", default={}),
            call_timeout=dict(type="float"),
            denied_networks=dict(type="list", elements="str", default=list(DEFAULT_DENIED_NETWORKS)),
            concurrency=dict(type="int", default=DEFAULT_CONCURRENCY),
            verify_seconds=dict(type="float", default=0),
            machine_ids=dict(type="list", elements="str", required=True),
            state=dict(type="str", required=True, choices=list(POWER_STATES)),
        ),
        supports_check_mode=True,
    )
    if not HAS_LIBCLOUD:
        module.fail_json(msg=missing_required_lib("apache-libcloud"), exception=str(LIBCLOUD_IMPORT_ERROR))

    params = module.params
    if params["call_timeout"] is not None and not params["call_timeout"] > 0:
        module.fail_json(msg="call_timeout: must be greater than 0")
    if params["concurrency"] < 1:
        module.fail_json(msg="concurrency: must be at least 1")
    if not 0 <= params["verify_seconds"] <= 86400:
        module.fail_json(msg="verify_seconds: must be from 0 to 86400")
    redactor, invocation = hide_credentials(module)

    def make_driver():
        return get_driver(params["provider"], params["credentials"], params["driver_options"],
                          call_timeout=params["call_timeout"], denied_networks=params["denied_networks"])

    try:
        driver = make_driver()
    except ValueError as exc:
        # Every machine gets its outcome, so a run records one result per machine either way.
        results = [
            dict(machine_id=m, changed=False, failed=True, state=None, msg=str(exc))
            for m in dict.fromkeys(params["machine_ids"])
        ]
    else:
        results = power(driver, params["machine_ids"], params["state"], check_mode=module.check_mode,
                        concurrency=params["concurrency"], driver_factory=make_driver,
                        verify_seconds=params["verify_seconds"])
    results = redactor.redact_data(results)
    changed = any(r["changed"] for r in results)
    failed = [r for r in results if r["failed"]]
    if failed:
        names = ", ".join(r["machine_id"] for r in failed)
        details = "; ".join(dict.fromkeys(r["msg"] for r in failed))
        msg = "%d of %d machines failed (%s): %s" % (len(failed), len(results), names, details)
        module.fail_json(msg=msg, changed=changed, results=results, invocation=invocation)
    module.exit_json(changed=changed, results=results, invocation=invocation)


if __name__ == "__main__":
    main()
