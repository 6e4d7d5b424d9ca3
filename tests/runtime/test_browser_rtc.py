"""Two real Chromium pages reach each other: a WebRTC DataChannel, else a relaying node.

Everything runs inside a network namespace of the test's own
(:func:`tests.runtime.netns.inside_netns`): ICE ignores loopback, so the
pages' host candidates are on the namespace's veth, and no packet leaves it.
Each page is a node's own ``/demo`` in a browser context of its own (its own
IndexedDB, so its own identity); signals go through a real ``yz bootstrap``
(docs/reference/webrtc.md).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .chromium import WEBRTC_ARGS, launch, require
from .netns import ADDRESSES, inside_netns
from .procs import YZ, get_json, http_url, json_line, wait_for


@contextmanager
def _inside(procs) -> Iterator[None]:
    """The test's own namespace; every process started inside is gone when it ends."""
    require()
    with inside_netns("brtc"):
        try:
            yield
        finally:
            procs.close()


def _oracle(ids: list[str], target: str, k: int = 20) -> list[str]:
    return sorted(ids, key=lambda x: int(x, 16) ^ int(target, 16))[:k]


def _network(procs, *extra: str) -> tuple[str, list[dict]]:
    """A bootstrap server and three nodes that know each other; (bootstrap URL, node infos)."""
    _, boot = procs.start("boot", "bootstrap", "--listen", "127.0.0.1:0", *extra)
    url = boot["address"]
    _, first = procs.node("n0", "--bootstrap", url)
    nodes = [first] + [procs.node(f"n{i}", "--bootstrap", url, "--peer", first["address"])[1]
                       for i in (1, 2)]
    for n in nodes:
        wait_for(f"{n['address']} knows the other two",
                 lambda n=n: (s := get_json(n["address"], "/status")) and s["routing_table"] >= 2,
                 20, every=0.1)
    return url, nodes


def _page(browser, node: dict, boot: str, errors: list[str]):
    """A page in a context of its own, joined through ``node`` and listening on ``boot``."""
    page = browser.new_context().new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(http_url(node["address"]) + "/demo")
    page.wait_for_selector("body[data-joined=yes]", timeout=15000)
    info = page.evaluate("async (b) => await window.yz.listen(b)", boot)
    assert info["role"] == "bootstrap"
    return page


def _two_pages(p, procs, errors: list[str]):
    """The network, a Chromium, and two pages joined at nodes 1 and 0, each listening on the
    bootstrap server: (nodes, browser, (page A, its id), (page B, its id))."""
    boot, nodes = _network(procs)
    browser = launch(p, WEBRTC_ARGS)
    pages = [_page(browser, nodes[i], boot, errors) for i in (1, 0)]
    return nodes, browser, *((pg, pg.evaluate("() => window.yz.idHex")) for pg in pages)


ON_PEER = "() => { window.accepted = []; window.yz.onpeer = (p) => window.accepted.push(p); }"
ACCEPTED = "(id) => window.accepted.length === 1 && window.yz.peers.get(id) === window.accepted[0]"
REQUEST = "async ([id, msg]) => await window.yz.peers.get(id).request(msg)"
#: The selected ICE candidate pair of the connection to a peer.
PAIR = """async (id) => {
    const stats = await window.yz.peers.get(id).link.pc.getStats();
    let pair = null;
    stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId)
        pair = stats.get(s.selectedCandidatePairId); });
    const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
    return { local: local.address, remote: remote.address, type: local.candidateType,
             state: pair.state };
}"""
#: connectPeer's error code; the server's PEER_UNREACHABLE turned into its other shape (an
#: `error` frame with rid null <-> a `signal` whose data is {kind: "error", session, code}).
UNREACHABLE_OTHER_SHAPE = """async (id) => {
    const link = window.yz.bootstrap.link, receive = link.receive;
    link.receive = (data) => {
        const m = JSON.parse(data), d = m.data || {};
        if (m.t === "error" && m.code === "PEER_UNREACHABLE" && m.rid == null) {
            const session = [...window.yz.sessions.keys()][0];
            m.t = "signal"; m.to = window.yz.idHex; m.frm = null;
            m.data = { kind: "error", session, code: m.code, message: "shimmed" };
        } else if (m.t === "signal" && d.kind === "error" && d.code === "PEER_UNREACHABLE") {
            m.t = "error"; m.rid = null; m.code = d.code; m.message = `peer ${id.slice(0, 16)} shimmed`;
            delete m.data; delete m.to; delete m.frm;
        }
        receive.call(link, JSON.stringify(m));
    };
    try { await window.yz.connectPeer(id); return "connected"; } catch (e) { return e.code; }
    finally { link.receive = receive; }
}"""


