"""WebRTC between Python light clients, on aiortc, inside a network namespace of the test's own.

Everything runs in-process on real sockets: a bootstrap server and server
nodes on 127.0.0.1 (WebSocket), and browser-class peers (``Node(role=
"browser")``, what ``yz client`` runs) whose DataChannels use the veth pair
inside the namespace (:mod:`tests.runtime.netns`): ICE never leaves it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import pytest

from tests.runtime.netns import inside_netns
from tests.runtime.procs import until
from yzcore import transport as transport_mod
from yzcore import wire
from yzcore.bootstrap.server import BootstrapServer
from yzcore.exceptions import ConnectionClosed, WebRtcFailed
from yzcore.runtime import Node

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::DeprecationWarning")]



@pytest.fixture
def netns():
    with inside_netns("wrtc") as name:
        yield name


async def _network(tg, servers: int = 3, bootstrap: bool = True):
    """A bootstrap server (or none) and ``servers`` nodes, joined."""
    boot = None
    if bootstrap:
        boot = BootstrapServer()
        await boot.start(tg)
    nodes = []
    for i in range(servers):
        n = Node(bootstrap=[boot.address] if boot else [], peers=[nodes[0].address] if i and not boot else [],
                 heartbeat_interval=1, seed=i)
        await n.start(tg)
        await n.joined()
        nodes.append(n)
    return boot, nodes


async def _browser(tg, boot, via: list[str] = (), **kw) -> Node:
    b = Node(listen=None, role="browser", bootstrap=[boot.address] if boot else [], peers=via,
             heartbeat_interval=1, **kw)
    b.managers.timeout = 3.0
    await b.start(tg)
    await b.joined()
    await until("the browser-class peer has a server node", lambda: b.managers.relays(), 10)
    if boot:
        await until("its bootstrap link", lambda: b.links[0].pc is not None, 10)
    return b


async def _stop(tg, *servers) -> None:
    """Close every node and bootstrap server given, then the test's task group."""
    for server in servers:
        await server.aclose()
    tg.cancel_scope.cancel()


def _counted(node: Node, transport: str, direction: str, type_: str) -> int:
    """Messages of ``type_`` counted by the node's transfer metrics (B4.3: counted, not changed)."""
    return node.metrics.messages[(transport, "in" if direction == "received" else "out", type_)]


async def _find_node_over(a: Node, b: Node, transport: str) -> None:
    """A find_node from ``a`` to ``b`` over their connection, answered from ``b``'s table."""
    pc = a.conns[b.id]
    assert pc.conn.transport == transport
    before = _counted(a, transport, "received", "nodes")
    pc.send(wire.FindNode(999_001, b.id))
    await until(f"a nodes reply over {transport}", lambda: _counted(a, transport, "received", "nodes") > before, 5)
    assert _counted(b, transport, "received", "find_node") >= 1
    assert _counted(b, transport, "sent", "nodes") >= 1


@pytest.mark.req("B4.1", "B4.2", "B4.3", "B6.2", "B6.3", "B1.3")
async def test_two_light_clients_open_a_datachannel_through_the_bootstrap_server(netns):
    async with anyio.create_task_group() as tg:
        boot, nodes = await _network(tg)
        a, b = await _browser(tg, boot), await _browser(tg, boot)
        # The factory: server nodes by WebSocket, a browser-class peer by WebRTC.
        assert a.managers.pick(wire.NodeInfo(nodes[0].id, nodes[0].address, "node")).name == "websocket"
        assert a.managers.pick(wire.NodeInfo(b.id, f"webrtc://{b.id.hex()}", "browser")).name == "webrtc"
        assert nodes[0].managers.webrtc.available is False  # server nodes never use WebRTC
        start = anyio.current_time()
        info = await a.managers.reach(b.id)
        print(f"DataChannel opened in {anyio.current_time() - start:.3f} s")
        assert info.id == b.id and info.role == "browser"
        assert a.conns[b.id].conn.transport == "webrtc"
        await until("b registered a", lambda: a.id in b.conns, 5)
        assert b.conns[a.id].conn.transport == "webrtc"
        await _find_node_over(a, b, "webrtc")
        await _find_node_over(b, a, "webrtc")
        status = a.http.status()
        assert status["managers"]["webrtc"]["connected"] == 1
        assert status["connections"].get("webrtc") == 1
        # Nothing lost: 200 pings, 200 pongs over the channel.
        pc = a.conns[b.id]
        before = _counted(a, "webrtc", "received", "pong")
        for i in range(200):
            pc.send(wire.Ping(500_000 + i))
        await until("200 pongs", lambda: _counted(a, "webrtc", "received", "pong") >= before + 200, 10)
        # DHT operations of both still go over WebSocket to the server nodes.
        await b.put(b"k" * 32, "over ws")
        assert await a.get(b"k" * 32) == "over ws"
        # Closing one side is seen by the other.
        await a.conns[b.id].close()
        await until("b saw the DataChannel close", lambda: a.id not in b.conns, 15)
        await _stop(tg, a, b, *nodes, boot)


