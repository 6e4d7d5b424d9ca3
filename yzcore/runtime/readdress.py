"""The node's own advertised address, and saying so when it changes (A4.5, A6.5).

A mixin of :class:`~yzcore.runtime.node.Node`. A node listening on every
interface (``0.0.0.0`` or ``[::]``) with no ``--advertise`` advertises one of
this host's addresses (:mod:`yzcore.interfaces`) and looks again every
``interface_interval`` seconds: when that address has left the host (DHCP, a
container moved to another network), it advertises another one. Whatever
changes the address (this, or a node moving to another bridge), peers hold
the old one from our hellos, so every connection is closed and made again
with a fresh hello, and the bootstrap server hears it too.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import SplitResult, urlsplit, urlunsplit

import anyio

from yzcore.interfaces import host_addresses, is_wildcard, primary

__all__ = ["Readdressing"]

log = logging.getLogger("yzcore.node")


class Readdressing:
    """The advertised address (a mixin of :class:`~yzcore.runtime.node.Node`)."""

    interface_interval = 5.0  #: seconds between two looks at this host's addresses (A6.5)

    def _follows_interfaces(self) -> bool:
        """Whether this node picks its advertised address among the host's (and so
        watches them): it listens on every interface and was given no ``--advertise``."""
        listener = self._listener  # type: ignore[attr-defined]
        return (self._advertise is None and listener is not None  # type: ignore[attr-defined]
                and is_wildcard(urlsplit(listener.address).hostname))

    def _own_address(self) -> str | None:
        """What to advertise when ``--advertise`` is not given: the listener's address, or
        for a listener on every interface one of this host's addresses."""
        listener = self._listener  # type: ignore[attr-defined]
        if listener is None:
            return None
        if not self._follows_interfaces():
            return listener.address  # type: ignore[no-any-return]
        address: str = listener.address
        return _on_host(urlsplit(address), host_addresses()) or address

    async def _interface_loop(self) -> None:
        """Advertise another of this host's addresses once the advertised one has left it."""
        url = urlsplit(self._listener.address)  # type: ignore[attr-defined]
        while True:
            await anyio.sleep(self.interface_interval)
            addresses = host_addresses()
            current = urlsplit(self.address).hostname  # type: ignore[attr-defined]
            if current in addresses:
                continue
            new = _on_host(url, addresses)
            if new is None or new == self.address:  # type: ignore[attr-defined]
                continue
            log.warning("address %s left this host: advertising %s and saying hello again to "
                        "every peer", current, new, extra={"code": "ADDRESS_CHANGED"})
            self._readdress(new)

    def _readdress(self, address: str, *, hello_again: bool = True,
                   keep: bytes | None = None) -> None:
        """Advertise ``address`` from now on; peers hold the old one from our hellos, so
        each connection but ``keep``'s is closed and made again (A4.5)."""
        self.address = address
        self._engine.readdress(address)  # type: ignore[attr-defined]
        for link in self.links:  # type: ignore[attr-defined]  # the bootstrap server learns it
            link.close()
        if hello_again:
            for peer_id, pc in list(self.conns.items()):  # type: ignore[attr-defined]
                if peer_id != keep:
                    self._tg.start_soon(pc.close)  # type: ignore[attr-defined]


def _on_host(url: SplitResult, addresses: list[str]) -> str | None:
    """``url`` with its host replaced by this host's address of the same family."""
    family = socket.AF_INET6 if ":" in (url.hostname or "") else socket.AF_INET
    ip = primary(addresses, family=family)
    if ip is None:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return urlunsplit(url._replace(netloc=f"{host}:{url.port}"))