@pytest.mark.req("B4.1", "B4.2", "B4.4")
def test_two_browsers_open_a_webrtc_datachannel_with_signals_through_the_bootstrap_server(procs):
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with _inside(procs), sync_api.sync_playwright() as p:
        nodes, browser, (a, a_id), (b, b_id) = _two_pages(p, procs, errors)
        assert a_id != b_id  # two contexts, two IndexedDBs, two identities
        b.evaluate(ON_PEER)
        got = a.evaluate("""async (id) => { const p = await window.yz.connectPeer(id);
            return { path: p.path, id: p.info.id, role: p.info.role }; }""", b_id)
        assert got == {"path": "webrtc", "id": b_id, "role": "browser"}, (
            got, a.evaluate("() => window.yz.failures"))
        assert a.evaluate("() => window.yz.failures") == []  # no timeout, no fallback
        # Over the namespace's veth (ICE ignores loopback), host candidates only.
        pair = a.evaluate(PAIR, b_id)
        assert pair["local"] in ADDRESSES and pair["remote"] in ADDRESSES, pair
        assert pair["type"] == "host" and pair["state"] == "succeeded", pair
        # The accepting side registered it (path webrtc) and told the page.
        wait_for("B registered A", lambda: b.evaluate(ACCEPTED, a_id), 5, every=0.1)
        assert b.evaluate("(id) => window.yz.peers.get(id).path", a_id) == "webrtc"
        # A ping round trip each way over the channel.
        assert a.evaluate(REQUEST, [b_id, {"t": "ping"}])["t"] == "pong"
        assert b.evaluate(REQUEST, [a_id, {"t": "ping"}])["t"] == "pong"
        # find_node over the channel: B answers from the server nodes it knows, closest first.
        target = nodes[2]["id"]
        answer = a.evaluate(REQUEST, [b_id, {"t": "find_node", "target": target}])
        assert answer["t"] == "nodes", answer
        assert [n["id"] for n in answer["nodes"]] == _oracle([n["id"] for n in nodes], target), answer
        assert {n["addr"] for n in answer["nodes"]} == {n["address"] for n in nodes}
        assert all(n["role"] == "node" for n in answer["nodes"])
        # Dialling again gives the same connection: one per peer id.
        assert a.evaluate("""async (id) => (await window.yz.connectPeer(id)) === window.yz.peers.get(id)
            && [...window.yz.peers.values()].filter((p) => p.path === "webrtc").length""", b_id) == 1
        # Counted on the webrtc path, both directions, on both pages; the signals on ws.
        for page, sent, heard in ((a, "find_node", "nodes"), (b, "nodes", "find_node")):
            c = page.evaluate("() => window.yz.counters.webrtc")
            assert c["out"]["types"]["hello"] == 1 and c["in"]["types"]["auth"] == 1, c
            assert c["out"]["types"]["ping"] == 1 and c["in"]["types"]["pong"] == 1, c
            assert c["out"]["types"][sent] == 1 and c["in"]["types"][heard] == 1, c
            assert c["in"]["messages"] >= 5 and c["out"]["messages"] >= 5, c
            assert c["in"]["bytes"] > 300 and c["out"]["bytes"] > 300, c
            ws = page.evaluate("() => window.yz.counters.ws")
            assert "signal" in ws["out"]["types"] and "signal" in ws["in"]["types"], ws
            assert page.evaluate("() => window.yz.counters.relay.out.messages") == 0
        # Closing one side closes the other's too.
        a.evaluate("(id) => window.yz.peers.get(id).close()", b_id)
        wait_for("B saw the channel close",
                 lambda: not b.evaluate("(id) => window.yz.peers.has(id)", a_id), 5, every=0.1)
        browser.close()
    assert not errors, errors


