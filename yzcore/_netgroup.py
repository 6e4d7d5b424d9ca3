"""Network groups for the routing table's IP-diversity limit.

Shared by both routing-table implementations (it runs once per insertion,
not on a hot path). A group is the /24 of an IPv4 address or the /48 of an
IPv6 address; loopback addresses belong to no group, so a local test network
on 127.0.0.1 is not limited.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from yzcore.exceptions import InvalidArgument

__all__ = ["ip_group"]


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
        try:
            addr = ipaddress.IPv6Address(ip)
        except ValueError:
            raise InvalidArgument(f"{ip!r} is not an IP address literal.") from None
        if addr.ipv4_mapped is not None:
            return ip_group(str(addr.ipv4_mapped))
        if addr.is_loopback:
            return None
        return addr.exploded[:14]  # the first 48 bits
    parts = ip.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        raise InvalidArgument(f"{ip!r} is not an IP address literal.")
    if parts[0] == "127":
        return None
    return ".".join(str(int(p)) for p in parts[:3])  # "010" and "10" are one group
