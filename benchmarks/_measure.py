"""Measurement helpers of peer_compare: timing, bounded concurrency, memory, logs."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import random
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from _oracle import percentile

SIDES = ("kademlia", "yzcore")
MEMORY_METHOD = "VmRSS from /proc/self/status (after gc.collect + malloc_trim at the baseline)"



def other(rng: random.Random, n: int, not_this: int) -> int:
    if n < 2:
        return not_this
    pick = rng.randrange(n - 1)
    return pick + 1 if pick >= not_this else pick


# -- measuring helpers ----------------------------------------------------------


_status_fd: int | None = None


def rss_kib() -> int:
    """This process's resident memory. The file stays open from the first call: a
    side that used every descriptor (EMFILE) must not fail the measurement."""
    global _status_fd
    if _status_fd is None:
        _status_fd = os.open("/proc/self/status", os.O_RDONLY)
    status = os.pread(_status_fd, 1 << 16, 0).decode("ascii", "replace")
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def trim_heap() -> None:
    """Return freed memory to the OS, so the baseline is not inflated by a past side."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def raise_nofile(want: int = 1 << 20) -> tuple[int, int]:
    """Raise the open-file limit: to ``want`` where allowed (root may raise the hard
    limit up to fs.nr_open), else to the hard limit. 1,000 yzcore nodes in one
    process hold both ends of every connection: over 20,000 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as fh:
            want = min(want, int(fh.read()))
    except (OSError, ValueError):
        pass
    for limit in ((want, want), (hard, hard)):
        if soft >= limit[0]:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass
class Op:
    seconds: float
    value: Any = None
    timed_out: bool = False
    error: str | None = None

    @property
    def done(self) -> bool:
        return not self.timed_out and self.error is None


async def timed(fn: Callable[[], Awaitable[Any]], timeout: float) -> Op:
    start = time.perf_counter()
    value, error = None, None
    with anyio.move_on_after(timeout) as scope:
        try:
            value = await fn()
        except Exception as exc:  # noqa: BLE001 - an operation's failure is a figure
            error = f"{type(exc).__name__}: {exc}"
    return Op(time.perf_counter() - start, value, scope.cancelled_caught, error)


async def bounded(jobs: Sequence[Callable[[], Awaitable[Op]]], limit: int) -> list[Op | None]:
    """Run ``jobs`` at most ``limit`` at a time; results in job order (None if cut short)."""
    results: list[Op | None] = [None] * len(jobs)
    limiter = anyio.CapacityLimiter(max(1, limit))

    async def one(i: int) -> None:
        async with limiter:
            results[i] = await jobs[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(jobs)):
            tg.start_soon(one, i)
    return results


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def latency_stats(ops: Sequence[Op], *qs: int) -> dict[str, float | None]:
    lat = [o.seconds for o in ops]
    return {f"p{q}_ms": ms(percentile(lat, q)) for q in qs}


def first_errors(ops: Sequence[Op | None], limit: int = 3) -> list[str]:
    seen = Counter(o.error for o in ops if o is not None and o.error)
    return [f"{e} (x{c})" for e, c in seen.most_common(limit)]


class Progress:
    def __init__(self, side: str, quiet: bool) -> None:
        self.side, self.quiet, self.t0 = side, quiet, time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:7.1f}s {self.side}] {msg}",
                  file=sys.stderr, flush=True)


async def _await(aw: Awaitable[Any]) -> None:
    await aw


class LogCounter(logging.Handler):
    """Counts the warnings the implementations log instead of printing thousands of them."""

    LOGGERS = ("kademlia", "rpcudp", "yzcore")

    def __init__(self, echo: bool) -> None:
        super().__init__(logging.WARNING)
        self.echo = echo
        self.counts: Counter[str] = Counter()

    def install(self) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            logger.addHandler(self)
            logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            msg = str(record.msg)
        code = getattr(record, "code", None)
        shape = re.sub(r"\d+", "N", re.sub(r"b'[^']*'", "ID", msg))[:90]
        self.counts[f"{record.name} {code}: {shape}" if code else f"{record.name}: {shape}"] += 1
        if self.echo:
            print(f"  log {record.levelname} {record.name}: {msg}", file=sys.stderr)

    def take(self) -> dict[str, Any]:
        out = {"total": sum(self.counts.values()), "top": dict(self.counts.most_common(6))}
        self.counts.clear()
        return out


# -- one implementation ------------------------------------------------------------