@pytest.mark.req("B4.4")
async def test_signals_go_along_a_dht_connection_when_there_is_no_bootstrap_server(netns):
    async with anyio.create_task_group() as tg:
        _, nodes = await _network(tg, servers=2, bootstrap=False)
        # Both reach the network through the same node only: it passes their signals on.
        a = await _browser(tg, None, via=[nodes[0].address])
        b = await _browser(tg, None, via=[nodes[0].address])
        assert not a.links and not b.links
        await a.managers.reach(b.id)
        assert a.conns[b.id].conn.transport == "webrtc"
        await _find_node_over(a, b, "webrtc")
        # A signal for a peer nobody holds comes back as an error naming the session, at once.
        stranger = bytes(range(32))
        started = anyio.current_time()
        with pytest.raises(WebRtcFailed) as err:
            await a.managers.endpoint.connect(stranger, timeout=20.0)
        assert err.value.code == "PEER_UNREACHABLE", err.value
        assert anyio.current_time() - started < 5  # every relay said so: not the 20 s timeout
        await _stop(tg, a, b, *nodes)


@pytest.mark.req("B4.5", "B6.5")
async def test_when_webrtc_fails_traffic_goes_through_a_relay_and_the_failure_is_reported(netns):
    # The namespace drops every UDP packet: ICE can never connect. TCP (WebSocket) still flows.
    subprocess.run(["iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP"], check=True)  # noqa: ASYNC221
    async with anyio.create_task_group() as tg:
        boot, nodes = await _network(tg, servers=2)
        a, b = await _browser(tg, boot), await _browser(tg, boot)
        start = anyio.current_time()
        await a.managers.reach(b.id)
        print(f"reached through the fallback in {anyio.current_time() - start:.2f} s")
        pc = a.conns[b.id]
        assert pc.conn.transport == "bridge"  # spliced by a server node both hold connections to
        failure = a.managers.webrtc.last_error
        assert failure is not None and failure["code"] == "WEBRTC_FAILED" and failure["peer"] == b.id.hex()
        assert any(e["code"] == "WEBRTC_FAILED" and e["transport"] == "webrtc" for e in a.errors)
        status = a.http.status()["managers"]
        assert status["webrtc"]["failed"] == 1 and status["relay"]["connected"] == 1
        assert status["websocket"]["failed"] == 0  # one manager failing leaves the other alone
        await _find_node_over(a, b, "bridge")
        # The plain server node that spliced it says so in its /status.
        relayed = [n.http.status()["relay"] for n in nodes]
        assert sum(r["relays"] for r in relayed) == 1 and sum(r["relayed_frames"] for r in relayed) > 4
        await _find_node_over(b, a, "bridge")
        await _stop(tg, a, b, *nodes, boot)


@pytest.mark.req("B6.1", "B6.5")
async def test_a_broken_webrtc_plugin_leaves_websocket_working_and_says_why(netns, monkeypatch):
    class Broken:
        name, value = "webrtc", "yzcore_transports.webrtc:WebRtcTransport"

        def load(self):
            raise ImportError("No module named 'aiortc'")

    real = transport_mod._entry_points
    monkeypatch.setattr(transport_mod, "_entry_points",
                        lambda: [ep for ep in real() if ep.name != "webrtc"] + [Broken()])
    transport_mod.unregister("webrtc")  # forget a loaded instance
    try:
        async with anyio.create_task_group() as tg:
            boot, nodes = await _network(tg, servers=2)
            a, b = await _browser(tg, boot), await _browser(tg, boot)
            for peer in (a, b):
                assert peer.managers.webrtc.available is False
                assert "yzcore[webrtc]" in peer.managers.webrtc.reason  # the install hint
            # WebSocket is untouched: lookups and values work.
            found = await a.find_node(nodes[1].id)
            assert found.nodes[0].id == nodes[1].id
            # The browser-class peer is still reached: through a relay, with the reason recorded.
            await a.managers.reach(b.id)
            assert a.conns[b.id].conn.transport == "bridge"
            assert a.managers.webrtc.last_error["code"] == "WEBRTC_UNAVAILABLE"
            await _find_node_over(a, b, "bridge")
            await _stop(tg, a, b, *nodes, boot)
    finally:
        transport_mod.unregister("webrtc")


