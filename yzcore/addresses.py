"""Host names and the addresses they last resolved to: the fallback when DNS fails (A6.4).

Re-exported by :mod:`yzcore.transport`, where transports find it.
"""

from __future__ import annotations

__all__ = ["KNOWN_ADDRESSES", "KnownAddresses"]


class KnownAddresses:
    """Host names and the IP address each last resolved to, for when DNS fails (A6.4).

    A transport that connects by name records the address it reached; when
    the name later does not resolve, it connects to that address instead
    (TLS still checks the certificate against the name). A node keeps the
    map in its peer cache, so it survives restarts.
    """

    MAX = 256

    def __init__(self) -> None:
        self._ips: dict[str, str] = {}

    def remember(self, host: str, ip: str) -> None:
        if host and ip and host != ip:
            self._ips.pop(host, None)
            self._ips[host] = ip
            while len(self._ips) > self.MAX:
                del self._ips[next(iter(self._ips))]

    def lookup(self, host: str) -> str | None:
        return self._ips.get(host)

    def forget(self, host: str) -> None:
        self._ips.pop(host, None)

    def snapshot(self) -> dict[str, str]:
        return dict(self._ips)

    def update(self, known: dict[str, str]) -> None:
        for host, ip in known.items():
            if isinstance(host, str) and isinstance(ip, str):
                self.remember(host, ip)


#: The process's known addresses (transports record into it, nodes persist it).
KNOWN_ADDRESSES = KnownAddresses()