@pytest.mark.req("B4.5")
def test_when_webrtc_fails_the_dialer_reports_it_and_goes_through_a_relaying_node(procs):
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with _inside(procs), sync_api.sync_playwright() as p:
        nodes, browser, (a, a_id), (b, b_id) = _two_pages(p, procs, errors)
        # B holds a connection to nodes[0] (it joined there): B names it in its answer, and
        # that plain server node relays for B, a browser-class peer.
        assert b.evaluate("() => window.yz.relays()") == [nodes[0]["address"]]
        # B gathers no candidate at all: ICE cannot succeed, A's dial times out.
        b.evaluate(ON_PEER)
        b.evaluate("() => { window.yz.rtcConfig = { iceServers: [], iceTransportPolicy: 'relay' }; }")
        got = a.evaluate("""async (id) => {
            const p = await window.yz.connectPeer(id, { timeoutMs: 2000 });
            return { path: p.path, id: p.info.id, via: p.info.via }; }""", b_id)
        assert got == {"path": "relay", "id": b_id, "via": nodes[0]["address"]}, got
        failures = a.evaluate("() => window.yz.failures")
        assert [(f["code"], f["peer"], f["manager"]) for f in failures] == [
            ("WEBRTC_FAILED", b_id, "webrtc")]
        assert "2000 ms" in failures[0]["message"], failures
        wait_for("B registered A", lambda: b.evaluate(ACCEPTED, a_id), 5, every=0.1)
        assert b.evaluate("(id) => window.yz.peers.get(id).path", a_id) == "relay"
        # The end-to-end hello ran through the bridge; DHT messages go both ways.
        assert a.evaluate(REQUEST, [b_id, {"t": "ping"}])["t"] == "pong"
        answer = b.evaluate(REQUEST, [a_id, {"t": "find_node", "target": nodes[2]["id"]}])
        assert answer["t"] == "nodes" and nodes[1]["id"] in {n["id"] for n in answer["nodes"]}, answer
        for page in (a, b):
            c = page.evaluate("() => window.yz.counters.relay")
            assert c["in"]["types"]["hello"] == 1 and c["out"]["types"]["auth"] == 1, c
            assert c["in"]["messages"] >= 3 and c["out"]["messages"] >= 3, c
        assert a.evaluate("() => window.yz.counters.relay.out.types.relay") == 1
        assert a.evaluate("() => window.yz.counters.relay.in.types.relay_ready") == 1
        assert b.evaluate("() => window.yz.counters.relay.out.types.relay_accept") == 1
        assert b.evaluate("() => window.yz.counters.ws.in.types.relay_open") == 1
        # A peer nobody holds: the bootstrap server refuses the offer at once, every relay
        # refuses too, and connectPeer says so; then the same with the refusal's other shape.
        for dial in ("""async (id) => { try { await window.yz.connectPeer(id); return "connected"; }
                        catch (e) { return e.code; } }""", UNREACHABLE_OTHER_SHAPE):
            assert a.evaluate(dial, "ab" * 32) == "PEER_UNREACHABLE"  # refused, not timed out
            last = a.evaluate("() => window.yz.failures.at(-1)")
            assert last["code"] == "WEBRTC_FAILED" and last["peer"] == "ab" * 32, last
            assert "PEER_UNREACHABLE" in last["message"], last
        assert "shimmed" in last["message"], last
        assert len(a.evaluate("() => window.yz.failures")) == 3
        browser.close()
    assert not errors, errors


@pytest.mark.req("B4.1", "B4.2", "B6.3")
def test_a_browser_and_the_python_light_client_talk_over_webrtc_both_ways(procs):
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with _inside(procs), sync_api.sync_playwright() as p:
        boot, nodes = _network(procs)
        light = subprocess.Popen([*YZ, "client", "--bootstrap", boot, "--duration", "60", "serve"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.procs.append(light)  # stopped with the others
        ready = json_line(light, 15)
        assert ready["event"] == "ready" and ready["webrtc"]["available"], ready
        py_id = ready["id"]
        browser = launch(p, WEBRTC_ARGS)
        page = _page(browser, nodes[1], boot, errors)
        page_id = page.evaluate("() => window.yz.idHex")
        # Browser -> Python: an aiortc DataChannel; the Python engine answers on it.
        got = page.evaluate("""async (id) => { const p = await window.yz.connectPeer(id);
            return { path: p.path, id: p.info.id, role: p.info.role }; }""", py_id)
        assert got == {"path": "webrtc", "id": py_id, "role": "browser"}, got
        assert json_line(light, 5) == {"event": "peer", "id": page_id, "transport": "webrtc"}
        assert page.evaluate(REQUEST, [py_id, {"t": "ping"}])["t"] == "pong"
        answer = page.evaluate(REQUEST, [py_id, {"t": "find_node", "target": nodes[2]["id"]}])
        assert answer["t"] == "nodes", answer
        assert [n["id"] for n in answer["nodes"]] == _oracle([n["id"] for n in nodes], nodes[2]["id"])
        c = page.evaluate("() => window.yz.counters.webrtc")
        assert c["in"]["types"]["pong"] == 1 and c["in"]["types"]["nodes"] == 1, c
        page.evaluate("(id) => window.yz.peers.get(id).close()", py_id)
        # Python -> browser: `yz client connect` offers through the bootstrap server.
        page.evaluate(ON_PEER)
        out = subprocess.run([*YZ, "client", "--bootstrap", boot, "--json", "connect", page_id],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["transport"] == "webrtc" and result["webrtc_failure"] is None, result
        print(f"yz client connect: {result['seconds'] * 1000:.0f} ms")
        wait_for("the page accepted the light client", lambda: page.evaluate(
            "() => window.accepted.length === 1 && window.accepted[0].path"), 5, every=0.1)
        browser.close()
    assert not errors, errors