@pytest.mark.req("B6.3")
async def test_a_server_node_asks_a_browser_class_peer_to_connect_to_it(netns):
    async with anyio.create_task_group() as tg:
        boot, nodes = await _network(tg, servers=3)
        b = await _browser(tg, boot)
        far = Node(bootstrap=[boot.address], heartbeat_interval=1)  # joins after b: b never met it
        await far.start(tg)
        await far.joined()
        await until("far's bootstrap link", lambda: far.links[0].pc is not None, 10)
        nodes.append(far)
        assert far.id not in b.conns
        info = await far.managers.reach(b.id)  # a `dial` signal through the bootstrap server
        assert info.id == b.id and far.conns[b.id].conn.transport == "ws"
        assert not far.conns[b.id].outbound  # the browser-class peer dialled
        asked = b.metrics.messages[("ws", "in", "signal")]
        assert asked >= 1  # because it was asked to (by each path the signal took)
        # A dial names its sender's own address, or goes nowhere: any peer could aim
        # browser-class peers at any URL (a loopback service on their host, say).
        hits: list[bytes] = []

        async def victim(stream) -> None:
            async with stream:
                with anyio.move_on_after(1):
                    hits.append(await stream.receive(300))

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        tg.start_soon(listener.serve, victim)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        c = await _browser(tg, boot)
        for sender in (far, c):
            sender.links[0].pc.send(wire.Signal(b.id, None, {
                "kind": "dial", "addr": f"ws://127.0.0.1:{port}/anything"}))
        await anyio.sleep(1.0)
        assert b.metrics.messages[("ws", "in", "signal")] == asked and hits == []
        await _stop(tg, b, c, *nodes, boot)


@pytest.mark.req("B1.3", "B1.5")
async def test_diagnose_makes_a_webrtc_round_trip_and_names_the_manager_that_fails(netns):
    async def diagnose(boot) -> tuple[int, dict]:
        out = await anyio.run_process([sys.executable, "-m", "yzcore.cli", "diagnose", "--bootstrap",
                                       boot.address, "--json"], check=False)
        return out.returncode, json.loads(out.stdout)

    async with anyio.create_task_group() as tg:
        boot, nodes = await _network(tg, servers=2)
        code, report = await diagnose(boot)
        step = next(s for s in report["steps"] if s["name"] == "webrtc")
        print(step["detail"])
        assert step["verdict"] == "ok" and "round trip" in step["detail"], step
        assert report["managers"]["webrtc"] == "ok" and code == 0, report
        await anyio.run_process(["iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP"])
        code, report = await diagnose(boot)
        step = next(s for s in report["steps"] if s["name"] == "webrtc")
        print(step["detail"])
        assert step["verdict"] == "fail" and step["code"] == "WEBRTC_FAILED", step
        assert report["managers"] == {**report["managers"], "webrtc": "fail", "websocket": "ok"}
        assert code == 1
        await _stop(tg, *nodes, boot)


@pytest.mark.req("B6.5")
async def test_signals_and_webrtc_dials_are_bounded(netns):
    async with anyio.create_task_group() as tg:
        _, nodes = await _network(tg, servers=2, bootstrap=False)
        a = await _browser(tg, None, via=[nodes[0].address])
        b = await _browser(tg, None, via=[nodes[0].address])
        # A webrtc:// address from somebody's contact list is not dialled: only reach() dials,
        # so a poisoned `nodes` answer costs nothing (no offer, no relay attempts).
        signals = a.metrics.messages[("ws", "out", "signal")]
        assert await a._dial(wire.NodeInfo(b.id, f"webrtc://{b.id.hex()}", "browser")) is None
        assert a.metrics.messages[("ws", "out", "signal")] == signals  # no offer went out
        assert a.managers.webrtc.last_error["code"] == "WEBRTC_UNAVAILABLE"
        assert a.managers.relay.attempts == 0 and b.id not in a.conns
        # A flood of signals through a node: it passes on a burst, then drops and says so.
        pc = a.conns[nodes[0].id]
        errors = len(nodes[0].errors)
        for i in range(300):
            pc.send(wire.Signal(bytes(32), None, {"kind": "offer", "session": f"{i:016x}"}))
        await until("the node refused the flood", lambda: any(
            e["code"] == "RATE_LIMITED" for e in list(nodes[0].errors)[errors:]), 5)
        await anyio.sleep(0.5)
        refused = a.metrics.messages[("ws", "in", "signal")]
        assert 30 <= refused <= 60, refused  # the burst (40) and a little refill, not 300
        await _stop(tg, a, b, *nodes)


