"""Real `yz` processes on loopback for the network tests: start, read, kill, clean up."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio

YZ = [sys.executable, "-m", "yzcore.cli"]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_url(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").removesuffix("/dht")


def get_json(ws_url: str, path: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(http_url(ws_url) + path, timeout=3) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:  # 503 from /healthz still carries the body
        return json.loads(exc.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def wait_for(what: str, check: Callable[[], T], timeout: float, every: float = 0.25) -> tuple[T, float]:
    """Poll ``check`` until it returns something truthy; (that, seconds it took)."""
    start = time.monotonic()
    while True:
        got = check()
        took = time.monotonic() - start
        if got:
            return got, took
        if took > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {got!r})")
        time.sleep(every)


async def until(what: str, check: Callable[[], object], timeout: float, every: float = 0.1) -> float:
    """The in-process twin of :func:`wait_for`: await until ``check()`` is truthy; seconds it took."""
    start = anyio.current_time()
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(every)
    took = anyio.current_time() - start
    print(f"{what}: {took:.2f} s")
    return took


def json_line(proc: subprocess.Popen[str], timeout: float) -> dict:
    """The next line ``proc`` prints, parsed as JSON, within ``timeout`` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no line from {proc.args} within {timeout} s")
    return json.loads(proc.stdout.readline())  # type: ignore[union-attr]


def line_with(stream: IO[str], text: str, timeout: float) -> str:
    """The first line ``stream`` prints that contains ``text``, within ``timeout`` seconds
    (other lines, such as log warnings, are skipped)."""
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], left)
        if not ready:
            break
        line = stream.readline()
        if not line:
            break
        if text in line:
            return line
        seen.append(line)
    raise AssertionError(f"no line with {text!r} within {timeout} s; got {seen!r}")


class Procs:
    """Every process a test starts; all of them are gone when the test ends."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.infos: list[dict] = []  # what each reported, in start order

    def start(self, name: str, *args: str, expect_listening: bool = True) -> tuple[subprocess.Popen[str], dict]:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen([*YZ, *args, "--log-json", "--log-level", "info", "--parent-watch"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        self.procs.append(proc)
        if not expect_listening:
            return proc, {}
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"{name} exited before listening: {self.log(name)[-2000:]}"
        self.infos.append(json.loads(line))
        return proc, self.infos[-1]

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def node(self, name: str, *args: str) -> tuple[subprocess.Popen[str], dict]:
        return self.start(name, "node", "--listen", "127.0.0.1:0", "--data-dir", str(self.tmp / name),
                          "--heartbeat-interval", "1", "--probe-interval", "5", "--start-jitter", "1",
                          *args)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdin:
                proc.stdin.close()
            if proc.stdout:
                proc.stdout.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
