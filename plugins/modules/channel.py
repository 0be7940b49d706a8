#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: channel
short_description: Declare a cloudcron notification channel (an Apprise URL or a signed webhook)
description:
  - Makes sure a notification channel of the cloudcron service exists, or does not exist.
  - Schedules name channels in their O(cloudcron.scheduler.schedule#module:notify) setting; a channel with
    O(default=true) is notified for the schedules that have no notify setting.
  - The channel is found by O(name) within the org of O(token); the service compares and answers the change.
  - O(channel_url) and O(secret) are write-only (they may hold credentials). They are sent when the channel is
    created, and again only with O(update_secrets=true) or when O(kind) changes; they are never compared,
    so a task that gives the same values reports no change.
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
    details: The URL and the secret are never shown; the diff names them when they would be sent.
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the channel, unique within the org.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the channel; V(absent) deletes it (refused while a schedule notifies it).
    type: str
    choices: [present, absent]
    default: present
  kind:
    description:
      - V(apprise) sends through the Apprise library to the service O(channel_url) names (Slack, Teams, e-mail over
        an HTTP API, Matrix, PagerDuty, ntfy, JSON webhooks, ...).
      - V(webhook) POSTs cloudcron's own JSON event to O(channel_url), signed with O(secret) in the
        C(X-Cloudcron-Signature) header.
      - Required to create the channel.
    type: str
    choices: [apprise, webhook]
  channel_url:
    description:
      - For V(apprise), an Apprise URL such as V(slack://TokenA/TokenB/TokenC/#ops); for V(webhook), an
        http(s) URL. Never logged nor returned (answers show only its scheme, and a webhook's host).
      - The API's C(url) field; named so because O(url) is the address of the cloudcron service.
      - Required to create the channel.
    type: str
  secret:
    description:
      - The key a V(webhook) channel signs its events with, at least 16 characters; receivers verify the
        signature with it. Never logged nor returned. Only webhook channels take one.
    type: str
  default:
    description:
      - Whether schedules without a notify setting notify this channel.
      - The service's default is V(false).
    type: bool
  update_secrets:
    description:
      - Send O(channel_url) and O(secret) to an existing channel, replacing the stored ones. The task then always
        reports a change.
    type: bool
    default: false
seealso:
  - module: cloudcron.scheduler.schedule
"""

EXAMPLES = r"""
- name: Failed runs go to the ops Slack channel
  cloudcron.scheduler.channel:
    name: ops-slack
    kind: apprise
    channel_url: "slack://{{ slack_token_a }}/{{ slack_token_b }}/{{ slack_token_c }}/#ops"
    default: true

- name: A signed webhook to the incident tool
  cloudcron.scheduler.channel:
    name: incidents
    kind: webhook
    channel_url: https://hooks.example.com/cloudcron
    secret: "{{ vault_cloudcron_webhook_secret }}"

- name: Rotate the webhook's secret
  cloudcron.scheduler.channel:
    name: incidents
    kind: webhook
    channel_url: https://hooks.example.com/cloudcron
    secret: "{{ vault_cloudcron_webhook_secret_new }}"
    update_secrets: true

- name: A schedule that notifies the webhook when a run fails
  cloudcron.scheduler.schedule:
    name: nightly-stop
    action: stop
    machines_per_cloud: [[lab, web-1]]
    schedule_type: crontab
    schedule_entry: {minute: 0, hour: 20}
    notify:
      on: [failed, partial]
      channels: [incidents]
"""

RETURN = r"""
channel:
  description: The channel as the service returns it (never the URL whole nor the secret); null after O(state=absent).
  returned: always
  type: dict
  sample:
    id: 5b2f0c1e9a7d4c3b8e6f1a2d3c4b5a69
    name: incidents
    kind: webhook
    url: https://hooks.example.com/…
    has_secret: true
    default: false
    created_at: "2030-01-01T10:00:00Z"
    updated_at: "2030-01-01T10:00:00Z"
changed_fields:
  description: Names of the fields that changed (or would, in check mode); V(url) and V(secret) when they are sent.
  returned: always
  type: list
  elements: str
  sample: [default]
"""

from ansible_collections.cloudcron.scheduler.plugins.module_utils._module import CloudcronModule, absent, present


# option name -> API field
FIELDS = {"kind": "kind", "channel_url": "url", "secret": "secret", "default": "default"}


def desired_body(params):
    """The options given, as the API's fields (url and secret too: the service uses them on create only,
    or with update_secrets)."""
    return dict((field, params[option]) for option, field in FIELDS.items() if params.get(option) is not None)


def ensure(client, params, check_mode):
    """Bring the channel to the requested state with one apply (or a delete); return the module's result."""
    if params["state"] == "absent":
        return absent(client, "channels", "channel", "name", params["name"], check_mode)
    return present(client, "channels", "channel", params["name"], desired_body(params), check_mode,
                   update_secrets=params["update_secrets"])


def argument_spec():
    """The module's own options (the connection options come from the module base)."""
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        kind=dict(type="str", choices=["apprise", "webhook"]),
        channel_url=dict(type="str", no_log=True),
        secret=dict(type="str", no_log=True),
        default=dict(type="bool"),
        update_secrets=dict(type="bool", default=False, no_log=False),
    )


def main():
    """Run the module."""
    CloudcronModule(argument_spec()).run(ensure)


if __name__ == "__main__":
    main()
