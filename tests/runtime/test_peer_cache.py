"""The peer cache on disk (A7.3), with real nodes on 127.0.0.1: what a node writes,
and that a node which knows nobody for a while keeps what it knew."""

from __future__ import annotations

import anyio
import pytest

from yzcore.runtime import Node, peercache

pytestmark = pytest.mark.anyio


@pytest.mark.req("A7.3", "A1.3")
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
        await fresh.aclose()
