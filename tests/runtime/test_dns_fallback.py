"""A6.4: when a name no longer resolves, connect to the address it resolved to before."""

from __future__ import annotations

import json

import anyio
import pytest

from yzcore.exceptions import NameNotResolved
from yzcore.transport import KNOWN_ADDRESSES, transport_for

from .procs import get_json, wait_for

NAME = "yz-bootstrap.invalid"  # .invalid never resolves (RFC 6761)


@pytest.mark.anyio
@pytest.mark.req("A6.4")
async def test_the_ws_transport_remembers_addresses_and_falls_back_to_them():
    listener = await transport_for("ws://127.0.0.1:0/dht").listen("ws://127.0.0.1:0/dht")
    got = []

    async def accept(conn):
        got.append(conn)
        await conn.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, accept)
        port = listener.address.rsplit(":", 1)[1].split("/")[0]
        conn = await transport_for("ws://x/dht").connect(f"ws://localhost:{port}/dht", timeout=5)
        await conn.close()
        assert KNOWN_ADDRESSES.lookup("localhost") in ("127.0.0.1", "::1")  # recorded on success
        with pytest.raises(NameNotResolved) as err:  # nothing known: a clear DNS_FAILED
            await transport_for("ws://x/dht").connect(f"ws://{NAME}:{port}/dht", timeout=5)
        assert err.value.code == "DNS_FAILED"
        KNOWN_ADDRESSES.remember(NAME, "127.0.0.1")  # as if it had resolved before
        try:
            conn = await transport_for("ws://x/dht").connect(f"ws://{NAME}:{port}/dht", timeout=5)
            await conn.close()
        finally:
            KNOWN_ADDRESSES.forget(NAME)
            KNOWN_ADDRESSES.forget("localhost")  # the process-wide map: leave it as found
        assert len(got) == 2  # localhost, then the name by its last known address
        await listener.aclose()
        tg.cancel_scope.cancel()


@pytest.mark.req("A6.4")
def test_a_restarted_node_reaches_its_bootstrap_server_by_the_address_in_its_cache(procs, tmp_path):
    _, boot = procs.start("boot", "bootstrap", "--listen", "127.0.0.1:0")
    port = boot["address"].rsplit(":", 1)[1].split("/")[0]
    data = tmp_path / "n1"
    data.mkdir()
    # What the node learnt in an earlier life, when the name still resolved.
    (data / "peers.json").write_text(json.dumps({"saved_at": 0, "peers": [],
                                                 "addresses": {NAME: "127.0.0.1"}}))
    procs.start("n1", "node", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--start-jitter", "0",
                "--heartbeat-interval", "1", "--bootstrap", f"ws://{NAME}:{port}/dht")
    wait_for("the node heard through the fallback", lambda: (s := get_json(boot["address"], "/status"))
             and s["network"]["nodes"] == 1, 20)
    assert '"code": "DNS_FAILED"' in procs.log("n1") and "last known address" in procs.log("n1")
