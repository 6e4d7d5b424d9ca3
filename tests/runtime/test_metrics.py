"""Transfer metrics: counted per transport and type, fail-safe, and removable entirely."""

from __future__ import annotations

import random

import anyio
import pytest

from yzcore import wire
from yzcore.identity import Identity
from yzcore.ids import key_for
from yzcore.metrics import TransferMetrics, enabled, exposition
from yzcore.runtime import Node
from yzcore.runtime.peer import PeerConnection

from .procs import get_json, wait_for
from .test_node import http_get, next_reply, raw_peer, start_network


class Broken(TransferMetrics):
    """Every record raises, as a buggy or overloaded metrics backend would."""

    def _count(self, *args: object) -> None:
        raise RuntimeError("metrics backend down")


@pytest.mark.req("B5.1", "B5.3")
def test_a_hook_that_raises_is_counted_and_swallowed():
    m = Broken()
    m.sent("ws", "find_node", 80)  # does not raise
    m.received("ws", "nodes", 900)
    assert m.failures == 2 and not m.messages
    ok = TransferMetrics()
    ok.sent("ws", "find_node", 80)
    ok.sent("ws", "find_node", 82)
    ok.received("bridge", "nodes", 900)
    ok.error("ws", "RATE_LIMITED")
    assert ok.messages[("ws", "out", "find_node")] == 2 and ok.bytes[("ws", "out", "find_node")] == 162
    text = exposition([("yz_values", "values", {}, 3.0)], ok).decode()
    assert 'yz_messages_total{direction="out",transport="ws",type="find_node"} 2.0' in text
    assert 'yz_bytes_total{direction="in",transport="bridge",type="nodes"} 900.0' in text
    assert 'yz_errors_total{code="RATE_LIMITED",transport="ws"} 1.0' in text
    assert "yz_metrics_enabled 1.0" in text and "yz_values 3.0" in text


@pytest.mark.req("B8.1", "B5.4")
def test_yz_metrics_0_or_false_turns_them_off(monkeypatch):
    monkeypatch.setenv("YZ_METRICS", "0")
    assert not enabled() and enabled(True)
    monkeypatch.setenv("YZ_METRICS", "1")
    assert enabled() and not enabled(False)
    monkeypatch.delenv("YZ_METRICS")
    assert enabled()


@pytest.mark.anyio
@pytest.mark.req("B5.1", "B5.2", "B5.3", "B5.4")
async def test_a_broken_metrics_backend_never_breaks_a_message_path(monkeypatch):
    monkeypatch.setattr(TransferMetrics, "_count", Broken._count)
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 5, seed=21)
        rng = random.Random(2)
        for i in range(5):
            key = key_for(f"broken-metrics-{i}")
            put = await rng.choice(nodes).put(key, f"v{i}")
            assert put.stored >= 1
            got = await rng.choice(nodes).get(key)
            assert got == f"v{i}"
        result = await nodes[4].find_node(nodes[0].id)
        assert result.nodes[0].id == nodes[0].id
        # A frame that does not decode: answered with its code, counted, and
        # nothing else changes (B5.2: sizes are frame lengths, nothing re-serialised).
        ws = await raw_peer(nodes[0].address)
        await ws.send("{not json")
        reply = await next_reply(ws, wire.Error)
        assert reply.code == "MALFORMED_JSON"  # type: ignore[attr-defined]
        failures = sum(n.metrics.failures for n in nodes)
        assert failures > 20, failures  # every send and receive above failed to record
        status, body = await http_get(nodes[0].address.replace("ws://", "http://").replace("/dht", "/metrics"))
        assert status == 200 and "yz_metric_failures_total" in body["text"]
        await ws.close()
        for node in nodes:
            await node.aclose()


async def _workload(nodes: list[Node]) -> list[object]:
    """A fixed sequence of operations; what each returned."""
    rng = random.Random(5)
    out: list[object] = []
    for i in range(6):
        key = key_for(f"parity-{i}")
        await nodes[rng.randrange(len(nodes))].put(key, f"value-{i}")
    for i in range(6):
        got = await nodes[rng.randrange(len(nodes))].get(key_for(f"parity-{i}"))
        out.append(got)
    for _ in range(6):
        asker, target = nodes[rng.randrange(len(nodes))], rng.randbytes(32)
        out.append(sorted(n.id for n in (await asker.find_node(target)).nodes))
    return out


@pytest.mark.anyio
@pytest.mark.req("B5.5", "B8.1")
async def test_with_metrics_off_no_hook_exists_and_the_network_behaves_the_same(monkeypatch):
    results = {}
    for on in (True, False):
        monkeypatch.setenv("YZ_METRICS", "1" if on else "0")
        async with anyio.create_task_group() as tg:
            keys = [Identity.from_private_bytes(bytes([i + 1]) * 32) for i in range(30)]
            nodes = await start_network(tg, 30, seed=31, identities=keys)  # k = 20 of 29: lookups choose
            await anyio.sleep(0.5)
            results[on] = await _workload(nodes)
            if on:
                assert all(n.metrics is not None for n in nodes)
                assert sum(n.metrics.messages[("ws", "out", "find_node")] for n in nodes) > 0
            else:
                assert all(n.metrics is None for n in nodes)
                pcs: list[PeerConnection] = [pc for n in nodes for pc in n.conns.values()]
                assert pcs and all(pc.metrics is None for pc in pcs)  # not a no-op hook: none
                url = nodes[0].address.replace("ws://", "http://").replace("/dht", "/metrics")
                status, body = await http_get(url)
                assert status == 200 and "yz_metrics_enabled 0.0" in body["text"]
                assert "yz_messages_total" not in body["text"]
            for node in nodes:
                await node.aclose()
    # Every value, every lookup result the same, metrics on or off.
    assert results[True] == results[False]


@pytest.mark.req("B8.1")
def test_yz_node_no_metrics_and_the_environment_switch(procs, monkeypatch):
    for name, flag, env in (("flag", ["--no-metrics"], "1"), ("env", [], "0"), ("default", [], None)):
        if env is None:
            monkeypatch.delenv("YZ_METRICS", raising=False)
        else:
            monkeypatch.setenv("YZ_METRICS", env)  # the child inherits it
        _, info = procs.node(name, *flag)
        status, _ = wait_for("status", lambda info=info: get_json(info["address"], "/status"), 20)
        assert status["metrics"] is (name == "default"), (name, status["metrics"])


@pytest.mark.req("B5.4")
def test_the_bootstrap_server_exposes_its_gauges_through_prometheus_client(procs):
    import urllib.request

    from .procs import http_url

    _, info = procs.start("boot", "bootstrap", "--listen", "127.0.0.1:0")
    procs.node("n1", "--bootstrap", info["address"])
    with urllib.request.urlopen(http_url(info["address"]) + "/metrics", timeout=5) as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    assert "# TYPE yz_bootstrap_introductions_total counter" in text
    assert "# TYPE yz_bootstrap_nodes gauge" in text and "yz_metrics_enabled" not in text
