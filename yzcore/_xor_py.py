"""Pure-Python twin of :mod:`yzcore._xor`: 256-bit ids and XOR distance.

Ids are ``bytes`` of length 32 (sha256 digests). Both twins validate their
input identically and return identical results; the differential tests in
``tests/core`` hold them to it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from yzcore.exceptions import InvalidArgument, InvalidId

__all__ = ["ID_BYTES", "ID_BITS", "check_id", "distance", "common_prefix_len", "closest"]

ID_BYTES = 32
ID_BITS = 256

_from_bytes = int.from_bytes


def check_id(node_id: object) -> bytes:
    """Return ``node_id`` if it is a 32-byte ``bytes`` id.

    Raises:
        InvalidId: for any other type or length.
    """
    if type(node_id) is not bytes or len(node_id) != ID_BYTES:
        raise InvalidId(f"expected a 32-byte id, got {_describe(node_id)}.")
    return node_id


def _describe(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two ids, as a non-negative integer below 2**256."""
    check_id(a)
    check_id(b)
    return _from_bytes(a, "big") ^ _from_bytes(b, "big")


def common_prefix_len(a: bytes, b: bytes) -> int:
    """Number of leading bits ``a`` and ``b`` share: 0..256 (256 when equal)."""
    check_id(a)
    check_id(b)
    return ID_BITS - (_from_bytes(a, "big") ^ _from_bytes(b, "big")).bit_length()


def closest(target: bytes, ids: Iterable[bytes], k: int) -> list[bytes]:
    """The ``k`` ids nearest ``target`` by XOR distance, nearest first.

    Uses partial selection (a bounded heap), not a full sort. Equal ids keep
    their input order.

    Raises:
        InvalidId: ``target`` or an element of ``ids`` is not a 32-byte id.
        InvalidArgument: ``k`` is negative or not an integer.
    """
    check_id(target)
    if not isinstance(k, int) or isinstance(k, bool):
        raise InvalidArgument(f"k must be an integer, got {type(k).__name__}.")
    if k < 0:
        raise InvalidArgument(f"k must be >= 0, got {k}.")
    items = ids if isinstance(ids, list) else list(ids)
    for node_id in items:
        if type(node_id) is not bytes or len(node_id) != ID_BYTES:
            check_id(node_id)
    t = _from_bytes(target, "big")
    return heapq.nsmallest(k, items, key=lambda i: _from_bytes(i, "big") ^ t)
