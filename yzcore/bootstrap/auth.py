"""Bridge authentication: a shared secret proved by HMAC over a fresh challenge (A5.1).

The bootstrap server sends a ``challenge`` with a random nonce right after a
bridge's verified hello; the bridge answers ``register`` with
``HMAC-SHA256(secret, "yz-bridge-v1\\0" + nonce + bridge id + bootstrap id)``.
The nonce makes every proof single-use, and both ids bind it to this pair:
a proof overheard on one connection is worthless on any other. The secret
itself never travels.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from yzcore.exceptions import InvalidConfig

__all__ = ["bridge_mac", "check_mac", "read_secret", "write_secret"]

_PREFIX = b"yz-bridge-v1\x00"
MIN_SECRET = 16  # bytes: anything shorter is guessable


def bridge_mac(secret: bytes, nonce: bytes, bridge_id: bytes, bootstrap_id: bytes) -> bytes:
    """The bridge's proof for one challenge."""
    return hmac.new(secret, _PREFIX + nonce + bridge_id + bootstrap_id, hashlib.sha256).digest()


def check_mac(secret: bytes, nonce: bytes, bridge_id: bytes, bootstrap_id: bytes, mac: bytes) -> bool:
    """Whether ``mac`` proves ``secret`` (constant time)."""
    return hmac.compare_digest(bridge_mac(secret, nonce, bridge_id, bootstrap_id), mac)


def read_secret(path: str) -> bytes:
    """The secret in ``path``: its bytes, surrounding whitespace stripped.

    Raises:
        InvalidConfig: the file cannot be read or holds fewer than 16 bytes.
    """
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise InvalidConfig(f"cannot read the bridge secret file {path}: {exc.strerror}",
                            advice="Pass --bridge-secret-file with a readable file of at least "
                            "16 random bytes (e.g. `head -c 32 /dev/urandom | base64 > F`).") from None
    if len(secret) < MIN_SECRET:
        raise InvalidConfig(f"the bridge secret in {path} is {len(secret)} bytes, under {MIN_SECRET}",
                            advice="Put at least 16 random bytes in it, e.g. "
                            "`head -c 32 /dev/urandom | base64 > F`.")
    return secret


def write_secret(path: str) -> bytes:
    """Create ``path`` (mode 0600) with a fresh random secret; the secret."""
    secret = os.urandom(32).hex().encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    return secret
