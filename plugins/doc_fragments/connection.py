# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by every cloudcron.scheduler module that talks to the service."""

from __future__ import annotations


class ModuleDocFragment:
    """Documentation of url, token, validate_certs and timeout."""

    DOCUMENTATION = r"""
options:
  url:
    description:
      - Address of the cloudcron service, for example V(http://127.0.0.1:8080).
        A trailing C(/api/v1) is accepted.
      - If not set, the value of the E(CLOUDCRON_URL) environment variable is used.
      - Set it once for a play with C(module_defaults) and the group C(group/cloudcron.scheduler.all).
    type: str
    required: true
  token:
    description:
      - An API token of the org that owns the resources (C(python -m web token create --org NAME)).
      - If not set, the value of the E(CLOUDCRON_TOKEN) environment variable is used.
      - Never logged nor returned.
    type: str
    required: true
  validate_certs:
    description:
      - Whether to check the service's TLS certificate when O(url) is C(https://).
      - Only set to V(false) for a service with a self-signed certificate you trust.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each answer of the service.
    type: int
    default: 30
notes:
  - An unreachable service, a rejected token (401) or a refused request (400, 409) fails the
    task with the service's message.
"""
