"""A third-party transport plugin, pip-installed, is found through its entry point.

``tests/plugin_example`` is installed into the running virtual environment
(from a copy, so the source tree gets no build droppings), used, and
uninstalled when the session ends.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import orjson
import pytest

from yzcore import transport as registry
from yzcore.transport import Connection, available_schemes, get_transport, transport_for

EXAMPLE = Path(__file__).resolve().parent.parent / "plugin_example"
DIST = "yz-example-transport"


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    src = tmp_path_factory.mktemp("plugin") / "plugin_example"
    shutil.copytree(EXAMPLE, src)
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(src))
    importlib.invalidate_caches()  # let the import system see the new package
    try:
        yield "example"
    finally:
        registry.unregister("example")
        sys.modules.pop("yz_example_transport", None)
        pip("uninstall", "-y", DIST)
        importlib.invalidate_caches()


@pytest.mark.anyio
async def test_installed_plugin_is_found_and_carries_json_messages(example_plugin: str) -> None:
    assert importlib.metadata.version(DIST) == "0.1.0"
    assert example_plugin in available_schemes()
    t = get_transport(example_plugin)
    assert type(t).__module__ == "yz_example_transport"
    assert transport_for("example://anything") is t

    async def node(conn: Connection) -> None:
        """The listening end: answers a hello and pings, like a node would."""
        async for raw in conn:
            msg = orjson.loads(raw)
            if msg["t"] == "hello":
                reply = {"v": 1, "t": "hello", "rid": msg["rid"], "role": "node"}
            else:
                reply = {"v": 1, "t": "pong", "rid": msg["rid"], "seen": msg["n"]}
            await conn.send(orjson.dumps(reply))

    listener = await t.listen("example://node-a")
    assert listener.address == "example://node-a"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, node)
        dialer = transport_for(listener.address)
        async with await dialer.connect(listener.address, timeout=5) as conn:
            assert conn.transport == "example"
            await conn.send(orjson.dumps({"v": 1, "t": "hello", "rid": 1, "role": "node"}))
            assert orjson.loads(await conn.receive())["role"] == "node"
            for n in range(5):
                await conn.send(orjson.dumps({"v": 1, "t": "ping", "rid": 2 + n, "n": n}))
            replies = [orjson.loads(await conn.receive()) for _ in range(5)]
            assert [(r["t"], r["rid"], r["seen"]) for r in replies] == [
                ("pong", 2 + n, n) for n in range(5)
            ]
        tg.cancel_scope.cancel()
