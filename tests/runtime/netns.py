"""A network namespace of the test's own, for WebRTC: ICE ignores loopback.

aioice and Chromium gather host candidates on every interface but loopback,
so a WebRTC test on the machine's own namespace would send its ICE checks
over the machine's real interface. :func:`inside_netns` creates a namespace
with loopback up and a veth pair whose *both* ends are inside it (addresses
from 198.18.0.0/15, the benchmarking range, and the default route through
it: Chromium gathers candidates only on the default route's interface), moves the calling thread into
it, and on exit moves the thread back and deletes the namespace. Whatever
the thread creates meanwhile — sockets, in-process nodes, `yz` processes,
Playwright's driver and the Chromium it starts — lives inside, and no packet
can leave it.

Linux only, and root: ``.ci/run`` runs as root and installs iproute2, so
there a missing piece fails the test instead of skipping it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["ADDRESSES", "inside_netns", "require"]

CLONE_NEWNET = 0x40000000
#: The two veth ends' addresses inside every namespace this makes.
ADDRESSES = ("198.18.0.1", "198.18.0.2")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def require() -> None:
    """Fail in CI, skip elsewhere, when this machine cannot make namespaces."""
    missing = ("root" if os.geteuid() != 0 else "iproute2" if shutil.which("ip") is None else None)
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"network namespaces need {missing}")


@contextmanager
def inside_netns(tag: str = "rtc") -> Iterator[str]:
    """Run the calling thread inside a fresh namespace (loopback + a veth pair); yields its name."""
    require()
    name = f"yz{tag}{os.getpid()}"
    ip = ["ip", "-n", name]
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)  # a leftover
    subprocess.run(["ip", "netns", "add", name], check=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        subprocess.run([*ip, "link", "add", "yza", "type", "veth", "peer", "name", "yzb"], check=True)
        for dev, addr in zip(("yza", "yzb"), ADDRESSES, strict=True):
            subprocess.run([*ip, "addr", "add", f"{addr}/24", "dev", dev], check=True)
            subprocess.run([*ip, "link", "set", dev, "up"], check=True)
        # Chromium offers only the interface of the default route to a page
        # without media permission; this one ends inside the namespace too.
        subprocess.run([*ip, "route", "add", "default", "via", ADDRESSES[1], "dev", "yza"], check=True)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield name
        finally:
            _setns(home)
    finally:
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], check=False)
