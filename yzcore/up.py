"""``yz up``: a whole local network on 127.0.0.1, one OS process per role.

A bootstrap server (which runs and supervises the bridges) and ``--nodes``
server nodes, each a ``yz`` child process with its own key, peer cache and
log file in the data directory. The terminal shows a live table of every
node's health and connections, read from the bootstrap server's ``/status``
(the same data the dashboard shows). Ctrl-C, SIGTERM or ``--duration``
stops every process; children also exit by themselves if this process dies
(see :mod:`yzcore.supervise`), so nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio

from yzcore.supervise import Child, yz_command
from yzcore.transport import http_base

__all__ = ["render", "run_up"]

HEARTBEAT = "2"  # seconds: the table is at most this stale


def render(status: dict[str, Any], names: dict[str, str], started: float) -> str:
    """The terminal table of a bootstrap server's ``/status``."""
    net = status["network"]
    bridges = status["bridges"]
    up_bridges = sum(1 for b in bridges if b["healthy"])
    conns = [n["connections"] for n in status["nodes"]] or [0]
    summary = (f"{net['healthy']}/{net['nodes']} healthy  ·  connections {min(conns)}–{max(conns)}"
               f"  ·  bridges {up_bridges}/{len(bridges)} healthy  ·  "
               f"{time.monotonic() - started:.0f} s since start")
    header = (f"{'node':<8} {'id':<12} {'address':<28} {'health':<9} {'conns':>5} {'table':>5} "
              f"{'find_node':>9} {'seen':>6}")
    lines = [summary, header]
    for n in status["nodes"]:
        health = {True: "healthy", False: "UNHEALTHY", None: "joining"}[n["healthy"]]
        probe = "-" if n["probe"] is None else f"{1000 * n['probe']:.0f} ms"
        lines.append(f"{names.get(n['address'], '?'):<8} {n['id'][:12]:<12} {n['address']:<28} "
                     f"{health:<9} {n['connections']:>5} {n['routing_table']:>5} {probe:>9} "
                     f"{n['last_seen_s']:>5.0f}s")
    for b in bridges:
        proc = f"pid {b['pid']}, {b.get('restarts', 0)} restarts" if b.get("pid") else "external"
        lines.append(f"{'bridge':<8} {b['id'][:12]:<12} {b['address']:<28} "
                     f"{'healthy' if b['healthy'] else 'DOWN':<9} ({proc})")
    return "\n".join(lines)


def _fetch(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def run_up(args: argparse.Namespace) -> int:
    keep = [args.data_dir is not None]  # (and once a start failed: its logs say why)
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="yz-up-"))
    root.mkdir(parents=True, exist_ok=True)
    logs = [open(root / name, "ab") for name in ("bootstrap.log", "nodes.log")]  # noqa: SIM115
    common = ["--log-json", "--log-level", "info"] if args.log_json else []
    boot = Child("bootstrap", yz_command(
        "bootstrap", "--listen", f"127.0.0.1:{args.port}", "--bridges", str(args.bridges),
        "--data-dir", str(root / "bootstrap"), "--bridge-heartbeat", HEARTBEAT, *common),
        stderr=logs[0])
    nodes: list[Child] = []  # made once the bootstrap server's address is known (--port 0)
    tty = sys.stdout.isatty()
    started = time.monotonic()

    async def stop_all() -> None:
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for child in nodes:
                    tg.start_soon(child.stop)
            await boot.stop()  # it stops its bridges first

    async def table(http: str) -> None:
        names = {c.info.get("address"): c.name for c in nodes}
        shown = None
        while True:
            status = await anyio.to_thread.run_sync(_fetch, f"{http}/status")
            if status is not None:
                text = render(status, names, started)
                summary = text.split("  ·  ")[:3]
                if tty:
                    print("\x1b[H\x1b[J" + f"dashboard: {http}/\n" + text, flush=True)
                elif summary != shown:  # a log, not a screen: print changes only
                    print(text, flush=True)
                shown = summary
            await anyio.sleep(1.0)

    async def up() -> int:
        try:
            await boot.start()
        except RuntimeError as exc:
            keep[0] = True
            print(f"error [LISTEN_FAILED] the bootstrap server did not start: {exc}; is port "
                  f"{args.port} free? (see {root / 'bootstrap.log'}, kept)", file=sys.stderr)
            return 1
        boot_url = boot.info.get("address") or f"ws://127.0.0.1:{args.port}/dht"
        http = http_base(boot_url)
        nodes.extend(Child(f"node-{i + 1}", yz_command(
            "node", "--listen", "127.0.0.1:0", "--bootstrap", boot_url,
            "--data-dir", str(root / f"node-{i + 1}"), "--heartbeat-interval", HEARTBEAT,
            "--start-jitter", "2", *common),  # one machine, started by us: a short spread will do
            stderr=logs[1]) for i in range(args.nodes))
        async with anyio.create_task_group() as tg:
            tg.start_soon(boot.drain)
            failed: list[str] = []

            async def start(child: Child) -> None:
                try:
                    await child.start()
                except RuntimeError as exc:
                    failed.append(str(exc))

            async with anyio.create_task_group() as starting:
                for child in nodes:
                    starting.start_soon(start, child)
            if failed:
                keep[0] = True
                for text in failed:
                    print(f"error [NODE_START_FAILED] {text}; see {root / 'nodes.log'} (kept)",
                          file=sys.stderr)
                tg.cancel_scope.cancel()  # (else the bootstrap server's drain holds the group)
                return 1
            for child in nodes:
                tg.start_soon(child.drain)
            print(f"yz up: bootstrap {boot_url}, {args.bridges} bridges, {args.nodes} nodes; "
                  f"logs in {root}", flush=True)
            print(f"dashboard: {http}/", flush=True)
            tg.start_soon(table, http)
            await anyio.sleep(args.duration or float("inf"))
            tg.cancel_scope.cancel()
        return 0

    async def main() -> int:
        from yzcore.cli import _until_stopped

        code = [0]
        try:
            async with anyio.create_task_group() as tg:
                async def stopped() -> None:  # listening from the start: a signal during
                    await _until_stopped(parent_watch=False)  # start-up stops it all too
                    tg.cancel_scope.cancel()

                async def run() -> None:
                    code[0] = await up()
                    tg.cancel_scope.cancel()

                tg.start_soon(stopped)
                tg.start_soon(run)
            return code[0]
        finally:
            await stop_all()
            stopped_ = sum(1 for c in [boot, *nodes]
                           if c.process is not None and c.process.returncode is not None)
            with contextlib.suppress(OSError):  # a closed terminal takes no more lines
                print(f"yz up: stopped {stopped_} processes (the bootstrap server stopped its "
                      "bridges)", flush=True)

    try:
        return anyio.run(main)
    finally:
        for f in logs:
            f.close()
        if not keep[0]:
            shutil.rmtree(root, ignore_errors=True)
