"""What a node keeps: its data directory (one process at a time), the peer cache on
disk (A7.3), with real nodes on 127.0.0.1, and the bridges it learns (A5.5)."""

from __future__ import annotations

import os

import anyio
import pytest

from yzcore.runtime import Node, peercache
from yzcore.runtime.http import health

pytestmark = pytest.mark.anyio


async def test_one_data_dir_runs_one_node_at_a_time(tmp_path):
    # Two processes on one data dir were one node twice: its peers kept one of the
    # two connections, and the other node sat unconnected, reporting healthy.
    from yzcore.exceptions import DataDirInUse

    async with anyio.create_task_group() as tg:
        first = Node(data_dir=str(tmp_path), seed=86)
        await first.start(tg)
        second = Node(data_dir=str(tmp_path), seed=87)
        with pytest.raises(DataDirInUse) as refused:
            await second.start(tg)
        assert refused.value.code == "DATA_DIR_IN_USE" and str(os.getpid()) in str(refused.value)
        await first.aclose()
        again = Node(data_dir=str(tmp_path), seed=88)  # free as soon as aclose returns
        await again.start(tg)
        assert again.id == first.id
        await again.aclose()


@pytest.mark.req("A7.3", "A1.3", "A4.3")
async def test_a_node_that_knows_nobody_for_a_while_keeps_its_cached_peers(tmp_path):
    # Each save replaced the cache with what the node knew at that moment: one
    # that ran 10 s with its peers down, or was stopped during its start jitter,
    # wrote an empty cache, and never came back through it.
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    async with anyio.create_task_group() as tg:
        a = Node(data_dir=a_dir, seed=81)
        await a.start(tg)
        b = Node(data_dir=b_dir, peers=[a.address], seed=82)
        await b.start(tg)
        await b.joined()
        with anyio.fail_after(10):
            while b.id not in a.conns:
                await anyio.sleep(0.05)
        a._cache_peers()
        assert [p.id for p in peercache.load(a_dir)] == [b.id]
        await b.aclose()
        with anyio.fail_after(10):
            while a.conns:
                await anyio.sleep(0.05)
        a._cache_peers()  # knows nobody now: B stays, it may come back
        await a.aclose()
        again = Node(data_dir=a_dir, seed=83, start_jitter=30.0)  # stopped while it waits
        await again.start(tg)
        again._cache_peers()
        await again.aclose()
        assert [p.id for p in peercache.load(a_dir)] == [b.id]
        fresh = Node(data_dir=a_dir, seed=84)  # and a start dials it from the cache
        await fresh.start(tg)
        with anyio.fail_after(10):
            while not any(e["peer"] == b.id.hex() for e in fresh.errors):
                await anyio.sleep(0.05)
        # Alone, but not a first node: it is not healthy (it called itself healthy, a
        # network of one by its empty routing table), and says why.
        verdict = health(fresh)
        assert not verdict["healthy"] and verdict["needed"] == 1
        assert "0 live connections, needs 1" in verdict["reasons"]
        await fresh.aclose()
        first = Node(seed=89)  # a first node, alone, is
        await first.start(tg)
        await first.joined()
        assert health(first)["healthy"], health(first)
        await first.aclose()


@pytest.mark.req("A5.5")
def test_a_bridge_that_moved_is_followed_to_its_new_address_and_few_are_kept():
    # A bridge restarted elsewhere with its key (a rescheduled container) kept its
    # old address here: a node behind NAT dialled the dead one for good.
    from yzcore.runtime.recovery import MAX_BRIDGES
    from yzcore.wire import NodeInfo

    node = Node(seed=85)
    bridge = os.urandom(32)
    node._learn_bridges([NodeInfo(bridge, "ws://10.0.0.1:8090/dht", "bridge")])
    node._learn_bridges([NodeInfo(bridge, "ws://10.0.0.2:8090/dht", "bridge")])
    assert [(b.id, b.addr) for b in node._bridges] == [(bridge, "ws://10.0.0.2:8090/dht")]
    node._learn_bridges([NodeInfo(bridge, "ws://10.0.0.1:8090/dht", "bridge")], fresh=False)
    assert node._bridges[0].addr == "ws://10.0.0.2:8090/dht"  # the cache is older news
    node._learn_bridges([NodeInfo(os.urandom(32), f"ws://10.0.1.{i}:8090/dht", "bridge")
                         for i in range(2 * MAX_BRIDGES)])
    assert len(node._bridges) == MAX_BRIDGES and node._bridges[-1].addr.startswith("ws://10.0.1.31")
    node._learn_bridges([NodeInfo(os.urandom(32), "ws://10.0.2.1:8090/dht", "bridge")], fresh=False)
    assert all(b.addr.startswith("ws://10.0.1.") for b in node._bridges)  # no room: not learnt


def test_one_cache_entry_an_address_the_one_known_now(tmp_path):
    # A node restarted without its key at the same address is a new id there: the
    # cache kept each old id too, one failed dial each at every recovery.
    from yzcore.wire import NodeInfo

    now, gone = os.urandom(32), os.urandom(32)
    peercache.save(str(tmp_path), [NodeInfo(now, "ws://node-3:8080/dht"),
                                   NodeInfo(gone, "ws://node-3:8080/dht")])
    assert [p.id for p in peercache.load(str(tmp_path))] == [now]
    assert sorted(os.listdir(tmp_path)) == ["peers.json"]  # no temporary file left
