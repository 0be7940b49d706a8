"""The collection as users get it: the built tarball, ansible-doc on an installed copy, module_defaults,
and what AWX does with a job template (requirements.yml install, credential injectors, ansible-runner).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import jinja2
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AWX_DOCS = REPO_ROOT / "docs" / "awx"
MODULES = ("calendar", "channel", "cloud", "key", "machine", "schedule", "schedule_info", "script")
# What the tarball ships, as galaxy.yml's build_ignore leaves it.
SHIPPED = ("galaxy.yml", "README.md", "meta", "plugins", "playbooks", "docs")


def clean_env(**extra):
    """The environment without the caller's Ansible or cloudcron settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "CLOUDCRON_"))}
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def run(cmd, cwd, env=None, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=env or clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def ansible_env(base: Path, collections: Path, **extra):
    return clean_env(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_HOME=str(base / "home"),
                     ANSIBLE_LOCAL_TEMP=str(base / "tmp"), ANSIBLE_NOCOLOR="1", **extra)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    rc, output = run([BIN / "ansible-galaxy", "collection", "build", "--output-path", out, REPO_ROOT], REPO_ROOT)
    assert rc == 0, output
    path, = out.glob("cloudcron-scheduler-*.tar.gz")
    return path


@pytest.fixture(scope="module")
def installed(tarball, tmp_path_factory):
    """The tarball installed with ansible-galaxy into a fresh collections path."""
    base = tmp_path_factory.mktemp("installed")
    rc, output = run([BIN / "ansible-galaxy", "collection", "install", "-p", base / "collections", tarball], base,
                     env=ansible_env(base, base / "collections"))
    assert rc == 0, output
    assert (base / "collections" / "ansible_collections" / "cloudcron" / "scheduler" / "MANIFEST.json").is_file()
    return base


def test_the_tarball_ships_the_collection_and_leaves_out_the_service(tarball):
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for path in ("meta/runtime.yml", "README.md", "docs/awx.md", "docs/awx/credential_type.yml",
                 "playbooks/power.yml.j2", "plugins/inventory/machines.py", "plugins/doc_fragments/connection.py",
                 "plugins/module_utils/_client.py") + tuple("plugins/modules/%s.py" % m for m in MODULES):
        assert path in names, path
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.rst", "changelogs", "meta", "plugins",
                    "playbooks", "docs"}, tops
    assert "changelogs/changelog.yaml" in names  # Galaxy reads the changelog from the tarball
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_ansible_doc_renders_the_installed_modules_and_inventory_plugin(installed):
    env = ansible_env(installed, installed / "collections")
    rc, output = run([BIN / "ansible-doc", "cloudcron.scheduler.schedule"], installed, env=env)
    assert rc == 0, output
    for text in ("cloudcron.scheduler.schedule", "schedule_entry", "CLOUDCRON_URL", "run_timeout", "EXAMPLES"):
        assert text in output, text
    rc, output = run([BIN / "ansible-doc", "-t", "inventory", "cloudcron.scheduler.machines"], installed, env=env)
    assert rc == 0 and "keyed_groups" in output, output
    rc, output = run([BIN / "ansible-doc", "-l", "cloudcron.scheduler"], installed, env=env)
    assert rc == 0, output
    assert sorted(line.split()[0] for line in output.splitlines() if line.startswith("cloudcron.")) == \
        ["cloudcron.scheduler.%s" % m for m in MODULES]


def test_module_defaults_for_the_action_group_supply_url_and_token(installed, service):
    token = service.create_token("collection-module-defaults")
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "module_defaults": {"group/cloudcron.scheduler.all": {"url": service.url, "token": token}},
        "tasks": [
            {"cloudcron.scheduler.script": {"name": "hello", "script": "#!/bin/sh\necho hi\n"}},
            {"cloudcron.scheduler.schedule_info": {}, "register": "info"},
            {"ansible.builtin.assert": {"that": ["info.schedules == []"]}},
        ],
    }]
    (installed / "defaults.yml").write_text(yaml.safe_dump(play))
    rc, output = run([BIN / "ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
                      "ansible_python_interpreter=%s" % sys.executable, installed / "defaults.yml"], installed,
                     env=ansible_env(installed, installed / "collections"))
    assert rc == 0, output[-3000:]
    status, scripts = service.api("GET", "scripts?name=hello", token=token)
    assert status == 200 and len(scripts) == 1


