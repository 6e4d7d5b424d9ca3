"""A6.1: nodes named by hostname find each other and dial the names they learn.

On a Docker network each container is reached by its name, which Docker's
embedded DNS resolves. What yzcore has to do is the same anywhere: take
peers by name, advertise a name in its hello, hand that name on in replies,
and dial the names it learns, resolving each at dial time rather than
turning it into an address once. This test runs no Docker: every node
advertises ``localhost`` (the one name every machine resolves, to loopback)
with its own port, and listens on 127.0.0.1.
"""

from __future__ import annotations

import anyio
import pytest

from yzcore.runtime import Node
from yzcore.transport import KNOWN_ADDRESSES

from .procs import free_port

pytestmark = pytest.mark.anyio


@pytest.mark.req("A6.1")
async def test_nodes_named_by_hostname_find_each_other_and_dial_the_names_they_learn():
    async with anyio.create_task_group() as tg:
        nodes: list[Node] = []
        for i in range(8):
            port = free_port()
            node = Node(listen=f"ws://127.0.0.1:{port}/dht", advertise=f"ws://localhost:{port}/dht",
                        peers=[nodes[0].address] if nodes else [], seed=80 + i)
            await node.start(tg)
            nodes.append(node)
        with anyio.fail_after(30):
            for node in nodes[1:]:
                await node.joined()
        names = {node.id: node.address for node in nodes}
        assert all(a.startswith("ws://localhost:") for a in names.values())

        late = nodes[-1]  # its one seed was named; every other peer it learned from replies
        contacts = late.engine.table.contacts()
        assert len(contacts) >= 5
        assert all(c.address == names[c.id] for c in contacts)  # by the name each advertised
        dialled = [pc for pc in late.conns.values() if pc.outbound and pc.peer.id != nodes[0].id]
        assert dialled, "the late joiner dialled no peer it learned by name"
        assert all(pc.info.addr == names[pc.peer.id] for pc in dialled)

        for other in nodes[1:-1]:  # and a lookup reaches each one under its name
            found = (await late.find_node(other.id)).nodes[0]
            assert (found.id, found.addr) == (other.id, names[other.id])
        for node in nodes:
            await node.aclose()
    KNOWN_ADDRESSES.forget("localhost")  # the process-wide map of names dialled: leave it as found
