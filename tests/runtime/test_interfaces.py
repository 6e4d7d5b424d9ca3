"""A6.5: a node listening on every interface advertises one of its host's addresses, and
another one when that address leaves the host: its peers learn the new one by themselves.

Inside a network namespace the test makes (:mod:`tests.runtime.netns`): the renumbered
interface is the namespace's own, and no packet leaves it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from tests.runtime.netns import ADDRESSES, inside_netns
from tests.runtime.procs import wait_for
from yzcore.interfaces import host_addresses, is_wildcard, primary

YZ = [sys.executable, "-m", "yzcore.cli"]
SPARE = "198.18.0.77"  # the address the renumbered interface gets


def yz_json(*args: str) -> dict | None:
    out = subprocess.run([*YZ, *args, "--json"], capture_output=True, text=True, timeout=30,
                         check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_wildcards_and_the_address_chosen():
    assert is_wildcard("0.0.0.0") and is_wildcard("::") and is_wildcard("[::]") and is_wildcard("")
    assert not is_wildcard("127.0.0.1") and not is_wildcard("localhost")
    assert primary(["127.0.0.1", "169.254.1.1", "10.1.2.3", "10.9.9.9"]) == "10.1.2.3"
    assert primary(["127.0.0.1", "fe80::1", "fd00::2"]) == "127.0.0.1"
    assert primary(["::1", "fe80::1", "fd00::2"], family=10) == "fd00::2"  # AF_INET6
    assert primary([]) is None
    assert "127.0.0.1" in host_addresses()


@pytest.mark.req("A6.5")
def test_a_node_follows_its_host_address_and_its_peers_learn_the_new_one(procs):
    with inside_netns("ifc") as ns:
        _, x = procs.start("x", "node", "--listen", "0.0.0.0:0", "--data-dir",
                           str(procs.tmp / "x"), "--start-jitter", "0")
        old = urlsplit(x["address"])
        assert old.hostname in ADDRESSES, x  # one of the host's addresses, not 0.0.0.0
        local = f"ws://127.0.0.1:{old.port}/dht"  # X listens on every interface
        _, y = procs.node("y", "--peer", x["address"])
        found, _ = wait_for("Y knows X", lambda: (
            (f := yz_json("find-node", x["id"], "--via", y["address"]))
            and f["nodes"] and f["nodes"][0]["id"] == x["id"] and f), 30)
        assert found["nodes"][0]["address"] == x["address"]
        # Renumber the interface that holds X's address.
        dev = "yza" if old.hostname == ADDRESSES[0] else "yzb"
        for change in (["del", f"{old.hostname}/24"], ["add", f"{SPARE}/24"]):
            subprocess.run(["ip", "-n", ns, "addr", *change, "dev", dev], check=True)
        now = host_addresses()
        status, took = wait_for("X advertises another address", lambda: (
            (s := yz_json("status", local)) and s["address"] != x["address"] and s), 20)
        new = urlsplit(status["address"])
        assert new.hostname in now and new.hostname != old.hostname and new.port == old.port
        print(f"X moved from {old.hostname} to {new.hostname} in {took:.1f} s")
        # Y learns it from X's fresh hello; a lookup through Y hands it on.
        _, took = wait_for("Y hands on X's new address", lambda: (
            (f := yz_json("find-node", x["id"], "--via", y["address"]))
            and f["nodes"] and f["nodes"][0]["address"] == status["address"]), 30)
        print(f"Y knew it {took:.1f} s later")
        assert yz_json("status", status["address"])["id"] == x["id"]  # and X answers there
        assert "ADDRESS_CHANGED" in procs.log("x")
