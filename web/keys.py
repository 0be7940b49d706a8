"""SSH key material: generate a key pair, or check a given private key and derive its public half."""
from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def generate_private() -> str:
    """A new Ed25519 private key in OpenSSH format."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def derive_public(private: str) -> str:
    """The OpenSSH public key of a private key (OpenSSH or PEM); ValueError when it is not one."""
    data = private.strip().encode() + b"\n"
    key = None
    errors = []
    for loader in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        try:
            key = loader(data, password=None)
            break
        except TypeError:
            raise ValueError("passphrase-protected keys are not supported; give the key without a passphrase") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            errors.append(exc)
    if key is None:
        raise ValueError("not an SSH private key in OpenSSH or PEM format")
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
