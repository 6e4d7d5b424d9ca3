"""yzcore's anyio runtime behind peer_compare's side API.

Every node is a `yzcore.runtime.Node` on its own WebSocket listener of
127.0.0.1 in this process, all run by one anyio task group. Ids and keys are
256 bits; keys are used as given (32-byte sha256 digests).

Importing this module raises ImportError while the runtime is missing, so
`peer_compare.py --only kademlia` works without it.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from importlib.metadata import version

import anyio
from anyio.abc import TaskGroup

from yzcore.protocol.config import EngineConfig
from yzcore.runtime import Node

__all__ = ["YzcoreSide"]

LISTEN = "ws://127.0.0.1:0/dht"
# Each node checks its health with a lookup every 30 s by default (ARCHITECTURE
# §4). N nodes sharing one CPU would spend N/30 lookups a second on it, which
# the kademlia package (no health checks) does not: the comparison probes
# every 10 minutes, and says so in its table.
PROBE_INTERVAL = 600.0


class YzcoreSide:
    """N yzcore nodes in this process, addressed by harness index."""

    name = "yzcore"
    id_bits = 256
    notes = (f"health probe every {PROBE_INTERVAL:g} s instead of 30 s "
             "(every node shares this one CPU; kademlia has none)",)
    kill_method = (
        "Node.kill(), which is Node.aclose(): a graceful close, peers get WebSocket close frames"
        if getattr(Node, "kill", None) is getattr(Node, "aclose", None)
        else "Node.kill(): sockets closed, no goodbye"
    )

    def __init__(self, seed: int, *, k: int = 20, alpha: int = 3) -> None:
        self.version = version("yzcore")
        self.k = k
        self.alpha = alpha
        self.config = EngineConfig(k=k, alpha=alpha)
        self._nodes: dict[int, Node] = {}
        self._tg: TaskGroup | None = None
        # Node identities are fresh keys either way; the engines' own random
        # choices are seeded when the runtime takes a seed.
        self._seeds = random.Random(f"yzcore-seeds-{seed}")
        self._seeded = "seed" in inspect.signature(Node).parameters

    # -- lifecycle ---------------------------------------------------------

    async def setup(self, task_group: TaskGroup) -> None:
        self._tg = task_group

    async def start_node(self, index: int, peers: list[int]) -> None:
        """Listen on an ephemeral port; the join runs in the background."""
        assert self._tg is not None
        extra = {"seed": self._seeds.getrandbits(64)} if self._seeded else {}
        if "probe_interval" in inspect.signature(Node).parameters:
            extra["probe_interval"] = PROBE_INTERVAL
        node = Node(listen=LISTEN, peers=[self._nodes[p].address for p in peers],
                    data_dir=None, config=self.config, **extra)
        await node.start(self._tg)
        self._nodes[index] = node

    async def join_node(self, index: int, timeout: float) -> bool:
        """Wait for the node's bootstrap lookup to finish."""
        result = await self._nodes[index].joined(timeout)
        return result is not False

    def node_id(self, index: int) -> bytes:
        return self._nodes[index].id

    def kill(self, index: int) -> object:
        """Abrupt: the node closes its sockets without a goodbye."""
        return self._nodes[index].kill()

    async def aclose(self) -> None:
        nodes = list(self._nodes.values())
        self._nodes.clear()

        async def close(node: Node) -> None:
            with anyio.move_on_after(5), contextlib.suppress(Exception):
                await node.aclose()  # teardown goes on whatever one node does

        # Graceful closes in parallel, bounded so teardown cannot hang.
        with anyio.move_on_after(60):
            async with anyio.create_task_group() as tg:
                for node in nodes:
                    tg.start_soon(close, node)

    # -- id space ----------------------------------------------------------

    def target_id(self, target: bytes) -> bytes:
        return target

    def key_id(self, key: bytes) -> bytes:
        return key

    # -- operations --------------------------------------------------------

    async def find_node(self, index: int, target: bytes) -> list[bytes]:
        res = await self._nodes[index].find_node(target)
        return [n.id for n in res.nodes]

    async def put(self, index: int, key: bytes, value: str) -> bool:
        res = await self._nodes[index].put(key, value)
        return res.stored > 0

    async def get(self, index: int, key: bytes) -> str | None:
        return await self._nodes[index].get(key)

