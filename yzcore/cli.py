"""The ``yz`` command line.

``yz node`` runs a server node; ``yz find-node``, ``yz put`` and ``yz get``
join a network as a browser-class peer (no listener) through ``--via`` and
act; ``yz status`` reads a node's ``/status``; ``yz version`` says which core
runs. Every failure exits non-zero with its error code and what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import anyio

import yzcore
from yzcore.exceptions import YzError
from yzcore.ids import id_from_hex, key_for

__all__ = ["main"]

log = logging.getLogger("yzcore.cli")

_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and every structured extra."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in _STD_ATTRS})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "log_json", False):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(args, "log_level", "WARNING").upper(), handlers=[handler])


def _ws_url(listen: str) -> str:
    return listen if "://" in listen else f"ws://{listen}/dht"


# -- commands ---------------------------------------------------------------------


def _version(_: argparse.Namespace) -> int:
    impl = "compiled (Cython)" if yzcore.USE_EXTENSIONS else "pure-Python twins"
    print(f"yzcore {yzcore.__version__}")
    print(f"core: {impl}")
    print(f"python: {platform.python_implementation()} {platform.python_version()}")
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _node(args: argparse.Namespace) -> int:
    from yzcore.runtime import Node

    async def run() -> None:
        node = Node(listen=_ws_url(args.listen), advertise=args.advertise, peers=args.peer,
                    data_dir=args.data_dir, probe_interval=args.probe_interval)
        async with anyio.create_task_group() as tg:
            await node.start(tg)
            print(json.dumps({"event": "listening", "id": node.id.hex(), "address": node.address}),
                  flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            await node.aclose()

    anyio.run(run)
    return 0


def _client(args: argparse.Namespace, act: Any) -> int:
    """Join through --via as a browser-class peer, do one thing, leave."""
    from yzcore.runtime import Node

    async def run() -> int:
        node = Node(listen=None, peers=[args.via], role="browser")
        async with anyio.create_task_group() as tg:
            await node.start(tg)
            try:
                with anyio.fail_after(args.timeout):
                    await node.joined()
                    if not node.conns:
                        print(f"error [PEER_UNREACHABLE] could not join through {args.via}; check "
                              "the URL (ws://HOST:PORT/dht) and that the node runs (`yz status URL`).",
                              file=sys.stderr)
                        return 1
                    return int(await act(node))
            finally:
                await node.aclose()

    return anyio.run(run)


def _find_node(args: argparse.Namespace) -> int:
    target = id_from_hex(args.id)

    async def act(node: Any) -> int:
        started = time.perf_counter()
        result = await node.find_node(target)
        took = time.perf_counter() - started
        if args.json:
            print(json.dumps({"target": args.id, "seconds": round(took, 4), "nodes": [
                {"id": n.id.hex(), "address": n.addr, "role": n.role} for n in result.nodes]}))
        else:
            print(f"{len(result.nodes)} closest to {args.id[:16]}... in {took * 1000:.0f} ms")
            for n in result.nodes:
                print(f"  {n.id.hex()}  {n.addr}")
        return 0

    return _client(args, act)


def _put(args: argparse.Namespace) -> int:
    async def act(node: Any) -> int:
        result = await node.put(key_for(args.key), args.value)
        print(json.dumps({"key": args.key, "stored": result.stored}) if args.json
              else f"stored {args.key!r} on {result.stored} nodes")
        return 0 if result.stored else 1

    return _client(args, act)


def _get(args: argparse.Namespace) -> int:
    async def act(node: Any) -> int:
        value = await node.get(key_for(args.key))
        if value is None:
            print(f"error [NOT_FOUND] no value under {args.key!r}; check the key, or put it first.",
                  file=sys.stderr)
            return 1
        print(json.dumps({"key": args.key, "value": value}) if args.json else value)
        return 0

    return _client(args, act)


def _status(args: argparse.Namespace) -> int:
    base = args.url.replace("ws://", "http://").replace("wss://", "https://").removesuffix("/dht")
    try:
        with urllib.request.urlopen(base.rstrip("/") + "/status", timeout=args.timeout) as resp:
            status = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"error [STATUS_UNAVAILABLE] {base}/status: {exc}; is a yzcore node listening there?",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    health = status["health"]
    rows = [("id", status["id"]), ("role", status["role"]), ("address", status["address"]),
            ("version", f"{status['version']} (protocol {status['protocol']})"),
            ("health", "healthy" if health["healthy"] else "UNHEALTHY: " + "; ".join(health["reasons"])),
            ("connections", ", ".join(f"{k} {v}" for k, v in status["connections"].items())),
            ("routing table", status["routing_table"]), ("values held", status["values"]),
            ("recent errors", len(status["recent_errors"]))]
    for name, value in rows:
        print(f"{name:>14}  {value}")
    for err in status["recent_errors"][-5:]:
        print(f"{'':>14}  [{err['code']}] {err['message']}")
    return 0 if health["healthy"] else 3


# -- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yz", description="yzcore: a Kademlia DHT network.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("--log-json", action="store_true", help="logs as one JSON object a line")
        p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
        return p

    command("version", _version, "print the version and which core implementation runs")
    p = command("node", _node, "run a server node")
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (or a ws:// URL) to listen on")
    p.add_argument("--advertise", help="the URL other nodes should dial (default: the listen URL)")
    p.add_argument("--peer", action="append", default=[], help="a node URL to join through (repeatable)")
    p.add_argument("--data-dir", help="keeps the node key, so a restarted node keeps its id")
    p.add_argument("--probe-interval", type=_positive, default=30.0, metavar="SECONDS",
                   help="seconds between health checks (default 30; raise it when many nodes "
                   "share one host)")
    for name, func, text in (("find-node", _find_node, "the k nodes closest to an id"),
                             ("put", _put, "store a value under a name"),
                             ("get", _get, "read the value stored under a name")):
        p = command(name, func, text)
        if name == "find-node":
            p.add_argument("id", help="64 hex digits")
        else:
            p.add_argument("key", help="the value's name (its key is sha256 of it)")
        if name == "put":
            p.add_argument("value")
        p.add_argument("--via", required=True, help="a node URL, e.g. ws://127.0.0.1:8080/dht")
        p.add_argument("--timeout", type=float, default=30.0)
        p.add_argument("--json", action="store_true")
    p = command("status", _status, "a node's health, connections and recent errors")
    p.add_argument("url", help="the node's URL (ws://HOST:PORT/dht or http://HOST:PORT)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    _setup_logging(args)
    try:
        return int(args.func(args))
    except YzError as exc:
        print(f"error {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
