"""Retry schedules: exponential backoff with full jitter, in rounds (A1.4, A7.4).

Sans-I/O: the caller owns the clock and sleeps; this only says how long.
Attempt ``n`` (from 0) of a round waits ``uniform(0, min(cap, base * 2**n))``
before it ("full jitter", as AWS's architecture blog and libp2p's dialer use
it): a thousand nodes restarting at once spread their retries over the whole
window instead of hitting the bootstrap server in lockstep. After
``attempts`` failures the round is over; the next starts after
``round_pause`` (jittered the same way) and from a short delay again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff", "BackoffPolicy"]


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How a failing operation is retried.

    Attributes:
        base: Upper bound of the first delay, in seconds.
        cap: Largest upper bound of any delay in a round.
        attempts: Attempts per round (A1.4: 5).
        round_pause: Upper bound of the pause between two rounds.
    """

    base: float = 0.5
    cap: float = 8.0
    attempts: int = 5
    round_pause: float = 30.0


class Backoff:
    """One operation's retry state.

    Args:
        policy: The schedule.
        rng: The only source of randomness.
    """

    __slots__ = ("attempt", "policy", "rng", "rounds")

    def __init__(self, policy: BackoffPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng
        self.attempt = 0  #: attempts made in the current round
        self.rounds = 0  #: rounds completed without success

    def delay(self) -> float:
        """Seconds to wait before the next attempt (0 for the very first one)."""
        p = self.policy
        if self.attempt == 0 and self.rounds == 0:
            return 0.0
        if self.attempt == 0:
            return self.rng.uniform(p.round_pause / 2, p.round_pause)
        return self.rng.uniform(0.0, min(p.cap, p.base * 2 ** (self.attempt - 1)))

    def failed(self) -> bool:
        """Count a failed attempt; True when it ended the round."""
        self.attempt += 1
        if self.attempt >= self.policy.attempts:
            self.attempt = 0
            self.rounds += 1
            return True
        return False

    def succeeded(self) -> None:
        """Start over: the next failure begins a fresh round."""
        self.attempt = self.rounds = 0
