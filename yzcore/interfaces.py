"""This host's IP addresses, for a node that listens on every interface (A6.5).

A node started with ``--listen 0.0.0.0:PORT`` (or ``[::]``) and no
``--advertise`` cannot tell peers to dial ``0.0.0.0``: it advertises one of
the host's own addresses instead (:func:`primary`), and looks again every few
seconds, because interfaces come and go (DHCP, a container moved to another
network, a VPN). Linux reads them without dependencies: IPv4 through
``SIOCGIFADDR`` per interface, IPv6 from ``/proc/net/if_inet6``. Elsewhere
the host name's address is the only one known.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Final

__all__ = ["host_addresses", "primary", "is_wildcard"]

_SIOCGIFADDR: Final = 0x8915
_IF_INET6: Final = "/proc/net/if_inet6"


def is_wildcard(host: str | None) -> bool:
    """Whether ``host`` means "every interface" (``0.0.0.0``, ``::``, or nothing)."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def host_addresses() -> list[str]:
    """This host's IP addresses, interface by interface (IPv4 first), loopback included."""
    found: list[str] = []
    try:
        import fcntl

        names = socket.if_nameindex()
    except (ImportError, OSError):  # not Linux-like: the host name is all we have
        names = []
    if names:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _, name in names:
                try:
                    req = struct.pack("256s", name.encode()[:15])
                    answer = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)
                    found.append(socket.inet_ntoa(answer[20:24]))  # ifr_addr's sin_addr
                except OSError:  # no IPv4 address on it
                    continue
        try:
            with open(_IF_INET6, encoding="ascii") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 6:
                        found.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
        except (OSError, ValueError):
            pass
    else:
        try:
            found.append(socket.gethostbyname(socket.gethostname()))
        except OSError:
            pass
    return list(dict.fromkeys(found))


def primary(addresses: list[str], *, family: int = socket.AF_INET) -> str | None:
    """The address to advertise: the first global-enough one of ``family`` (not loopback,
    not link-local, not multicast), else the loopback; None when there is neither."""
    loopback = None
    for text in addresses:
        ip = ipaddress.ip_address(text)
        if (ip.version == 4) != (family == socket.AF_INET):
            continue
        if ip.is_loopback:
            loopback = loopback or text
        elif not (ip.is_link_local or ip.is_multicast or ip.is_unspecified):
            return text
    return loopback
