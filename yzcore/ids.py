"""Node ids: 256-bit values, XOR distance and closest-k selection.

Chooses the compiled implementation when it is available (see
:data:`yzcore.USE_EXTENSIONS`). Ids are 32-byte ``bytes`` in memory and 64
lowercase hex digits on the wire.
"""

from __future__ import annotations

import hashlib

from yzcore._impl import pick
from yzcore.exceptions import InvalidId

_xor = pick("_xor")

ID_BYTES: int = _xor.ID_BYTES
ID_BITS: int = _xor.ID_BITS
check_id = _xor.check_id
distance = _xor.distance
common_prefix_len = _xor.common_prefix_len
closest = _xor.closest

__all__ = [
    "ID_BYTES",
    "ID_BITS",
    "check_id",
    "distance",
    "common_prefix_len",
    "closest",
    "id_from_hex",
    "id_to_hex",
    "key_for",
]

_HEX = frozenset("0123456789abcdef")


def id_from_hex(text: str) -> bytes:
    """Parse the wire form of an id (64 lowercase hex digits).

    Raises:
        InvalidId: for any other string.
    """
    if not isinstance(text, str) or len(text) != 2 * ID_BYTES or not _HEX.issuperset(text):
        shown = text[:80] if isinstance(text, str) else type(text).__name__
        raise InvalidId(f"expected 64 lowercase hex digits, got {shown!r}.")
    return bytes.fromhex(text)


def id_to_hex(node_id: bytes) -> str:
    """The wire form of an id: 64 lowercase hex digits."""
    return check_id(node_id).hex()


def key_for(name: str) -> bytes:
    """The DHT key of a value or channel name: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(name.encode("utf-8")).digest()
