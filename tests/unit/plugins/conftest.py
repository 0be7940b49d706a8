"""Make this checkout importable as ansible_collections.cloudcron.scheduler when pytest runs outside ansible-test.

ansible-test units installs its own collection loader; a plain `pytest tests/` (make test) does not,
so a temporary ansible_collections/cloudcron/scheduler link to the repository is put on sys.path.
"""
from __future__ import annotations

import atexit
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path


def _importable() -> bool:
    try:
        return importlib.util.find_spec("ansible_collections.cloudcron.scheduler.plugins") is not None
    except ImportError:
        return False


if not _importable():
    _repo = Path(__file__).resolve().parents[3]
    _base = Path(tempfile.mkdtemp(prefix="cloudcron-collection-"))
    (_base / "ansible_collections" / "cloudcron").mkdir(parents=True)
    (_base / "ansible_collections" / "cloudcron" / "scheduler").symlink_to(_repo, target_is_directory=True)
    sys.path.insert(0, str(_base))
    importlib.invalidate_caches()
    atexit.register(shutil.rmtree, str(_base), True)
