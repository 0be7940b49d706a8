# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
name: machines
short_description: The machines of a cloudcron service as inventory hosts
description:
  - Reads the clouds of the token's org and their machines from a cloudcron service.
  - Each machine becomes a host with C(ansible_host), C(ansible_port) and C(ansible_user) set from
    its SSH settings, in a group per cloud (C(cloud_<title>)), per provider (C(provider_<name>))
    and per tag (C(tag_<key>_<value>)), all under the group C(cloudcron).
  - Listing the machines of a libcloud cloud asks its provider; a cloud whose provider cannot be
    reached is skipped with a warning (an error with O(strict=true)).
  - The configuration file name must end in C(cloudcron.yml) or C(cloudcron.yaml).
author:
  - cloudcron contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin; it makes the file a source for it.
    type: str
    required: true
    choices: [cloudcron.scheduler.machines]
  url:
    description:
      - Address of the cloudcron service, for example V(http://127.0.0.1:8080).
    type: str
    required: true
    env:
      - name: CLOUDCRON_URL
  token:
    description:
      - An API token of the org whose machines to list. Prefer the environment variable to writing it in the file.
    type: str
    required: true
    env:
      - name: CLOUDCRON_TOKEN
  validate_certs:
    description: Whether to check the service's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each answer of the service.
    type: int
    default: 30
  clouds:
    description:
      - Only the machines of these clouds, by title or id. All clouds when empty.
    type: list
    elements: str
    default: []
  hostname:
    description:
      - What names the host. V(name) is the machine's name; when two machines share one, the
        later one is named by its cloudcron id (with a warning).
      - V(id) is the cloudcron machine id, unique within the service.
    type: str
    choices: [name, id]
    default: name
"""

EXAMPLES = r"""
# inventory/lab.cloudcron.yml; run with CLOUDCRON_URL and CLOUDCRON_TOKEN in the environment:
#   ansible-inventory -i inventory/lab.cloudcron.yml --graph
plugin: cloudcron.scheduler.machines
clouds:
  - lab
keyed_groups:
  - key: cloudcron_state
    prefix: state
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
groups:
  dev: cloudcron_tags.env | default('') == 'dev'
"""

from ansible.errors import AnsibleError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import (
    CloudcronClient,
    CloudcronError,
    quote_id,
)

NAME = "cloudcron.scheduler.machines"


def host_vars(machine, cloud):
    """The variables of one machine's host."""
    address = machine.get("host") or next(iter((machine.get("public_ips") or []) + (machine.get("private_ips") or [])), None)
    out = {
        "cloudcron_id": machine["id"],
        "cloudcron_machine_id": machine.get("machine_id"),
        "cloudcron_name": machine.get("name"),
        "cloudcron_cloud_id": cloud["id"],
        "cloudcron_cloud_title": cloud.get("title"),
        "cloudcron_provider": cloud.get("provider"),
        "cloudcron_state": machine.get("state"),
        "cloudcron_tags": machine.get("tags") or {},
        "cloudcron_public_ips": machine.get("public_ips") or [],
        "cloudcron_private_ips": machine.get("private_ips") or [],
        "cloudcron_key_id": machine.get("key_id"),
    }
    if address:
        out["ansible_host"] = address
    if machine.get("port"):
        out["ansible_port"] = machine["port"]
    if machine.get("ssh_user"):
        out["ansible_user"] = machine["ssh_user"]
    return out


def fetch(client, wanted_clouds, warn):
    """Clouds and their machines as the service lists them: {"clouds": [{..., "machines": [...]}]}."""
    clouds = client.list_all("clouds")
    if wanted_clouds:
        wanted = set(wanted_clouds)
        unknown = wanted - set(c["id"] for c in clouds) - set(c["title"] for c in clouds)
        if unknown:
            raise CloudcronError("clouds: no cloud titled or with id %s in this org" % ", ".join(sorted(unknown)))
        clouds = [c for c in clouds if c["id"] in wanted or c["title"] in wanted]
    out = []
    for cloud in clouds:
        try:
            machines = client.list_all("clouds/%s/machines" % quote_id(cloud["id"]))
        except CloudcronError as exc:
            if exc.status != 502:
                raise
            warn("cloudcron: skipping the machines of cloud '%s': %s" % (cloud["title"], exc.message))
            continue
        out.append(dict(cloud, machines=machines))
    return {"clouds": out}


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Hosts from the machines of a cloudcron service."""

    NAME = NAME

    def verify_file(self, path):
        """Whether `path` is a configuration file of this plugin."""
        return super(InventoryModule, self).verify_file(path) and path.endswith(("cloudcron.yml", "cloudcron.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        """Read the service (or the cache) and add the hosts and groups."""
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        data = None
        if use_cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if data is None:
            strict = self.get_option("strict")

            def warn(message):
                if strict:
                    raise AnsibleError(message)
                self.display.warning(message)

            try:
                client = CloudcronClient(self.get_option("url"), self.get_option("token"),
                                         validate_certs=self.get_option("validate_certs"),
                                         timeout=self.get_option("timeout"))
                data = fetch(client, self.get_option("clouds"), warn)
            except CloudcronError as exc:
                raise AnsibleError("cloudcron inventory: %s" % exc.message) from None
        if update_cache:
            self._cache[cache_key] = data
        self._populate(data)

    def _group(self, name):
        return self.inventory.add_group(self._sanitize_group_name(name))

    def _populate(self, data):
        strict = self.get_option("strict")
        top = self.inventory.add_group("cloudcron")
        named = {}
        for cloud in data["clouds"]:
            cloud_group = self._group("cloud_%s" % cloud["title"])
            self.inventory.add_child(top, cloud_group)
            provider_group = self._group("provider_%s" % cloud["provider"])
            self.inventory.add_child(top, provider_group)
            for machine in cloud["machines"]:
                hostname = machine["id"]
                if self.get_option("hostname") == "name" and machine.get("name"):
                    hostname = machine["name"]
                    if hostname in named and named[hostname] != machine["id"]:
                        self.display.warning("cloudcron: two machines are named '%s'; the one of cloud '%s' is "
                                             "listed as %s" % (hostname, cloud["title"], machine["id"]))
                        hostname = machine["id"]
                named[hostname] = machine["id"]
                self.inventory.add_host(hostname, group=cloud_group)
                self.inventory.add_child(provider_group, hostname)
                variables = host_vars(machine, cloud)
                for key, value in variables.items():
                    self.inventory.set_variable(hostname, key, value)
                for tag, value in (machine.get("tags") or {}).items():
                    self.inventory.add_child(self._group("tag_%s_%s" % (tag, value)), hostname)
                self._set_composite_vars(self.get_option("compose"), variables, hostname, strict=strict)
                self._add_host_to_composed_groups(self.get_option("groups"), variables, hostname, strict=strict)
                self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, hostname, strict=strict)
