"""A real Chromium as a browser-class peer over WebSocket: /yz-browser.js against real nodes.

Debian's Chromium through Playwright's Python API (``executable_path``; never
``playwright install``). The page is the node's own ``/demo``, which imports
``/yz-browser.js`` from the node.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from .chromium import launch
from .procs import get_json, http_url, line_with, wait_for

YZ = [sys.executable, "-m", "yzcore.cli"]


def _oracle(ids: list[str], target: str, k: int = 20) -> list[str]:
    t = int(target, 16)
    return sorted(ids, key=lambda x: int(x, 16) ^ t)[:k]


@pytest.mark.req("B3.1", "B3.2", "B3.3", "B3.4")
def test_a_browser_joins_looks_up_puts_and_gets_over_websocket(procs):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, first = procs.node("n0")
    infos = [first] + [procs.node(f"n{i}", "--peer", first["address"])[1] for i in range(1, 8)]
    for info in infos:  # joined (each waits up to its 1 s start jitter): another node knows it
        wait_for(f"node {info['id'][:8]} connected", lambda u=info["address"]: [
            p for p in (get_json(u, "/status") or {}).get("peers", []) if p["role"] == "node"], 20)
    node_url = infos[3]["address"]
    with urllib.request.urlopen(http_url(node_url) + "/yz-browser.js", timeout=5) as resp:
        assert resp.headers["content-type"].startswith("text/javascript")
        assert resp.headers["access-control-allow-origin"] == "*"  # B3.4: importable from any page
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(http_url(node_url) + "/demo")
        page.wait_for_selector("body[data-joined=yes]", timeout=20000)
        # find_node: the exact k closest of the 8 nodes (all of them, nearest first)
        target = infos[5]["id"]
        found = page.evaluate("async (t) => (await window.yz.findNode(t)).map((n) => n.id)", target)
        assert found == _oracle([i["id"] for i in infos], target), found
        stored = page.evaluate("async () => await window.yz.put('from-the-browser', 'ü ✓ \"quoted\"')")
        assert stored >= 1
        assert page.evaluate("async () => await window.yz.get('from-the-browser')") == 'ü ✓ "quoted"'
        # One address answers for one id only, on a reused connection too.
        code = page.evaluate("""async ([url, id]) => { try { await window.yz.connect(url, id); return "ok"; }
                                catch (e) { return e.code; } }""", [infos[1]["address"], infos[2]["id"]])
        assert code == "ID_MISMATCH"
        # What no frame could carry is refused at once, as the Python side does: an
        # oversized value was sent, and each node closed the browser's connection (1009).
        refused = page.evaluate("""async () => { const out = [];
            for (const v of ["x".repeat(65279), "\\ud800 cut"]) {
              try { await window.yz.put("too-much", v); out.push("sent"); }
              catch (e) { out.push(e.code); } }
            return out; }""")
        assert refused == ["VALUE_TOO_LARGE", "INVALID_MESSAGE"], refused
        counters = page.evaluate("() => window.yz.counters.ws")
        my_id = page.evaluate("() => window.yz.idHex")
        assert counters["out"]["types"]["store"] == stored and counters["in"]["types"]["stored"] >= stored
        assert counters["out"]["messages"] > 10 and counters["in"]["bytes"] > 1000
        # The node holds a verified browser-class peer: the signed hello from WebCrypto checked out.
        peers = get_json(node_url, "/status")["peers"]  # type: ignore[index]
        assert {"id": my_id, "role": "browser", "transport": "ws"} in [
            {k: p[k] for k in ("id", "role", "transport")} for p in peers], peers
        # The connections its lookups opened to all 8 close once idle (5 s), as a
        # node's do, but 4 (its relays); they stayed open for as long as the page.
        open_ws = ("[...window.yz.peers.values()].filter((p) => p.path === 'ws' && p.isOpen())"
                   ".length")
        assert page.evaluate(f"() => {open_ws}") == 8
        page.wait_for_function(f"() => {open_ws} === 4", timeout=20000)
        assert page.evaluate("async (t) => (await window.yz.findNode(t)).length", target) == 8
        browser.close()
    assert not errors, errors
    # The value the browser stored, read by a Python client through another node (integrity, B3.2).
    out = subprocess.run([*YZ, "get", "from-the-browser", "--via", infos[0]["address"]],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == 'ü ✓ "quoted"', (out.stdout, out.stderr)


@pytest.mark.req("B7.5", "B3.1")
def test_a_browser_and_python_clients_share_a_pubsub_channel(procs):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, first = procs.node("n0")
    infos = [first] + [procs.node(f"n{i}", "--peer", first["address"])[1] for i in range(1, 6)]
    sub = subprocess.Popen([*YZ, "sub", "room", "--via", infos[1]["address"], "--count", "2",
                            "--json", "--timeout", "90"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line_with(sub.stderr, "subscribed to 'room' at 3 homes", 30)  # type: ignore[arg-type]
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(http_url(infos[3]["address"]) + "/demo")
            page.wait_for_selector("body[data-joined=yes]", timeout=20000)
            homes = page.evaluate("""async () => { window.got = [];
                window.sub = await window.yz.subscribe("room", (m) => window.got.push(m));
                return window.sub.homes(); }""")
            assert homes == 3
            out = subprocess.run([*YZ, "pub", "room", "from python", "--via",
                                  infos[4]["address"], "--json"],
                                 capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["homes"] == 3
            page.wait_for_function("window.got.length >= 1", timeout=10000)
            sent = page.evaluate("async () => await window.yz.publish('room', 'from the browser')")
            assert sent["homes"] == 3 and sent["reached"] >= 1
            page.wait_for_function("window.got.length >= 2", timeout=10000)
            page.wait_for_timeout(300)  # no copy follows
            got = page.evaluate("() => window.got.map((m) => [m.channel, m.data, m.sender])")
            my_id = page.evaluate("() => window.yz.idHex")
            assert [g[:2] for g in got] == [["room", "from python"], ["room", "from the browser"]]
            assert got[1][2] == my_id  # its own message, delivered once
            page.evaluate("() => window.sub.close()")
            browser.close()
        assert not errors, errors
        lines, err = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
    assert sub.returncode == 0, err
    received = [json.loads(line) for line in lines.splitlines()]
    assert [m["data"] for m in received] == ["from python", "from the browser"]
    assert received[1]["sender"] == my_id  # the home verified the browser's signed hello
