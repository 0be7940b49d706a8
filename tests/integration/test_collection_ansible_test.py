"""ansible-test sanity and units on the built collection, installed under ansible_collections/cloudcron/scheduler.

ansible-test wants the collection at .../ansible_collections/<namespace>/<name> and tests what the
tarball ships, so the tarball is built and installed into a temporary tree (with tests/unit/plugins
and tests/sanity copied in, as they do not ship). All sanity tests run, validate-modules and
pylint included, on Python 3.11 only: the controller's Python, the one the modules run on here.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PYTHON_VERSION = "%d.%d" % sys.version_info[:2]

# ansible-test bootstraps pip in each test venv with a script it downloads from a host that an
# offline CI cannot reach; it first looks in its cache. This stand-in bootstraps pip from the
# standard library instead, then installs what ansible-test asks for from the usual index.
GET_PIP_STAND_IN = '''\
# Offline stand-in for ansible-test's pip bootstrap: ensurepip, then pip install the given arguments.
import os
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
env = dict(os.environ)
env.pop("PIP_CONFIG_FILE", None)  # ensurepip points it at /dev/null, hiding the machine's pip config
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]  # get-pip.py-only flags
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args, env=env)
'''


def _pip_bootstrap_version() -> str:
    """The pip version ansible-test bootstraps, which names its cached script."""
    from types import SimpleNamespace

    try:
        from ansible_test._internal.python_requirements import get_venv_packages

        return get_venv_packages(SimpleNamespace(version=PYTHON_VERSION))["pip"]
    except Exception:  # an internal API: fall back to reading the pinned version from its source
        import ansible_test

        source = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
        return re.search(r"pip='([0-9.]+)'", source.read_text()).group(1)


def ensure_pip_bootstrap_stand_in() -> Path:
    """Put the stand-in where ansible-test caches its pip bootstrap script, unless a script is there already."""
    version = _pip_bootstrap_version()
    path = Path(os.path.expanduser("~/.ansible/test/cache/get_pip_%s.py" % version.replace(".", "_")))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".stand-in.tmp")
        tmp.write_text(GET_PIP_STAND_IN)
        tmp.replace(path)
    return path


def _run(cmd, cwd, timeout):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTEST_"))}
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    return subprocess.run(cmd, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory):
    """The built tarball installed under <tmp>/ansible_collections/cloudcron/scheduler, with the tests ansible-test runs."""
    base = tmp_path_factory.mktemp("ansible-test")
    build = _run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(base), str(REPO_ROOT)],
                 REPO_ROOT, 300)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball, = base.glob("cloudcron-scheduler-*.tar.gz")
    install = _run([str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(base / "tree"), str(tarball)],
                   base, 300)
    assert install.returncode == 0, install.stdout + install.stderr
    root = base / "tree" / "ansible_collections" / "cloudcron" / "scheduler"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    # Only the collection's own unit tests: tests/unit/ also holds the service's.
    shutil.copytree(REPO_ROOT / "tests" / "unit" / "plugins", root / "tests" / "unit" / "plugins", ignore=ignore)
    if (REPO_ROOT / "tests" / "sanity").is_dir():
        shutil.copytree(REPO_ROOT / "tests" / "sanity", root / "tests" / "sanity", ignore=ignore)
    ensure_pip_bootstrap_stand_in()
    return root


def test_every_sanity_ignore_entry_gives_a_reason():
    for path in sorted((REPO_ROOT / "tests" / "sanity").glob("ignore-*.txt")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                assert re.search(r"\s#\s*\S", line), "%s:%d has no '# reason': %s" % (path.name, number, line)


@pytest.mark.timeout(1500)  # a fresh machine first installs each sanity test's requirements
def test_ansible_test_sanity_passes_on_the_built_collection(installed_collection):
    proc = _run([str(BIN / "ansible-test"), "sanity", "--python", PYTHON_VERSION, "--requirements", "--color", "no"],
                installed_collection, 1400)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for test in ("validate-modules", "import", "pylint", "ansible-doc", "yamllint", "pep8"):
        assert 'Running sanity test "%s"' % test in output, test


@pytest.mark.timeout(900)
def test_ansible_test_units_pass_on_the_built_collection(installed_collection):
    # --venv keeps pytest-xdist and friends out of the project's own virtualenv.
    proc = _run([str(BIN / "ansible-test"), "units", "--python", PYTHON_VERSION, "--venv", "--requirements",
                 "--color", "no"], installed_collection, 800)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    passed = sum(int(n) for n in re.findall(r"=+ (\d+) passed", output))
    assert passed >= 50, output[-3000:]
    assert " failed" not in output
