"""Make this checkout loadable as the Ansible collection cloudcron.scheduler, without installing it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, NAME = "cloudcron", "scheduler"


def make_collections_path(base_dir) -> Path:
    """Link base_dir/ansible_collections/cloudcron/scheduler to the repository; return base_dir for ANSIBLE_COLLECTIONS_PATH."""
    base = Path(base_dir)
    namespace_dir = base / "ansible_collections" / NAMESPACE
    namespace_dir.mkdir(parents=True, exist_ok=True)
    link = namespace_dir / NAME
    if link.is_symlink() and link.resolve() != REPO_ROOT:
        link.unlink()
    if not link.exists():
        # A link, not a copy: tests then run the working tree's plugins as they are now.
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return base


@pytest.fixture(scope="session")
def collections_path(tmp_path_factory) -> Path:
    """A directory to use as ANSIBLE_COLLECTIONS_PATH in which cloudcron.scheduler is this checkout."""
    return make_collections_path(tmp_path_factory.mktemp("collections"))
