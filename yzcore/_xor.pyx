# cython: language_level=3
"""Compiled twin of :mod:`yzcore._xor_py`: 256-bit ids and XOR distance."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t
from libcpp.vector cimport vector

from yzcore._bits cimport YzDist, yz_cpl, yz_dist_set, yz_select_k

from yzcore.exceptions import InvalidArgument, InvalidId
from yzcore._xor_py import _describe

__all__ = ["ID_BYTES", "ID_BITS", "check_id", "distance", "common_prefix_len", "closest"]

ID_BYTES = 32
ID_BITS = 256


cdef inline const unsigned char* _ptr(object node_id) except NULL:
    if type(node_id) is not bytes or PyBytes_GET_SIZE(node_id) != 32:
        raise InvalidId(f"expected a 32-byte id, got {_describe(node_id)}.")
    return <const unsigned char*>PyBytes_AS_STRING(node_id)


def check_id(node_id):
    """Return ``node_id`` if it is a 32-byte ``bytes`` id.

    Raises:
        InvalidId: for any other type or length.
    """
    _ptr(node_id)
    return node_id


def distance(a, b):
    """XOR distance of two ids, as a non-negative integer below 2**256."""
    cdef const unsigned char* pa = _ptr(a)
    cdef const unsigned char* pb = _ptr(b)
    cdef unsigned char out[32]
    cdef int i
    for i in range(32):
        out[i] = pa[i] ^ pb[i]
    return int.from_bytes(out[:32], "big")


def common_prefix_len(a, b):
    """Number of leading bits ``a`` and ``b`` share: 0..256 (256 when equal)."""
    return yz_cpl(_ptr(a), _ptr(b))


def closest(target, ids, k):
    """The ``k`` ids nearest ``target`` by XOR distance, nearest first.

    Uses partial selection (``nth_element``), not a full sort. Equal ids keep
    their input order.

    Raises:
        InvalidId: ``target`` or an element of ``ids`` is not a 32-byte id.
        InvalidArgument: ``k`` is negative or not an integer.
    """
    cdef const unsigned char* t = _ptr(target)
    if not isinstance(k, int) or isinstance(k, bool):
        raise InvalidArgument(f"k must be an integer, got {type(k).__name__}.")
    if k < 0:
        raise InvalidArgument(f"k must be >= 0, got {k}.")
    cdef list items = ids if type(ids) is list else list(ids)
    cdef Py_ssize_t n = len(items), i
    cdef vector[YzDist] entries
    entries.resize(n)
    for i in range(n):
        yz_dist_set(entries[i], t, _ptr(items[i]), <uint32_t>i)
    cdef size_t kk = <size_t>min(k, n)
    yz_select_k(entries, kk)
    return [items[entries[i].idx] for i in range(<Py_ssize_t>kk)]
