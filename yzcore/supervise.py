"""Child processes of yzcore's own: started from the CLI, watched, stopped with no orphans.

Every child is a ``yz`` command started with ``--parent-watch``: it exits when
its standard input closes, which happens when this process exits for any
reason (even SIGKILL), so nothing outlives the parent. A child reports itself
with one JSON line on standard output (``{"event": "listening", ...}``).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import Process

__all__ = ["Child", "yz_command"]

log = logging.getLogger("yzcore.supervise")


def yz_command(*args: str) -> list[str]:
    """The argv that runs ``yz ARGS`` with this interpreter, watching its parent."""
    return [sys.executable, "-m", "yzcore.cli", *args, "--parent-watch"]


class Child:
    """One child process and what it reported.

    Args:
        name: For logs and tables, e.g. ``bridge-1``.
        argv: The command.
        stderr: Where its log goes (a file object), or None to share ours.
    """

    def __init__(self, name: str, argv: Sequence[str], stderr: Any = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.stderr = stderr
        self.process: Process | None = None
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self, timeout: float = 20.0) -> dict[str, Any]:
        """Start it and wait for its ``listening`` line; what it reported.

        Raises:
            RuntimeError: it exited or stayed silent for ``timeout`` seconds.
        """
        self.info = {}
        if self.process is not None:  # a restart: the old one's pipes go with it
            await self.process.aclose()
        self.process = await anyio.open_process(self.argv, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=self.stderr)
        assert self.process.stdout is not None
        buf = b""
        with anyio.move_on_after(timeout):
            async for chunk in self.process.stdout:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("event") == "listening":
                        self.info = event
                        return event
        with anyio.move_on_after(1.0):
            await self.process.wait()  # an early exit: collect its status for the message
        code = self.process.returncode
        await self.stop()
        raise RuntimeError(f"{self.name} ({' '.join(self.argv[3:6])} ...) "
                           + (f"exited with {code}" if code is not None else
                              f"did not report listening within {timeout:.0f} s"))

    async def drain(self) -> None:
        """Read (and drop) the rest of its standard output, so it never blocks writing."""
        if self.process is not None and self.process.stdout is not None:
            try:
                async for _ in self.process.stdout:
                    pass
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaped either way."""
        proc = self.process
        if proc is None:
            return
        with anyio.CancelScope(shield=True):
            if proc.returncode is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                with anyio.move_on_after(grace):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await proc.aclose()