def _git_source(base: Path) -> Path:
    """A git repository holding the collection's shipped files, like the project's own repository."""
    src = base / "cloudcron.git"
    src.mkdir()
    for name in SHIPPED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    git = ["git", "-c", "user.name=cloudcron tests", "-c", "user.email=tests@cloudcron.invalid", "-c", "init.defaultBranch=main"]
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "collection"]):
        rc, output = run(git + cmd, src)
        assert rc == 0, output
    return src


def _injected_env(inputs: dict) -> dict:
    """What AWX puts in a job's environment for a credential of the documented type."""
    credential_type = yaml.safe_load((AWX_DOCS / "credential_type.yml").read_text())
    fields = {f["id"] for f in credential_type["inputs"]["fields"]}
    assert set(credential_type["inputs"]["required"]) <= fields
    secret = {f["id"] for f in credential_type["inputs"]["fields"] if f.get("secret")}
    assert "token" in secret  # AWX masks it and never shows it back
    return {name: jinja2.Template(template).render(**inputs)
            for name, template in credential_type["injectors"]["env"].items()}


def test_awx_job_template_flow_declares_the_documented_schedules(tmp_path, service):
    import ansible_runner

    token = service.create_token("collection-awx")
    # 1. Project sync: the project's collections/requirements.yml, pointed at a git copy of this repository.
    requirements = yaml.safe_load((AWX_DOCS / "collections" / "requirements.yml").read_text())
    entry, = requirements["collections"]
    assert entry["type"] == "git"
    entry["name"] = "git+file://%s" % _git_source(tmp_path)
    project = tmp_path / "project"
    (project / "collections").mkdir(parents=True)
    (project / "collections" / "requirements.yml").write_text(yaml.safe_dump(requirements))
    shutil.copy2(AWX_DOCS / "schedules.yml", project / "schedules.yml")
    collections = tmp_path / "requirements_collections"
    rc, output = run([BIN / "ansible-galaxy", "collection", "install", "-r", "collections/requirements.yml",
                      "-p", collections], project, env=ansible_env(tmp_path, collections))
    assert rc == 0, output
    assert (collections / "ansible_collections" / "cloudcron" / "scheduler" / "plugins" / "modules" / "schedule.py").is_file()
    assert not (collections / "ansible_collections" / "cloudcron" / "scheduler" / "web").exists()

    # 2. The job: the playbook through ansible-runner, the credential's injectors in the environment.
    env = _injected_env({"url": service.url, "token": token})
    assert set(env) == {"CLOUDCRON_URL", "CLOUDCRON_TOKEN"}
    envvars = dict(env, ANSIBLE_COLLECTIONS_PATH=str(collections), PATH=clean_env()["PATH"],
                   ANSIBLE_HOME=str(tmp_path / "home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))

    def job(name):
        (tmp_path / name).mkdir()
        return ansible_runner.run(
            private_data_dir=str(tmp_path / name), project_dir=str(project), playbook="schedules.yml",
            inventory="localhost ansible_connection=local ansible_python_interpreter=%s" % sys.executable,
            envvars=envvars, quiet=True, timeout=300,
        )

    first = job("job1")
    assert (first.status, first.rc) == ("successful", 0), first.stdout.read()[-3000:]
    assert first.stats["changed"].get("localhost", 0) >= 4
    names = sorted(s["name"] for s in service.api("GET", "schedules", token=token)[1])
    assert names == ["dev-uptime-report", "lab-nightly-stop"]
    nightly = service.api("GET", "schedules?name=lab-nightly-stop", token=token)[1][0]
    assert nightly["timezone"] == "Europe/Athens" and nightly["schedule_entry"]["day_of_week"] == "mon-fri"
    second = job("job2")
    assert (second.status, second.rc) == ("successful", 0), second.stdout.read()[-3000:]
    assert second.stats["changed"].get("localhost", 0) == 0
    assert token not in second.stdout.read()
