"""Secrets at rest: Fernet encryption with the instance's secret key, and token hashing."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .config import ConfigError
from .scrub import remember_secret


def load_or_create_key(path: Path) -> bytes:
    """Read the secret key file, creating it with mode 0600 on first start."""
    if path.exists():
        key = path.read_bytes().strip()
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(f"CLOUDCRON_SECRET_KEY_FILE: '{path}' does not hold a valid key") from None
        return key
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"CLOUDCRON_SECRET_KEY_FILE: '{path.parent}' is not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        # O_EXCL: two processes starting at once must not write two different keys.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.is_file():  # another process created it first
            return load_or_create_key(path)
        raise ConfigError(f"CLOUDCRON_SECRET_KEY_FILE: cannot create '{path}'") from None
    except OSError as exc:
        raise ConfigError(f"CLOUDCRON_SECRET_KEY_FILE: cannot create '{path}': {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


class Box:
    """Encrypts and decrypts JSON-able secrets."""

    def __init__(self, key: bytes):
        self._fernet = Fernet(key)
        self._key = key

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (such as signing console sessions), derived from the secret key.

        Every process sharing CLOUDCRON_SECRET_KEY_FILE derives the same one; it never leaves the process.
        """
        return hmac.new(self._key, b"cloudcron:" + purpose.encode(), hashlib.sha256).digest()

    def seal(self, value) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, token: str, org_id: str | None = None):
        """The secret sealed in `token`; while a batch of runs executes, it is also kept out of what the runs
        of org_id store (of every run's, when org_id is None; see web/scrub.py)."""
        try:
            value = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise ValueError("a stored secret cannot be decrypted with this secret key") from None
        remember_secret(value, org_id)
        return value


def new_token() -> str:
    """A fresh API token: 64 hex characters, like Mist's."""
    return secrets.token_hex(32)


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def new_id() -> str:
    """A resource id: 32 hex characters."""
    return secrets.token_hex(16)
