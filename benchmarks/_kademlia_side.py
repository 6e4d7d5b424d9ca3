"""The `kademlia` PyPI package (asyncio UDP, k=20, alpha=3) behind peer_compare's side API.

Every node is a `kademlia.network.Server` listening on its own UDP port of
127.0.0.1 in this process. Its ids are 160 bits; it hashes keys with sha1
itself, so the harness passes the same 32-byte key it gives yzcore and the
oracle uses sha1(key) as the key's place in kademlia's id space.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from importlib.metadata import version

from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node

__all__ = ["KademliaSide"]

HOST = "127.0.0.1"


class KademliaSide:
    """N kademlia servers in this process, addressed by harness index."""

    name = "kademlia"
    id_bits = 160
    kill_method = "transport.close() (Server.stop), no goodbye"

    def __init__(self, seed: int, *, k: int = 20, alpha: int = 3) -> None:
        self.version = version("kademlia")
        self.k = k
        self.alpha = alpha
        self._ids = random.Random(f"kademlia-ids-{seed}")
        self._servers: dict[int, Server] = {}
        self._addrs: dict[int, tuple[str, int]] = {}
        self._peers: dict[int, list[int]] = {}

    # -- lifecycle ---------------------------------------------------------

    async def setup(self, task_group: object) -> None:  # asyncio needs no task group
        random.seed(self._ids.random())  # kademlia's own refresh ids use the global RNG

    async def start_node(self, index: int, peers: list[int]) -> None:
        """Listen on an ephemeral UDP port; the bootstrap happens in join_node."""
        node_id = hashlib.sha1(self._ids.randbytes(32)).digest()
        server = Server(ksize=self.k, alpha=self.alpha, node_id=node_id)
        await server.listen(0, interface=HOST)
        self._servers[index] = server
        self._addrs[index] = server.transport.get_extra_info("sockname")[:2]
        self._peers[index] = peers

    async def join_node(self, index: int, timeout: float) -> bool:
        """Bootstrap from the peers given at start (a ping each, then a self lookup)."""
        peers = self._peers[index]
        if not peers:
            return True
        addrs = [self._addrs[p] for p in peers]
        found = await asyncio.wait_for(self._servers[index].bootstrap(addrs), timeout)
        return bool(found)

    def node_id(self, index: int) -> bytes:
        return self._servers[index].node.id

    def kill(self, index: int) -> None:
        """Abrupt: close the UDP transport; nobody is told."""
        server = self._servers[index]
        server.stop()
        self._drop_outstanding(server)

    async def aclose(self) -> None:
        for server in self._servers.values():
            server.stop()
        for server in self._servers.values():
            self._drop_outstanding(server)
        await asyncio.sleep(0.2)  # let the tasks woken above finish
        self._servers.clear()

    @staticmethod
    def _drop_outstanding(server: Server) -> None:
        """Resolve its pending RPCs now, so no 5 s timer outlives the node."""
        proto = server.protocol
        if proto is None:
            return
        for fut, timer in list(proto._outstanding.values()):
            timer.cancel()
            if not fut.done():
                fut.set_result((False, None))
        proto._outstanding.clear()

    # -- id space ----------------------------------------------------------

    def target_id(self, target: bytes) -> bytes:
        """A 32-byte random target cut down to kademlia's 160 bits."""
        return target[:20]

    def key_id(self, key: bytes) -> bytes:
        """Where kademlia places ``key``: Server.set/get hash it with sha1."""
        return hashlib.sha1(key).digest()

    # -- operations --------------------------------------------------------

    async def find_node(self, index: int, target: bytes) -> list[bytes]:
        """An iterative FIND_NODE lookup (the one Server.set runs), nearest first."""
        server = self._servers[index]
        node = Node(self.target_id(target))
        nearest = server.protocol.router.find_neighbors(node)
        spider = NodeSpiderCrawl(server.protocol, node, nearest, server.ksize, server.alpha)
        found = await spider.find()
        return [n.id for n in found]

    async def put(self, index: int, key: bytes, value: str) -> bool:
        return bool(await self._servers[index].set(key, value))

    async def get(self, index: int, key: bytes) -> str | None:
        value = await self._servers[index].get(key)
        return value if isinstance(value, str) else None

    def table_size(self, index: int) -> int:
        router = self._servers[index].protocol.router
        return sum(len(b) for b in router.buckets)
