"""Token-bucket rate limiting of DHT requests (``find_node`` and friends).

:class:`RateLimiter` keeps a bucket per ``(peer, op)`` and one global bucket,
scales both with the estimated network size, and lets emergency discovery
through on a small, audited bypass budget. Every :meth:`RateLimiter.check`
returns a :class:`Decision`: the shared :data:`ALLOW`, or one that carries the
limit that applied and how long to wait, ready to be logged.

Chooses the compiled implementation when it is available (see
:data:`yzcore.USE_EXTENSIONS`); the pure-Python twin behaves identically.

Example::

    limiter = RateLimiter(rate=10.0, burst=20.0)
    decision = limiter.check(peer_id, "find_node", time.monotonic())
    if not decision.allowed:
        log.info("rate limited for %.2fs (%s limit %.1f/s)",
                 decision.retry_after, decision.scope, decision.limit)
"""

from __future__ import annotations

from yzcore._impl import pick

_rl = pick("_ratelimit")

RateLimiter = _rl.RateLimiter
Decision = _rl.Decision
ALLOW = _rl.ALLOW

__all__ = ["RateLimiter", "Decision", "ALLOW"]
