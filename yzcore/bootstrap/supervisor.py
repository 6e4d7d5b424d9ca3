"""Bridge processes run by the bootstrap server, restarted when they die (A5.4).

Each slot runs ``yz bridge`` as a child process. When it exits, the slot
starts it again after a backoff that grows with quick successive failures
(0.25 s doubling to 10 s, full jitter) and resets once a bridge has run for
a minute, so a crashing bridge costs little and a killed one is back within
seconds.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import anyio

from yzcore.supervise import Child, yz_command

__all__ = ["BridgeSupervisor"]

log = logging.getLogger("yzcore.bootstrap")

STABLE_AFTER = 60.0  # seconds a bridge must run before its failures are forgiven


class BridgeSupervisor:
    """Keeps ``count`` bridge processes running.

    Args:
        count: How many bridges.
        secret_file: The shared secret's file, passed to every bridge.
        extra_args: More ``yz bridge`` arguments (e.g. ``--log-json``).
        seed: Seeds the backoff jitter.
        data_dir: Each bridge keeps its key in a subdirectory, so a restarted
            bridge keeps its id; None: a temporary directory.
    """

    def __init__(self, count: int, secret_file: str | None, extra_args: Sequence[str] = (),
                 seed: int = 0, data_dir: str | None = None) -> None:
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="yz-bridges-")
        self.data_dir = data_dir or self._tmp.name  # type: ignore[union-attr]
        self.count = count
        self.secret_file = secret_file
        self.extra_args = list(extra_args)
        self.rng = random.Random(seed)
        self.children: list[Child] = []
        self.restarts = [0] * count
        self._stopping = False

    async def run(self, bootstrap_url: str) -> None:
        async with anyio.create_task_group() as tg:
            for slot in range(self.count):
                tg.start_soon(self._slot, slot, bootstrap_url)

    async def _slot(self, slot: int, bootstrap_url: str) -> None:
        argv = ["bridge", "--listen", "127.0.0.1:0", "--bootstrap", bootstrap_url,
                "--data-dir", os.path.join(self.data_dir, f"bridge-{slot + 1}"), *self.extra_args]
        if self.secret_file:
            argv += ["--bridge-secret-file", self.secret_file]
        child = Child(f"bridge-{slot + 1}", yz_command(*argv))
        self.children.append(child)
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            try:
                info = await child.start()
            except RuntimeError as exc:
                log.error("%s failed to start: %s", child.name, exc, extra={"code": "BRIDGE_DOWN"})
            else:
                log.info("%s running: pid %s at %s", child.name, child.pid, info.get("address"))
                async with anyio.create_task_group() as tg:
                    tg.start_soon(child.drain)
                    code = await child.wait()
                if self._stopping:
                    return
                log.warning("%s (pid %s) exited with %s; restarting", child.name, child.pid, code,
                            extra={"code": "BRIDGE_DOWN", "exit_code": code})
            failures = 0 if time.monotonic() - started > STABLE_AFTER else failures + 1
            self.restarts[slot] += 1
            await anyio.sleep(self.rng.uniform(0.0, min(10.0, 0.25 * 2 ** (failures - 1))))

    def status(self) -> dict[str, dict[str, Any]]:
        """Per advertised address: the process behind it."""
        out = {}
        for slot, child in enumerate(self.children):
            address = child.info.get("address")
            if address:
                out[address] = {"name": child.name, "pid": child.pid, "restarts": self.restarts[slot],
                                "running": child.process is not None
                                and child.process.returncode is None}
        return out

    async def stop(self) -> None:
        self._stopping = True
        async with anyio.create_task_group() as tg:
            for child in self.children:
                tg.start_soon(child.stop)
        if self._tmp is not None:
            self._tmp.cleanup()
