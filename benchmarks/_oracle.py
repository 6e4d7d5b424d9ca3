"""Brute-force Kademlia oracle for peer_compare.py: the true k closest ids.

Ids of any width (kademlia's 160-bit, yzcore's 256-bit) are compared as
big-endian integers under XOR, exactly as both implementations order them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

__all__ = ["Oracle", "percentile"]


class Oracle:
    """The live node ids of one network, for exact-k checks.

    Args:
        ids: Every node id (bytes), in the harness's node order.
    """

    def __init__(self, ids: Sequence[bytes]) -> None:
        self._ids = [int.from_bytes(i, "big") for i in ids]
        self._live = [True] * len(self._ids)

    def kill(self, index: int) -> None:
        """Drop node ``index`` from the live set."""
        self._live[index] = False

    def closest(self, target: bytes, k: int, exclude: int | None = None) -> list[int]:
        """The ``k`` live ids closest to ``target``, nearest first, without node ``exclude``."""
        t = int.from_bytes(target, "big")
        pool = (
            nid
            for idx, nid in enumerate(self._ids)
            if self._live[idx] and idx != exclude
        )
        return heapq.nsmallest(k, pool, key=lambda nid: nid ^ t)

    def check(self, found: Iterable[bytes], target: bytes, k: int,
              exclude: int | None) -> tuple[bool, float]:
        """Whether a lookup's first ``k`` results are exactly the oracle's k closest.

        Returns:
            (exact, recall): exact is True when the sets are equal; recall is the
            share of the oracle's k closest that the lookup returned.
        """
        want = set(self.closest(target, k, exclude))
        got = {int.from_bytes(i, "big") for i in list(found)[:k]}
        if not want:
            return (not got, 1.0)
        return (got == want, len(got & want) / len(want))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return ordered[int(rank) - 1]
