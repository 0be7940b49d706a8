# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base of this collection's modules: connection options, the client, one apply or delete per resource.

Internal to the cloudcron.scheduler collection: not a public API, may change without notice.
Each module only maps its options to the API's fields; the service owns the rules (normalising,
checking, comparing): present is one PUT <collection>/by-name/<name> (with dry_run in check mode),
and the module reports the service's changed, diff and resource. Errors of the client
(CloudcronError) become fail_json here, and only here.
"""

from __future__ import annotations

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronClient,
    CloudcronError,
    connection_argument_spec,
    quote_id,
)


def jsonable(value):
    """`value` with YAML's dates (an unquoted 2030-01-01 10:00) back as the text they were written as, for JSON.

    A date and time is sent as YYYY-MM-DD HH:MM:SS, which the service reads in the resource's timezone."""
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, dict):
        return dict((str(k), jsonable(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def present(client, collection, key, name, body, check_mode, update_secrets=False, by="name"):
    """Apply `body` as the desired state of the resource called `name`: one request.

    Returns the module result: the service's changed, changed_fields and diff, and the resource
    under `key` (in check mode, as it would be stored)."""
    answer = client.apply(collection, name, jsonable(body), dry_run=check_mode, update_secrets=update_secrets, by=by)
    return dict(changed=answer["changed"], changed_fields=answer["changed_fields"], diff=answer["diff"],
                **{key: answer[key]})


def absent(client, collection, key, field, name, check_mode):
    """Delete the resource whose `field` (name or title) is `name`, if it exists: one GET, and a DELETE when found."""
    current = client.find_one(collection, field, name)
    if current is None:
        return dict(changed=False, changed_fields=[], diff=dict(before={}, after={}), **{key: None})
    if not check_mode:
        client.delete("%s/%s" % (collection, quote_id(current["id"])))
    return dict(changed=True, changed_fields=["state"], diff=dict(before=current, after={}), **{key: None})


class CloudcronModule(AnsibleModule):
    """An AnsibleModule with the connection options (see the connection doc fragment), check mode, and a client.

    `argument_spec` holds the module's own options; run() calls the module's function with the client
    and turns CloudcronError into fail_json (with the API's status)."""

    def __init__(self, argument_spec, **kwargs):
        spec = connection_argument_spec()
        spec.update(argument_spec)
        kwargs.setdefault("supports_check_mode", True)
        super(CloudcronModule, self).__init__(argument_spec=spec, **kwargs)

    def run(self, ensure):
        """exit_json with ensure(client, params, check_mode)'s result, or fail_json with the client's error."""
        try:
            client = CloudcronClient.from_params(self.params)
            result = ensure(client, self.params, self.check_mode)
        except CloudcronError as exc:
            self.fail_json(msg=exc.message, status=exc.status)
        self.exit_json(**result)
