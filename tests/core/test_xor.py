"""256-bit ids, XOR distance and closest-k selection, on both implementations."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import impl_pair
from yzcore.exceptions import InvalidArgument, InvalidId, YzError

ids = st.binary(min_size=32, max_size=32)


def brute_closest(target: bytes, items: list[bytes], k: int) -> list[bytes]:
    t = int.from_bytes(target, "big")
    return sorted(items, key=lambda i: int.from_bytes(i, "big") ^ t)[:k]


def test_distance_is_xor_of_big_endian_integers(xor):
    a, b = bytes(31) + b"\x05", bytes(31) + b"\x03"
    assert xor.distance(a, b) == 6
    assert xor.distance(a, a) == 0
    assert xor.distance(b"\xff" * 32, bytes(32)) == 2**256 - 1


def test_common_prefix_len_counts_leading_equal_bits(xor):
    zero = bytes(32)
    assert xor.common_prefix_len(zero, zero) == 256
    assert xor.common_prefix_len(zero, b"\x80" + bytes(31)) == 0
    assert xor.common_prefix_len(zero, b"\x01" + bytes(31)) == 7
    assert xor.common_prefix_len(zero, bytes(8) + b"\x40" + bytes(23)) == 65
    assert xor.common_prefix_len(zero, bytes(31) + b"\x01") == 255


@given(a=ids, b=ids)
def test_distance_symmetric_and_prefix_consistent(xor, a, b):
    d = xor.distance(a, b)
    assert d == xor.distance(b, a)
    assert xor.common_prefix_len(a, b) == 256 - d.bit_length()


@given(target=ids, items=st.lists(ids, max_size=60), k=st.integers(0, 70))
def test_closest_equals_brute_force_sort(xor, target, items, k):
    assert xor.closest(target, items, k) == brute_closest(target, items, k)


@settings(max_examples=50)
@given(target=ids, prefix=st.binary(min_size=0, max_size=31), n=st.integers(1, 40), k=st.integers(0, 45))
def test_closest_with_long_shared_prefixes_and_duplicates(xor, target, prefix, n, k):
    # Ids that agree on their first words exercise the multi-word comparison.
    rng = random.Random(n)
    items = [(prefix + rng.randbytes(32))[:32] for _ in range(n)]
    items += items[: n // 3]  # duplicates keep input order
    assert xor.closest(target, items, k) == brute_closest(target, items, k)


def test_closest_accepts_any_iterable_and_large_inputs(xor):
    rng = random.Random(7)
    items = [rng.randbytes(32) for _ in range(10_000)]
    target = rng.randbytes(32)
    assert xor.closest(target, iter(items), 20) == brute_closest(target, items, 20)
    assert xor.closest(target, tuple(items[:5]), 20) == brute_closest(target, items[:5], 20)


@pytest.mark.parametrize("bad", [b"short", bytes(33), bytearray(32), "ab" * 32, None, 5])
def test_wrong_ids_raise_invalid_id(xor, bad):
    good = bytes(32)
    for call in (
        lambda: xor.check_id(bad),
        lambda: xor.distance(bad, good),
        lambda: xor.common_prefix_len(good, bad),
        lambda: xor.closest(bad, [good], 1),
        lambda: xor.closest(good, [good, bad], 1),
    ):
        with pytest.raises(InvalidId) as err:
            call()
        assert err.value.code == "INVALID_ID"
        assert isinstance(err.value, YzError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("k", [-1, 1.5, "3", True, None])
def test_bad_k_raises_invalid_argument(xor, k):
    with pytest.raises(InvalidArgument):
        xor.closest(bytes(32), [bytes(32)], k)


def test_implementations_agree_differentially():
    c, py = impl_pair("_xor")

    @settings(max_examples=200)
    @given(target=ids, items=st.lists(ids, max_size=50), k=st.integers(0, 60))
    def check(target, items, k):
        assert c.closest(target, items, k) == py.closest(target, items, k)
        for i in items[:5]:
            assert c.distance(target, i) == py.distance(target, i)
            assert c.common_prefix_len(target, i) == py.common_prefix_len(target, i)

    check()


def test_ids_module_uses_the_chosen_implementation():
    import yzcore
    from yzcore import ids

    expected = "yzcore._xor" if yzcore.USE_EXTENSIONS else "yzcore._xor_py"
    assert ids.closest.__module__ == expected
    node = ids.key_for("channel")
    assert ids.id_from_hex(ids.id_to_hex(node)) == node
    with pytest.raises(InvalidId):
        ids.id_from_hex("AB" * 32)  # upper case is not the wire form
    with pytest.raises(InvalidId):
        ids.id_from_hex("ab" * 31)
