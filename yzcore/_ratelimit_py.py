"""Pure-Python twin of :mod:`yzcore._ratelimit`: token buckets for DHT requests.

A :class:`RateLimiter` keeps one token bucket per ``(peer, op)`` key plus one
global bucket, and an emergency bypass budget whose every use is audited.
Time is always passed in by the caller (seconds on its monotonic clock); there
is no clock and no randomness inside, so the same call sequence gives the same
decisions everywhere.

Both twins run the same algorithm with the same floating-point operations in
the same order, so their decisions are bit-identical; the differential tests
in ``tests/core`` hold them to it. Validation and the scale formula live in
:mod:`yzcore._ratelimit_common`, shared by both.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from collections.abc import Hashable
from itertools import islice

from yzcore._ratelimit_common import (
    bad_cost,
    bad_now,
    limiter_repr,
    network_scale,
    real,
    too_costly,
    validate_config,
)

__all__ = ["RateLimiter", "Decision", "ALLOW"]

_INF = math.inf
_NEG_INF = -math.inf

# --------------------------------------------------------------------------
# Decision
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`RateLimiter.check`; read-only, compared by value.

    Attributes:
        allowed: Whether the request may proceed.
        retry_after: Seconds until a denied request would pass; 0.0 when allowed.
        scope: ``"peer"`` or ``"global"``: the limit that refused the request
            (for a bypassed request, the limit that was bypassed); ``None``
            for a plain allow.
        bypassed: True when the request passed on the emergency bypass budget.
        limit: Refill rate (tokens/s) of the refusing bucket; 0.0 when allowed.
        burst: Capacity (tokens) of the refusing bucket; 0.0 when allowed.
    """

    allowed: bool
    retry_after: float
    scope: str | None
    bypassed: bool
    limit: float
    burst: float

    def as_tuple(self) -> tuple[bool, float, str | None, bool, float, float]:
        """``(allowed, retry_after, scope, bypassed, limit, burst)``."""
        return (self.allowed, self.retry_after, self.scope, self.bypassed, self.limit, self.burst)

    def __bool__(self) -> bool:
        return self.allowed


ALLOW = Decision(True, 0.0, None, False, 0.0, 0.0)
"""The one Decision every plain allow returns (no allocation on the hot path)."""


# --------------------------------------------------------------------------
# RateLimiter
# --------------------------------------------------------------------------


