"""What both routing-table twins share: validation and network groups.

None of it is on a hot path. A network group, for the IP-diversity limit, is
the /24 of an IPv4 address or the /48 of an IPv6 address; loopback addresses
belong to no group, so a local test network on 127.0.0.1 is not limited.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import math

from yzcore.exceptions import InvalidArgument, InvalidConfig

__all__ = ["ip_group", "check_table_config", "check_bucket_index"]

BUCKETS = 256


def check_table_config(k: object, replacements: object, ip_limit: object, max_fails: object,
                       now: object) -> None:
    """Validate RoutingTable's settings.

    Raises:
        InvalidConfig: a size or limit is not an integer in range.
        InvalidArgument: ``now`` is not a finite number.
    """
    for name, value, low in (("k", k, 1), ("replacements", replacements, 0),
                             ("ip_limit", ip_limit, 0), ("max_fails", max_fails, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidConfig(f"{name} must be an integer >= {low}, got {value!r}.")
    if not isinstance(now, (int, float)) or isinstance(now, bool) or not math.isfinite(now):
        raise InvalidArgument(f"now must be a finite number, got {now!r}.")


def check_bucket_index(index: object) -> int:
    """Return ``index`` if it names a bucket (0..255).

    Raises:
        InvalidArgument: otherwise.
    """
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < BUCKETS:
        raise InvalidArgument(f"bucket index must be 0..255, got {index!r}.")
    return index


@lru_cache(maxsize=4096)  # peers are seen again and again; parsing is the cost
def ip_group(ip: str | None) -> str | None:
    """The diversity group of ``ip``, or None when it is exempt or unknown.

    Raises:
        InvalidArgument: ``ip`` is not an IPv4 or IPv6 address literal.
    """
    if not ip:
        return None
    if not isinstance(ip, str):
        raise InvalidArgument(f"ip must be a string address literal, got {type(ip).__name__}.")
    if ":" in ip:
        try:  # (a scope, "fe80::1%eth0", is no part of the address)
            addr = ipaddress.IPv6Address(ip.partition("%")[0])
            exploded = addr.exploded
        except ValueError:
            raise InvalidArgument(f"{ip!r} is not an IP address literal.") from None
        if addr.ipv4_mapped is not None:
            return ip_group(str(addr.ipv4_mapped))
        if addr.is_loopback:
            return None
        return exploded[:14]  # the first 48 bits
    parts = ip.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) < 256
                                  for p in parts):  # ("²" is a digit, "١" too: not ASCII ones)
        raise InvalidArgument(f"{ip!r} is not an IP address literal.")
    if parts[0] == "127":
        return None
    return ".".join(str(int(p)) for p in parts[:3])  # "010" and "10" are one group
