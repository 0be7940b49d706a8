"""The built tarball passes galaxy-importer (the checker Ansible Galaxy runs on every upload) without a remark,
and the changelog (antsibull-changelog) is well formed.

galaxy-importer and antsibull-changelog live in .venv-galaxy (requirements-galaxy.txt, made by
`make install-test`), apart from the service's virtualenv, whose versions they would change.
ansible-test is off in the importer's configuration: tests/integration/test_collection_ansible_test.py
runs it on the same tarball.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GALAXY_BIN = Path(os.environ.get("CLOUDCRON_GALAXY_VENV", REPO_ROOT / ".venv-galaxy")) / "bin"
BIN = Path(sys.executable).parent
IMPORTER_CONFIG = "[galaxy-importer]\nRUN_ANSIBLE_TEST = False\n"


@pytest.fixture(scope="module")
def galaxy_bin():
    if not (GALAXY_BIN / "python").exists():
        pytest.fail(f"{GALAXY_BIN.parent} is missing: `make install-test` creates it (requirements-galaxy.txt)")
    return GALAXY_BIN


def _env(galaxy_bin, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "GALAXY_"))}
    env["PATH"] = f"{galaxy_bin}{os.pathsep}{env.get('PATH', '')}"  # ansible-lint and ansible-doc of that venv
    env.update(extra)
    return env


@pytest.mark.timeout(900)
def test_galaxy_importer_accepts_the_built_tarball_without_a_warning(galaxy_bin, tmp_path):
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path),
                            str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball, = tmp_path.glob("cloudcron-scheduler-*.tar.gz")
    config = tmp_path / "galaxy-importer.cfg"
    config.write_text(IMPORTER_CONFIG)
    proc = subprocess.run([str(galaxy_bin / "python"), "-m", "galaxy_importer.main", str(tarball)], cwd=str(tmp_path),
                          env=_env(galaxy_bin, GALAXY_IMPORTER_CONFIG=str(config), HOME=str(tmp_path)),
                          capture_output=True, text=True, timeout=800)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Importer processing completed successfully" in output, output[-3000:]
    remarks = [line for line in output.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert remarks == [], "\n".join(remarks[:50])
    assert "Linting collection via ansible-lint" in output  # the lint ran, and said nothing


def test_the_changelog_lints_clean(galaxy_bin):
    proc = subprocess.run([str(galaxy_bin / "antsibull-changelog"), "lint"], cwd=str(REPO_ROOT),
                          env=_env(galaxy_bin), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr
    assert (REPO_ROOT / "changelogs" / "changelog.yaml").is_file()
