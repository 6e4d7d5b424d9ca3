# cython: language_level=3
"""Compiled twin of :mod:`yzcore._ratelimit_py`: token buckets for DHT requests.

Same algorithm, same floating-point operations in the same order as the pure
twin (built with ``-ffp-contract=off``), so decisions are bit-identical. The
validation helpers, error messages and the network-size scale formula come
from :mod:`yzcore._ratelimit_common`, shared with the twin, so they cannot drift.
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError
from cpython.ref cimport PyObject
from libc.math cimport isfinite, INFINITY

from collections import deque
from itertools import islice

from yzcore import _ratelimit_common as _common
from yzcore import _ratelimit_py as _py  # only to compare Decisions across the twins

__all__ = ["RateLimiter", "Decision", "ALLOW"]

cdef object _PyDecision = _py.Decision
cdef object _bad_now = _common.bad_now
cdef object _bad_cost = _common.bad_cost
cdef object _too_costly = _common.too_costly
cdef object _real = _common.real


cdef class Decision:
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

    cdef readonly bint allowed
    cdef readonly double retry_after
    cdef readonly object scope
    cdef readonly bint bypassed
    cdef readonly double limit
    cdef readonly double burst

    def __init__(self, allowed, retry_after, scope, bypassed, limit, burst):
        self.allowed = bool(allowed)
        self.retry_after = _real(retry_after)
        self.scope = scope
        self.bypassed = bool(bypassed)
        self.limit = _real(limit)
        self.burst = _real(burst)

    def as_tuple(self):
        """``(allowed, retry_after, scope, bypassed, limit, burst)``."""
        return (self.allowed, self.retry_after, self.scope, self.bypassed, self.limit, self.burst)

    def __bool__(self):
        return self.allowed

    def __eq__(self, other):
        if isinstance(other, (Decision, _PyDecision)):
            return self.as_tuple() == other.as_tuple()
        return NotImplemented

    def __ne__(self, other):
        if isinstance(other, (Decision, _PyDecision)):
            return self.as_tuple() != other.as_tuple()
        return NotImplemented

    def __hash__(self):
        return hash(self.as_tuple())

    def __reduce__(self):
        return (Decision, self.as_tuple())

    def __repr__(self):
        return (
            f"Decision(allowed={bool(self.allowed)!r}, retry_after={self.retry_after!r}, "
            f"scope={self.scope!r}, bypassed={bool(self.bypassed)!r}, limit={self.limit!r}, "
            f"burst={self.burst!r})"
        )


cdef inline Decision _decision(bint allowed, double retry_after, object scope, bint bypassed,
                               double limit, double burst):
    cdef Decision d = Decision.__new__(Decision)
    d.allowed = allowed
    d.retry_after = retry_after
    d.scope = scope
    d.bypassed = bypassed
    d.limit = limit
    d.burst = burst
    return d


cdef Decision _ALLOW = _decision(True, 0.0, None, False, 0.0, 0.0)
ALLOW = _ALLOW
"""The one Decision every plain allow returns (no allocation on the hot path)."""


@cython.final
@cython.freelist(32)
cdef class _Bucket:
    """Tokens left and the time they were last counted."""

    cdef double tokens
    cdef double stamp


cdef class RateLimiter:
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

    cdef double _rate, _burst, _global_rate, _global_burst
    cdef double _bypass_rate, _bypass_burst
    cdef Py_ssize_t _max_keys, _crowded, _audit_size
    cdef double _reference_size, _max_scale
    cdef object _network_size
    cdef double _scale, _prate, _pcap, _grate, _gcap
    cdef dict _buckets
    cdef double _g_tokens, _g_stamp
    cdef double _b_tokens, _b_stamp
    cdef object _audit
    cdef unsigned long long _allowed, _denied, _bypassed

    def __init__(self, rate=10.0, burst=20.0, global_rate=200.0, global_burst=400.0, *,
                 bypass_rate=0.1, bypass_burst=5.0, max_keys=10_000,
                 reference_size=64, max_scale=8.0, audit_size=64):
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
        ) = _common.validate_config(
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
        max_keys = self._max_keys  # Python int: 3 * max_keys may not fit a Py_ssize_t
        self._crowded = 3 * max_keys // 4
        self._network_size = None
        self._set_scale(1.0)
        self._buckets = {}
        self._g_tokens = self._gcap
        self._g_stamp = -INFINITY
        self._b_tokens = self._bypass_burst
        self._b_stamp = -INFINITY
        self._audit = deque(maxlen=self._audit_size)
        self._allowed = 0
        self._denied = 0
        self._bypassed = 0

    cdef void _set_scale(self, double scale) noexcept:
        self._scale = scale
        self._prate = self._rate * scale
        self._pcap = self._burst * scale
        self._grate = self._global_rate * scale
        self._gcap = self._global_burst * scale

    # -- the hot path -------------------------------------------------------

    def check(self, peer, op, double now, double cost=1.0, bint emergency=False):
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
        cdef double pcap = self._pcap
        cdef double gcap = self._gcap
        cdef double t, stamp, pt, gt
        cdef _Bucket b
        if not isfinite(now):
            raise _bad_now(now)
        if not cost > 0.0:
            raise _bad_cost(cost)
        if cost > pcap or cost > gcap:
            raise _too_costly(cost, pcap, gcap)

        key = (peer, op)
        cdef PyObject* found = PyDict_GetItemWithError(self._buckets, key)  # borrowed
        if found is NULL:
            if len(self._buckets) >= self._max_keys:
                self._make_room(now)
            b = _Bucket.__new__(_Bucket)
            b.tokens = pcap
            b.stamp = now
            self._buckets[key] = b
        else:
            b = <_Bucket>found
            stamp = b.stamp
            if now > stamp:
                t = b.tokens + (now - stamp) * self._prate
                b.tokens = t if t < pcap else pcap
                b.stamp = now
            elif b.tokens > pcap:
                b.tokens = pcap

        stamp = self._g_stamp
        if now > stamp:
            t = self._g_tokens + (now - stamp) * self._grate
            self._g_tokens = t if t < gcap else gcap
            self._g_stamp = now
        elif self._g_tokens > gcap:
            self._g_tokens = gcap

        pt = b.tokens
        gt = self._g_tokens
        if pt >= cost and gt >= cost:
            b.tokens = pt - cost
            self._g_tokens = gt - cost
            self._allowed += 1
            return _ALLOW
        return self._refuse(peer, op, now, cost, emergency, pt, gt)

    cdef Decision _refuse(self, object peer, object op, double now, double cost, bint emergency,
                          double pt, double gt):
        cdef bint peer_short = pt < cost
        cdef double t, stamp, cap, retry, r
        if emergency:
            cap = self._bypass_burst
            stamp = self._b_stamp
            if now > stamp:
                if self._bypass_rate > 0.0:
                    t = self._b_tokens + (now - stamp) * self._bypass_rate
                    self._b_tokens = t if t < cap else cap
                self._b_stamp = now
            if self._b_tokens >= cost:
                self._b_tokens = self._b_tokens - cost
                self._bypassed += 1
                self._audit.append((now, peer, op))
                return _decision(True, 0.0, "peer" if peer_short else "global", True, 0.0, 0.0)
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
            return _decision(False, retry, "peer", False, self._prate, self._pcap)
        return _decision(False, retry, "global", False, self._grate, self._gcap)

    # -- memory bound -------------------------------------------------------

    def expire(self, double now):
        """Forget every key whose bucket would be full at ``now``.

        A full bucket behaves exactly like an absent key, so nothing is lost.

        Returns:
            How many keys were dropped.

        Raises:
            InvalidArgument: ``now`` is not finite.
        """
        if not isfinite(now):
            raise _bad_now(now)
        return self._expire(now)

    cdef Py_ssize_t _expire(self, double now) except -1:
        cdef double prate = self._prate
        cdef double pcap = self._pcap
        cdef double t
        cdef _Bucket b
        cdef list drop = []
        for key, value in self._buckets.items():
            b = <_Bucket>value
            t = b.tokens
            if now > b.stamp:
                t = t + (now - b.stamp) * prate
            if t >= pcap:
                drop.append(key)
        for key in drop:
            del self._buckets[key]
        return len(drop)

    cdef int _make_room(self, double now) except -1:
        self._expire(now)
        cdef Py_ssize_t n = len(self._buckets)
        cdef Py_ssize_t target
        if n > self._crowded:
            target = self._max_keys // 2
            for key in list(islice(self._buckets, n - target)):
                del self._buckets[key]
        return 0

    def __len__(self):
        return len(self._buckets)

    # -- network-size scaling -----------------------------------------------

    def set_network_size(self, n):
        """Scale the limits to an estimated network of ``n`` nodes.

        ``scale = min(max_scale, max(1.0, log2(max(n, 2)) / log2(reference_size)))``
        multiplies every per-key and global rate and capacity from now on.
        Tokens already in buckets are not rescaled, only clamped to the new
        capacity.

        Raises:
            InvalidArgument: ``n`` is negative or not a finite number.
        """
        cdef double scale = _common.network_scale(n, self._reference_size, self._max_scale)
        self._network_size = n
        self._set_scale(scale)

    # -- audit --------------------------------------------------------------

    def audit(self):
        """The last ``audit_size`` bypass uses as ``(now, peer, op)``, oldest first."""
        return list(self._audit)

    @property
    def allowed_count(self):
        """Requests allowed within the limits."""
        return self._allowed

    @property
    def denied_count(self):
        """Requests denied."""
        return self._denied

    @property
    def bypassed_count(self):
        """Requests allowed on the emergency bypass budget."""
        return self._bypassed

    # -- settings -----------------------------------------------------------

    @property
    def rate(self):
        """Per-key refill rate before scaling, tokens/s."""
        return self._rate

    @property
    def burst(self):
        """Per-key capacity before scaling, tokens."""
        return self._burst

    @property
    def global_rate(self):
        """Global refill rate before scaling, tokens/s."""
        return self._global_rate

    @property
    def global_burst(self):
        """Global capacity before scaling, tokens."""
        return self._global_burst

    @property
    def bypass_rate(self):
        """Emergency budget refill rate, tokens/s."""
        return self._bypass_rate

    @property
    def bypass_burst(self):
        """Emergency budget capacity, tokens."""
        return self._bypass_burst

    @property
    def max_keys(self):
        """Most keys tracked at once."""
        return self._max_keys

    @property
    def reference_size(self):
        """Network size up to which the limits are not scaled."""
        return self._reference_size

    @property
    def max_scale(self):
        """Largest scale :meth:`set_network_size` applies."""
        return self._max_scale

    @property
    def audit_size(self):
        """How many bypass records :meth:`audit` keeps."""
        return self._audit_size

    @property
    def network_size(self):
        """The last value given to :meth:`set_network_size`, or None."""
        return self._network_size

    @property
    def scale(self):
        """The current multiplier of rates and capacities (1.0 until scaled)."""
        return self._scale

    def __repr__(self):
        return _common.limiter_repr(
            "RateLimiter",
            self._rate,
            self._burst,
            self._global_rate,
            self._global_burst,
            self._scale,
            len(self._buckets),
        )