@pytest.mark.req("B4.2")
async def test_a_datachannel_outlives_the_handshake_timeout(netns):
    async with anyio.create_task_group() as tg:
        boot, nodes = await _network(tg, servers=2)
        a, b = await _browser(tg, boot), await _browser(tg, boot)
        a.handshake_timeout = b.handshake_timeout = 1.0
        await a.managers.reach(b.id)
        await anyio.sleep(2.5)  # longer than either side's handshake timeout
        assert b.id in a.conns and a.id in b.conns
        await _find_node_over(a, b, "webrtc")
        await _find_node_over(b, a, "webrtc")
        await _stop(tg, a, b, *nodes, boot)


@pytest.mark.req("B4.1")
async def test_the_accepting_side_refuses_a_dialer_that_is_not_who_the_offer_named(netns):
    from yzcore.identity import Identity
    from yzcore.runtime.peer import handshake

    async with anyio.create_task_group() as tg:
        boot, nodes = await _network(tg, servers=2)
        a, b = await _browser(tg, boot), await _browser(tg, boot)
        claimed = Identity.generate().node_id  # what a lying relay says the offer came from
        ep = a.managers.endpoint
        ep._signal = lambda to, data: b.managers.deliver(
            claimed, data, lambda d: ep.deliver(b.id, d)) or 1
        conn = await ep.connect(b.id, timeout=10)  # the DataChannel itself opens
        # B refuses (its error frame may or may not beat the close to A).
        with pytest.raises((wire.WireError, ConnectionClosed)):
            await handshake(conn, a.identity, role="browser", advertise=None, timeout=5,
                            expected_id=b.id)
        assert any(e["code"] == "ID_MISMATCH" for e in b.errors), list(b.errors)
        assert a.id not in b.conns and claimed not in b.conns
        await conn.close()
        await _stop(tg, a, b, *nodes, boot)


@pytest.mark.req("B4.1")
async def test_an_offer_carrying_video_is_refused(netns):
    # A peer's offer with a video line besides the DataChannel was answered as it was:
    # aiortc then decoded the video and queued each frame for a track nobody reads
    # (a helper measured 74 MB -> 1.9 GB in 45 s at 1280x720).
    import os

    from aiortc import RTCPeerConnection

    from yzcore_transports.webrtc import _Dial

    async with anyio.create_task_group() as tg:
        boot, nodes = await _network(tg, servers=2)
        a, b = await _browser(tg, boot), await _browser(tg, boot)
        ep = a.managers.endpoint
        pc = RTCPeerConnection()
        pc.createDataChannel("yz", ordered=True)
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        session = os.urandom(8).hex()
        dial = ep._dials[session] = _Dial(b.id)
        dial.paths = ep._signal(b.id, {"kind": "offer", "session": session,
                                       "sdp": pc.localDescription.sdp, "relays": []})
        with anyio.fail_after(10):
            await dial.event.wait()
        assert dial.reply["kind"] == "error" and dial.reply["code"] == "WEBRTC_FAILED"
        assert "audio or video" in dial.reply["message"]
        await pc.close()
        await a.managers.reach(b.id)  # a DataChannel alone is still taken
        assert b.id in a.conns and a.conns[b.id].conn.transport == "webrtc"
        await _stop(tg, a, b, *nodes, boot)


@pytest.mark.req("B4.4")
async def test_peers_linked_to_different_bootstrap_servers_meet_over_webrtc(netns):
    # A signal went by the bootstrap link alone: two peers linked to different
    # bootstrap servers (A7.2) that shared server nodes always fell back to a relay.
    async with anyio.create_task_group() as tg:
        b1, b2 = BootstrapServer(), BootstrapServer()
        await b1.start(tg)
        await b2.start(tg)
        nodes = []
        for i in range(2):
            n = Node(bootstrap=[b1.address, b2.address], heartbeat_interval=1, seed=i)
            await n.start(tg)
            await n.joined()
            nodes.append(n)
        a = await _browser(tg, b1)
        b = await _browser(tg, b2, via=[nodes[0].address])
        await until("both hold both server nodes", lambda: len(a.managers.relays()) == 2
                    and len(b.managers.relays()) == 2, 15)
        for x, y in ((a, b), (b, a)):
            await x.managers.reach(y.id, timeout=20)
            assert x.conns[y.id].conn.transport == "webrtc"
            await x.conns[y.id].close()
            await until("closed", lambda x=x, y=y: y.id not in x.conns and x.id not in y.conns, 10)
        await _stop(tg, a, b, *nodes, b1, b2)
