"""A peer whose host stops answering leaves the active connections within 5 s (A4.2).

A host that loses power, or a path that stops carrying packets, closes
nothing: no FIN, no RST. The test makes one: two nodes in a network
namespace of its own, then a firewall rule that drops every packet to and
from one of them. The other must drop the connection by itself, through the
kernel's timeout (``DEAD_PEER_TIMEOUT``), long before a keepalive ping
(10 s) could even go unanswered, and say why in its errors.
"""

from __future__ import annotations

import socket
import subprocess

import anyio
import pytest

from tests.runtime.netns import ADDRESSES, inside_netns
from yzcore.runtime import Node
from yzcore_transports.ws import DEAD_PEER_TIMEOUT, set_dead_peer_timeout

pytestmark = pytest.mark.anyio


@pytest.fixture
def netns():
    with inside_netns("dead") as name:
        yield name


def vanish(address: str) -> None:
    """Every packet to or from ``address`` is dropped from now on: its host is gone."""
    for side in ("-s", "-d"):
        subprocess.run(["iptables", "-I", "INPUT", side, address, "-j", "DROP"], check=True)


async def until_gone(node: Node, peer: bytes) -> float:
    """Seconds until ``peer`` leaves ``node``'s connections and its engine's active list."""
    start = anyio.current_time()
    with anyio.fail_after(30):  # the pings alone would take 10-20 s: the test says which
        while peer in node.conns or peer in node.engine.connected():  # type: ignore[union-attr]
            await anyio.sleep(0.02)
    return anyio.current_time() - start


def silent_entries(node: Node, peer: Node) -> list[dict]:
    return [e for e in node.errors if e["code"] == "PEER_UNREACHABLE" and e["peer"] == peer.id.hex()]


@pytest.mark.req("A4.2")
async def test_a_peer_whose_host_stops_answering_leaves_within_5_s(netns):
    assert DEAD_PEER_TIMEOUT <= 4.0  # the contract's 5 s, less a second for everything else
    async with anyio.create_task_group() as tg:
        # a dials b: only a socket to b's address passes the rule (one b dialled would
        # start from the address the route to a gives it, a's own).
        b = Node(listen=f"ws://{ADDRESSES[1]}:0/dht", seed=82)
        await b.start(tg)
        a = Node(listen=f"ws://{ADDRESSES[0]}:0/dht", peers=[b.address], seed=81)
        await a.start(tg)
        c = Node(listen=f"ws://{ADDRESSES[0]}:0/dht", peers=[a.address], seed=83)
        await c.start(tg)
        with anyio.fail_after(10):
            await a.joined()
            await c.joined()
            while b.id not in a.conns or c.id not in a.conns:
                await anyio.sleep(0.02)
        await anyio.sleep(1.0)  # idle: the kernel's probes, not a request, must find it

        vanish(ADDRESSES[1])  # b's host is gone; a and c share the other address
        took = await until_gone(a, b.id)
        print(f"\n{b.address} left {a.address}'s active connections {took:.2f} s after its "
              f"host stopped answering")

        # The kernel's timeout found it: a ping could not have gone unanswered yet.
        entries = silent_entries(a, b)
        assert entries, list(a.errors)
        assert "its host stopped answering" in entries[-1]["message"], entries[-1]
        assert f"nothing acknowledged for {DEAD_PEER_TIMEOUT:g} s" in entries[-1]["message"]
        assert took <= 5.0  # A4.2
        # Everyone else is still served: c's connection to a is untouched and answers.
        assert c.id in a.conns
        result = await c.find_node(a.id)
        assert result.nodes and result.nodes[0].id == a.id
        assert not silent_entries(a, c) and not silent_entries(c, a)
        tg.cancel_scope.cancel()


@pytest.mark.req("A4.2")
async def test_a_request_in_flight_to_a_vanished_host_does_not_hold_the_connection(netns):
    # Data in flight takes TCP's other path (retransmissions, not probes);
    # TCP_USER_TIMEOUT bounds that one too.
    async with anyio.create_task_group() as tg:
        b = Node(listen=f"ws://{ADDRESSES[1]}:0/dht", seed=92)
        await b.start(tg)
        a = Node(listen=f"ws://{ADDRESSES[0]}:0/dht", peers=[b.address], seed=91)
        await a.start(tg)
        with anyio.fail_after(10):
            await a.joined()
            while b.id not in a.conns:
                await anyio.sleep(0.02)
        vanish(ADDRESSES[1])
        tg.start_soon(a.find_node, b.id)  # sent to b, never acknowledged
        took = await until_gone(a, b.id)
        print(f"\nwith a request in flight: gone after {took:.2f} s")
        entries = silent_entries(a, b)
        assert entries and "its host stopped answering" in entries[-1]["message"], list(a.errors)
        assert took <= 5.0
        tg.cancel_scope.cancel()


def test_the_timeout_is_set_on_tcp_sockets_only():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert set_dead_peer_timeout(udp, 4.0) is False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        assert set_dead_peer_timeout(tcp, 4.0) is True
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 4000
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