class _Bucket:
    """Tokens left and the time they were last counted."""

    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """Token-bucket limits per ``(peer, op)`` and overall, with an audited bypass.

    Each key's bucket holds up to ``burst * scale`` tokens and refills at
    ``rate * scale`` tokens/s; the global bucket likewise with ``global_burst``
    and ``global_rate``. A request must find ``cost`` tokens in both. Emergency
    requests (e.g. bootstrap discovery) may instead draw on a small bypass
    budget (``bypass_burst`` tokens refilling at ``bypass_rate``, not scaled);
    each such use is counted and logged in :meth:`audit`.

    Memory is bounded: at most ``max_keys`` keys are tracked. Keys whose bucket
    is full carry no information and are dropped first; if that is not enough,
    the oldest keys go, forgiving their debt (the global bucket still bounds
    the total).

    Args:
        rate: Per-key refill rate, tokens/s.
        burst: Per-key capacity, tokens.
        global_rate: Global refill rate, tokens/s.
        global_burst: Global capacity, tokens.
        bypass_rate: Emergency budget refill rate, tokens/s (0: never refills).
        bypass_burst: Emergency budget capacity, tokens (0: no bypass).
        max_keys: Most ``(peer, op)`` keys tracked at once.
        reference_size: Network size up to which the limits are not scaled.
        max_scale: Largest multiplier :meth:`set_network_size` may apply.
        audit_size: How many bypass records :meth:`audit` keeps.

    Raises:
        InvalidConfig: a setting is not finite, out of range or of the wrong type.
    """

    __slots__ = (
        "_rate",
        "_burst",
        "_global_rate",
        "_global_burst",
        "_bypass_rate",
        "_bypass_burst",
        "_max_keys",
        "_crowded",
        "_reference_size",
        "_max_scale",
        "_audit_size",
        "_network_size",
        "_scale",
        "_prate",
        "_pcap",
        "_grate",
        "_gcap",
        "_buckets",
        "_global",
        "_bypass",
        "_audit",
        "_allowed",
        "_denied",
        "_bypassed",
    )

    def __init__(
        self,
        rate: float = 10.0,
        burst: float = 20.0,
        global_rate: float = 200.0,
        global_burst: float = 400.0,
        *,
        bypass_rate: float = 0.1,
        bypass_burst: float = 5.0,
        max_keys: int = 10_000,
        reference_size: float = 64,
        max_scale: float = 8.0,
        audit_size: int = 64,
    ) -> None:
        (
            self._rate,
            self._burst,
            self._global_rate,
            self._global_burst,
            self._bypass_rate,
            self._bypass_burst,
            self._max_keys,
            self._reference_size,
            self._max_scale,
            self._audit_size,
        ) = validate_config(
            rate,
            burst,
            global_rate,
            global_burst,
            bypass_rate,
            bypass_burst,
            max_keys,
            reference_size,
            max_scale,
            audit_size,
        )
        self._crowded = 3 * self._max_keys // 4
        self._network_size: float | None = None
        self._set_scale(1.0)
        self._buckets: dict[tuple[Hashable, str], _Bucket] = {}
        self._global = _Bucket(self._gcap, _NEG_INF)
        self._bypass = _Bucket(self._bypass_burst, _NEG_INF)
        self._audit: deque[tuple[float, Hashable, str]] = deque(maxlen=self._audit_size)
        self._allowed = 0
        self._denied = 0
        self._bypassed = 0

    def _set_scale(self, scale: float) -> None:
        self._scale = scale
        self._prate = self._rate * scale
        self._pcap = self._burst * scale
        self._grate = self._global_rate * scale
        self._gcap = self._global_burst * scale

    # -- the hot path -------------------------------------------------------

    def check(
        self,
        peer: Hashable,
        op: str,
        now: float,
        cost: float = 1.0,
        emergency: bool = False,
    ) -> Decision:
        """Decide whether ``peer`` may make an ``op`` request costing ``cost`` at ``now``.

        Args:
            peer: The requesting peer (any hashable; normally its id).
            op: The request kind, e.g. ``"find_node"``.
            now: The caller's monotonic clock, seconds. Earlier than a bucket's
                last use means no refill for that bucket.
            cost: Tokens the request uses.
            emergency: Allow the audited bypass budget when the limits refuse.

        Returns:
            :data:`ALLOW`, a bypassed allow, or a denial carrying the wait
            (``retry_after``), the refusing ``scope`` and its ``limit``/``burst``.

        Raises:
            InvalidArgument: ``now`` is not finite, ``cost`` is not > 0, or
                ``cost`` exceeds a bucket's capacity (it could never pass).
        """
        if type(now) is not float:
            now = real(now)
        if not _NEG_INF < now < _INF:
            raise bad_now(now)
        if type(cost) is not float:
            cost = real(cost)
        if not cost > 0.0:
            raise bad_cost(cost)
        pcap = self._pcap
        gcap = self._gcap
        if cost > pcap or cost > gcap:
            raise too_costly(cost, pcap, gcap)

        key = (peer, op)
        buckets = self._buckets
        b = buckets.get(key)
        if b is None:
            if len(buckets) >= self._max_keys:
                self._make_room(now)
            b = _Bucket(pcap, now)
            buckets[key] = b
        else:
            stamp = b.stamp
            if now > stamp:
                t = b.tokens + (now - stamp) * self._prate
                b.tokens = t if t < pcap else pcap
                b.stamp = now
            elif b.tokens > pcap:
                b.tokens = pcap

        g = self._global
        stamp = g.stamp
        if now > stamp:
            t = g.tokens + (now - stamp) * self._grate
            g.tokens = t if t < gcap else gcap
            g.stamp = now
        elif g.tokens > gcap:
            g.tokens = gcap

        pt = b.tokens
        gt = g.tokens
        if pt >= cost and gt >= cost:
            b.tokens = pt - cost
            g.tokens = gt - cost
            self._allowed += 1
            return ALLOW
        return self._refuse(peer, op, now, cost, bool(emergency), pt, gt)

    def _refuse(
        self,
        peer: Hashable,
        op: str,
        now: float,
        cost: float,
        emergency: bool,
        pt: float,
        gt: float,
    ) -> Decision:
        peer_short = pt < cost
        if emergency:
            bp = self._bypass
            cap = self._bypass_burst
            stamp = bp.stamp
            if now > stamp:
                if self._bypass_rate > 0.0:
                    t = bp.tokens + (now - stamp) * self._bypass_rate
                    bp.tokens = t if t < cap else cap
                bp.stamp = now
            if bp.tokens >= cost:
                bp.tokens = bp.tokens - cost
                self._bypassed += 1
                self._audit.append((now, peer, op))
                return Decision(True, 0.0, "peer" if peer_short else "global", True, 0.0, 0.0)
        self._denied += 1
        retry = 0.0
        if peer_short:
            retry = (cost - pt) / self._prate
        if gt < cost:
            r = (cost - gt) / self._grate
            if r > retry:
                retry = r
        # A microsecond more: ``now + retry`` loses a little to rounding, and a request
        # made exactly that much later was refused again (for 2e-11 s).
        retry += 1e-6
        if peer_short:
            return Decision(False, retry, "peer", False, self._prate, self._pcap)
        return Decision(False, retry, "global", False, self._grate, self._gcap)

    # -- memory bound -------------------------------------------------------

    def expire(self, now: float) -> int:
        """Forget every key whose bucket would be full at ``now``.

        A full bucket behaves exactly like an absent key, so nothing is lost.

        Returns:
            How many keys were dropped.

        Raises:
            InvalidArgument: ``now`` is not finite.
        """
        if type(now) is not float:
            now = real(now)
        if not _NEG_INF < now < _INF:
            raise bad_now(now)
        return self._expire(now)

    def _expire(self, now: float) -> int:
        prate = self._prate
        pcap = self._pcap
        drop = []
        for key, b in self._buckets.items():
            t = b.tokens
            if now > b.stamp:
                t = t + (now - b.stamp) * prate
            if t >= pcap:
                drop.append(key)
        buckets = self._buckets
        for key in drop:
            del buckets[key]
        return len(drop)

    def _make_room(self, now: float) -> None:
        self._expire(now)
        buckets = self._buckets
        n = len(buckets)
        if n > self._crowded:
            target = self._max_keys // 2
            for key in list(islice(buckets, n - target)):
                del buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    # -- network-size scaling -----------------------------------------------

    def set_network_size(self, n: float) -> None:
        """Scale the limits to an estimated network of ``n`` nodes.

        ``scale = min(max_scale, max(1.0, log2(max(n, 2)) / log2(reference_size)))``
        multiplies every per-key and global rate and capacity from now on.
        Tokens already in buckets are not rescaled, only clamped to the new
        capacity.

        Raises:
            InvalidArgument: ``n`` is negative or not a finite number.
        """
        scale = network_scale(n, self._reference_size, self._max_scale)
        self._network_size = n
        self._set_scale(scale)

    # -- audit --------------------------------------------------------------

    def audit(self) -> list[tuple[float, Hashable, str]]:
        """The last ``audit_size`` bypass uses as ``(now, peer, op)``, oldest first."""
        return list(self._audit)

    @property
    def allowed_count(self) -> int:
        """Requests allowed within the limits."""
        return self._allowed

    @property
    def denied_count(self) -> int:
        """Requests denied."""
        return self._denied

    @property
    def bypassed_count(self) -> int:
        """Requests allowed on the emergency bypass budget."""
        return self._bypassed

    # -- settings -----------------------------------------------------------

    @property
    def rate(self) -> float:
        """Per-key refill rate before scaling, tokens/s."""
        return self._rate

    @property
    def burst(self) -> float:
        """Per-key capacity before scaling, tokens."""
        return self._burst

    @property
    def global_rate(self) -> float:
        """Global refill rate before scaling, tokens/s."""
        return self._global_rate

    @property
    def global_burst(self) -> float:
        """Global capacity before scaling, tokens."""
        return self._global_burst

    @property
    def bypass_rate(self) -> float:
        """Emergency budget refill rate, tokens/s."""
        return self._bypass_rate

    @property
    def bypass_burst(self) -> float:
        """Emergency budget capacity, tokens."""
        return self._bypass_burst

    @property
    def max_keys(self) -> int:
        """Most keys tracked at once."""
        return self._max_keys

    @property
    def reference_size(self) -> float:
        """Network size up to which the limits are not scaled."""
        return self._reference_size

    @property
    def max_scale(self) -> float:
        """Largest scale :meth:`set_network_size` applies."""
        return self._max_scale

    @property
    def audit_size(self) -> int:
        """How many bypass records :meth:`audit` keeps."""
        return self._audit_size

    @property
    def network_size(self) -> float | None:
        """The last value given to :meth:`set_network_size`, or None."""
        return self._network_size

    @property
    def scale(self) -> float:
        """The current multiplier of rates and capacities (1.0 until scaled)."""
        return self._scale

    def __repr__(self) -> str:
        return limiter_repr(
            "RateLimiter",
            self._rate,
            self._burst,
            self._global_rate,
            self._global_burst,
            self._scale,
            len(self._buckets),
        )
