"""The Python light client: ``yz client --bootstrap URL`` joins as a browser-class peer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .procs import get_json, wait_for

YZ = [sys.executable, "-m", "yzcore.cli"]


def client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*YZ, "client", *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.req("B2.5")
def test_the_light_client_joins_through_introductions_and_acts(procs):
    _, boot = procs.start("boot", "bootstrap", "--listen", "127.0.0.1:0")
    url = boot["address"]
    infos = [procs.node(f"n{i}", "--bootstrap", url)[1] for i in range(5)]
    wait_for("5 nodes known", lambda: (s := get_json(url, "/status")) and s["network"]["nodes"] == 5, 30)
    put = client("--bootstrap", url, "put", "light", "value from the light client")
    assert put.returncode == 0, put.stderr
    got = client("--bootstrap", url, "get", "light")
    assert got.returncode == 0 and got.stdout.strip() == "value from the light client", got
    target = infos[2]["id"]
    found = client("--bootstrap", url, "find-node", target, "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["nodes"][0]["id"] == target
    # The bootstrap server introduced nodes; it never served DHT requests itself.
    status = get_json(url, "/status")
    assert status["introductions"] >= 3
    bad = client("--bootstrap", url, "put", "only-a-key")
    assert bad.returncode == 2 and "[INVALID_ARGUMENT]" in bad.stderr
