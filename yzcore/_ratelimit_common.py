"""Validation, error messages and the scale formula shared by both rate-limiter twins.

Not on the hot path. Keeping them in one module means the two implementations
cannot drift in what they accept or in what they tell the user.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import cast

from yzcore.exceptions import InvalidArgument, InvalidConfig

__all__ = [
    "real", "validate_config", "network_scale", "bad_now", "bad_cost", "too_costly",
    "limiter_repr",
]

_INF = math.inf


def real(value: object) -> float:
    """Convert ``value`` to ``float`` the way Cython converts a ``double`` argument."""
    if isinstance(value, float):
        return float(value)
    cls = type(value)
    if hasattr(cls, "__float__") or hasattr(cls, "__index__"):
        return float(value)  # type: ignore[arg-type]
    raise TypeError(f"must be real number, not {cls.__name__}")


def _config_real(name: str, value: object, *, allow_zero: bool = False, example: str) -> float:
    """Validate a rate or burst setting: a finite number > 0 (or >= 0)."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidConfig(
            f"{name} must be a finite number {bound}, got {type(value).__name__}.",
            advice=f"Pass a number, e.g. {name}={example}.",
        )
    try:
        result = float(value)
    except OverflowError:
        result = _INF
    if not math.isfinite(result) or result < 0.0 or (result == 0.0 and not allow_zero):
        raise InvalidConfig(
            f"{name} must be a finite number {bound}, got {value!r}.",
            advice=f"Pass a finite positive number, e.g. {name}={example}"
            + (", or 0 to disable the emergency bypass." if allow_zero else "."),
        )
    return result


def _config_int(name: str, value: object, *, minimum: int, example: str) -> int:
    """Validate a size setting: an ``int`` in ``minimum..sys.maxsize``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidConfig(
            f"{name} must be an integer >= {minimum}, got {type(value).__name__}.",
            advice=f"Pass a whole number, e.g. {name}={example}.",
        )
    result = int(value)
    if not minimum <= result <= sys.maxsize:
        raise InvalidConfig(
            f"{name} must be an integer between {minimum} and {sys.maxsize}, got {result}.",
            advice=f"Pass a whole number in range, e.g. {name}={example}.",
        )
    return result


def validate_config(
    rate: object,
    burst: object,
    global_rate: object,
    global_burst: object,
    bypass_rate: object,
    bypass_burst: object,
    max_keys: object,
    reference_size: object,
    max_scale: object,
    audit_size: object,
) -> tuple[float, float, float, float, float, float, int, float, float, int]:
    """Check every :class:`RateLimiter` setting; return them normalised.

    Raises:
        InvalidConfig: naming the first bad setting and what to pass instead.
    """
    rate_f = _config_real("rate", rate, example="10.0")
    burst_f = _config_real("burst", burst, example="20.0")
    global_rate_f = _config_real("global_rate", global_rate, example="200.0")
    global_burst_f = _config_real("global_burst", global_burst, example="400.0")
    bypass_rate_f = _config_real("bypass_rate", bypass_rate, allow_zero=True, example="0.1")
    bypass_burst_f = _config_real("bypass_burst", bypass_burst, allow_zero=True, example="5.0")
    max_keys_i = _config_int("max_keys", max_keys, minimum=1, example="10_000")
    if isinstance(reference_size, bool) or not isinstance(reference_size, numbers.Real):
        raise InvalidConfig(
            f"reference_size must be a number >= 2, got {type(reference_size).__name__}.",
            advice="Pass the network size at which limits start to scale, e.g. reference_size=64.",
        )
    try:
        reference_f = float(reference_size)
    except OverflowError:
        reference_f = _INF
    if not (math.isfinite(reference_f) and reference_f >= 2.0):
        raise InvalidConfig(
            f"reference_size must be a finite number >= 2, got {reference_size!r}.",
            advice="Pass the network size at which limits start to scale, e.g. reference_size=64.",
        )
    max_scale_f = _config_real("max_scale", max_scale, example="8.0")
    if max_scale_f < 1.0:
        raise InvalidConfig(
            f"max_scale must be a finite number >= 1, got {max_scale!r}.",
            advice="Pass 1.0 to never scale the limits up, or a larger cap, e.g. max_scale=8.0.",
        )
    audit_size_i = _config_int("audit_size", audit_size, minimum=1, example="64")
    return (
        rate_f,
        burst_f,
        global_rate_f,
        global_burst_f,
        bypass_rate_f,
        bypass_burst_f,
        max_keys_i,
        reference_f,
        max_scale_f,
        audit_size_i,
    )


def network_scale(n: object, reference_size: float, max_scale: float) -> float:
    """The limit multiplier for an estimated network of ``n`` nodes.

    ``min(max_scale, max(1.0, log2(max(n, 2)) / log2(reference_size)))``: 1.0
    up to ``reference_size`` nodes, then growing with the lookup depth.

    Raises:
        InvalidArgument: ``n`` is not a finite number >= 0.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise InvalidArgument(
            f"network size must be a number >= 0, got {type(n).__name__}.",
            advice="Pass the estimated number of nodes in the network, e.g. 5000.",
        )
    if not isinstance(n, numbers.Integral):
        if not math.isfinite(n) or n < 0:
            raise InvalidArgument(
                f"network size must be a finite number >= 0, got {n!r}.",
                advice="Pass the estimated number of nodes in the network, e.g. 5000.",
            )
    elif n < 0:
        raise InvalidArgument(
            f"network size must be >= 0, got {n!r}.",
            advice="Pass the estimated number of nodes in the network, e.g. 5000.",
        )
    size = cast(float, n)  # a real number >= 0 by now (int sizes stay exact ints)
    return min(max_scale, max(1.0, math.log2(max(size, 2)) / math.log2(reference_size)))


def bad_now(now: float) -> InvalidArgument:
    return InvalidArgument(
        f"now must be a finite time in seconds, got {now!r}.",
        advice="Pass the caller's monotonic clock, e.g. time.monotonic().",
    )


def bad_cost(cost: float) -> InvalidArgument:
    return InvalidArgument(
        f"cost must be a number > 0, got {cost!r}.",
        advice="Pass the number of tokens the request uses, e.g. cost=1.0.",
    )


def too_costly(cost: float, peer_cap: float, global_cap: float) -> InvalidArgument:
    if cost > peer_cap:
        which, cap, knob = "per-peer", peer_cap, "burst"
    else:
        which, cap, knob = "global", global_cap, "global_burst"
    return InvalidArgument(
        f"cost {cost!r} exceeds the {which} bucket capacity {cap!r}, "
        "so this request could never pass.",
        advice=f"Split the request into cheaper ones or raise {knob}.",
    )


def limiter_repr(
    name: str,
    rate: float,
    burst: float,
    global_rate: float,
    global_burst: float,
    scale: float,
    keys: int,
) -> str:
    return (
        f"{name}(rate={rate!r}, burst={burst!r}, global_rate={global_rate!r}, "
        f"global_burst={global_burst!r}, scale={scale!r}, keys={keys})"
    )
