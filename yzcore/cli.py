"""The ``yz`` command line.

``yz node`` runs a server node, ``yz bootstrap`` a bootstrap server, ``yz bridge`` a
bridge, and ``yz up`` a whole local network (see :mod:`yzcore.up`); ``yz find-node``,
``yz put`` and ``yz get`` join a network as a browser-class peer (no listener) through
``--via`` and act; ``yz status`` reads a node's ``/status``; ``yz version`` says which
core runs; ``yz diagnose``, ``yz health`` and ``yz config show`` are the operator's
(:mod:`yzcore.cli_ops`). Every failure exits non-zero with its error code and what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

import yzcore
from yzcore.cli_ops import (add_ops_commands, count, not_negative, positive, quiet_resource_errors,
                            raise_open_files, record_attempt, rollback_values)
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
    from yzcore.exceptions import TransportUnavailable
    from yzcore.transport import available_schemes, get_transport

    impl = "compiled (Cython)" if yzcore.USE_EXTENSIONS else "pure-Python twins"
    print(f"yzcore {yzcore.__version__}")
    print(f"core: {impl}")
    print(f"python: {platform.python_implementation()} {platform.python_version()}")
    print("transports:")  # each loaded: the TRANSPORT_UNAVAILABLE advice sends users here
    for scheme in available_schemes():
        try:
            kind = type(get_transport(scheme))
        except TransportUnavailable as exc:
            print(f"  {scheme + '://':<10} unavailable: {exc.args[0]}; {exc.advice}")
        else:
            print(f"  {scheme + '://':<10} {kind.__module__}:{kind.__name__}")
    return 0


async def _until_stopped(parent_watch: bool) -> None:
    """Return on SIGINT, SIGTERM or SIGHUP (the terminal closed; not under nohup), or when the
    parent process is gone (stdin closed)."""
    quiet_resource_errors()
    async with anyio.create_task_group() as tg:
        async def on_signal() -> None:
            stop = [signal.SIGINT, signal.SIGTERM]
            if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup means: run on
                stop.append(signal.SIGHUP)
            with anyio.open_signal_receiver(*stop) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

        async def on_orphaned() -> None:
            loop = asyncio.get_running_loop()
            gone = loop.create_future()

            class _Watch(asyncio.Protocol):
                def connection_lost(self, exc: Exception | None) -> None:
                    if not gone.done():
                        gone.set_result(None)

            transport, _ = await loop.connect_read_pipe(_Watch, sys.stdin)
            try:
                await gone
            finally:
                transport.close()
            tg.cancel_scope.cancel()

        tg.start_soon(on_signal)
        if parent_watch:
            tg.start_soon(on_orphaned)


def _announce(**fields: Any) -> None:
    """The one line a supervising process waits for, on stdout."""
    print(json.dumps({"event": "listening", "pid": os.getpid(), **fields}), flush=True)


def _run_node(node: Any, args: argparse.Namespace) -> int:
    async def run() -> None:
        async with anyio.create_task_group() as tg:
            await node.start(tg)
            _announce(id=node.id.hex(), role=node.role, address=node.address,
                      **record_attempt(node, args))
            async with anyio.create_task_group() as watch:
                async def fatal() -> None:  # the node stopped itself (e.g. a refused bridge)
                    while node.fatal is None:
                        await anyio.sleep(0.2)
                    watch.cancel_scope.cancel()

                watch.start_soon(fatal)
                await _until_stopped(args.parent_watch)
                watch.cancel_scope.cancel()
            await node.aclose()

    anyio.run(run)
    if node.fatal is not None:
        print(f"error {node.fatal}", file=sys.stderr)
        return 1
    return 0


def _settings(args: argparse.Namespace, role: str = "node") -> dict[str, Any]:
    from yzcore.config import resolve

    flags = {k: getattr(args, k, None) for k in ("probe_interval", "heartbeat_interval", "backoff_base",
                                                 "backoff_cap", "start_jitter")}
    flags["metrics"] = False if getattr(args, "no_metrics", False) else None
    return resolve(args.profile, flags=flags, sets=args.set, role=role,
                   rollback=rollback_values(args, role))


def _node_kwargs(args: argparse.Namespace, role: str = "node") -> dict[str, Any]:
    from yzcore.config import engine_config
    from yzcore.protocol.backoff import BackoffPolicy

    s = _settings(args, role)
    return {"advertise": args.advertise, "peers": args.peer, "bootstrap": args.bootstrap,
            "data_dir": args.data_dir, "probe_interval": s["probe_interval"].value,
            "heartbeat_interval": s["heartbeat_interval"].value,
            "backoff": BackoffPolicy(base=s["backoff_base"].value, cap=s["backoff_cap"].value),
            "start_jitter": max(0.0, s["start_jitter"].value), "metrics": s["metrics"].value,
            "config": engine_config(s), "settings": s}


def _node(args: argparse.Namespace) -> int:
    from yzcore.runtime import Node

    listen = None if args.no_listen else _ws_url(args.listen)
    if args.no_listen and not args.bootstrap:
        print("error [NO_PEERS] --no-listen needs --bootstrap: the node is reached through a "
              "bridge the bootstrap server introduces.", file=sys.stderr)
        return 2
    return _run_node(Node(listen=listen, **_node_kwargs(args)), args)


def _bridge(args: argparse.Namespace) -> int:
    from yzcore.bootstrap.auth import read_secret
    from yzcore.bridge import Bridge

    secret = read_secret(args.bridge_secret_file)
    return _run_node(Bridge(listen=_ws_url(args.listen), bridge_secret=secret,
                            **_node_kwargs(args, "bridge")), args)


def _bootstrap(args: argparse.Namespace) -> int:
    import tempfile

    from yzcore.bootstrap.auth import read_secret, write_secret
    from yzcore.bootstrap.server import BootstrapServer

    secret_file, tmpdir = args.bridge_secret_file, None
    if secret_file is None and args.bridges:  # our own bridges: a fresh secret they share with us
        tmpdir = tempfile.TemporaryDirectory(prefix="yz-bootstrap-")
        secret_file = os.path.join(tmpdir.name, "bridge.secret")
        write_secret(secret_file)
    secret = read_secret(secret_file) if secret_file else None
    extra = ["--log-json"] if args.log_json else []
    extra += ["--log-level", args.log_level, "--heartbeat-interval", str(args.bridge_heartbeat)]
    server = BootstrapServer(listen=_ws_url(args.listen), advertise=args.advertise, secret=secret,
                             data_dir=args.data_dir, node_ttl=args.node_ttl, bridges=args.bridges,
                             max_clients=args.max_clients,
                             secret_file=secret_file, bridge_args=extra)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            await server.start(tg)
            _announce(id=server.id.hex(), role="bootstrap", address=server.address)
            await _until_stopped(args.parent_watch)
            await server.aclose()

    try:
        anyio.run(run)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    return 0


def _sim(args: argparse.Namespace) -> int:
    from yzcore.sim.plot import svg
    from yzcore.sim.scenarios import SCENARIOS, run

    if args.scenario not in SCENARIOS:
        print(f"error [INVALID_ARGUMENT] no scenario {args.scenario!r}; choose one of "
              f"{', '.join(sorted(SCENARIOS))}.", file=sys.stderr)
        return 2
    made = bool(args.plot) and not os.path.exists(args.plot)
    if args.plot:  # before the run, not after it
        try:
            open(args.plot, "a", encoding="utf-8").close()
        except OSError as exc:
            print(f"error [INVALID_ARGUMENT] cannot write the plot {args.plot}: {exc.strerror}.",
                  file=sys.stderr)
            return 2
    try:
        verdict = run(args.scenario, args.nodes, args.seed)
    except BaseException:  # (Ctrl-C): no empty plot left behind
        if made:
            os.unlink(args.plot)
        raise
    if args.json:
        print(json.dumps({"scenario": verdict.scenario, "criteria": verdict.criteria,
                          "passed": verdict.passed, "figures": verdict.figures,
                          "digest": verdict.digest, "wall_s": verdict.wall_s,
                          "timeline": verdict.timeline}))
    else:
        print(f"{'t (s)':>7}  {'healthy':>7}  {'conns':>5}")
        for t, share, conns in verdict.timeline:
            print(f"{t:>7.0f}  {100 * share:>6.1f}%  {conns:>5.1f}")
        print(f"{verdict.scenario} ({verdict.criteria}), {args.nodes} nodes, seed {args.seed}: "
              f"{'PASS' if verdict.passed else 'FAIL'}")
        for name, value in verdict.figures.items():
            print(f"  {name}: {value}")
        print(f"trace digest {verdict.digest}; {verdict.wall_s:.1f} s wall")
    if args.plot:
        with open(args.plot, "w", encoding="utf-8") as f:
            f.write(svg(verdict))
    return 0 if verdict.passed else 1


def _up(args: argparse.Namespace) -> int:
    from yzcore.up import run_up

    return run_up(args)


def _client(args: argparse.Namespace, act: Any) -> int:
    """Join through --via (a node) or --bootstrap (its introductions) as a browser-class
    peer, do one thing, leave."""
    from yzcore.runtime import Node

    via = args.via or args.bootstrap

    async def run() -> int:
        node = Node(listen=None, peers=[args.via] if args.via else [],
                    bootstrap=[args.bootstrap] if args.bootstrap else [], role="browser")
        node.managers.ice_servers = tuple(getattr(args, "ice_server", None) or ())
        async with anyio.create_task_group() as tg:
            await node.start(tg)
            try:
                with anyio.fail_after(args.timeout):
                    await node.joined()
                    if not node.conns:
                        print(f"error [PEER_UNREACHABLE] could not join through {via}; check "
                              "the URL (ws://HOST:PORT/dht) and that the node runs (`yz status URL`).",
                              file=sys.stderr)
                        return 1
                    return int(await act(node))
            except TimeoutError:
                print(f"error [TIMEOUT] not done within --timeout {args.timeout:g} s; check the "
                      "network with `yz diagnose --bootstrap URL`.", file=sys.stderr)
                return 1
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
    def server_options(p: argparse.ArgumentParser, port: int) -> None:
        p.add_argument("--listen", default=f"127.0.0.1:{port}",
                       help="HOST:PORT (or a ws:// URL) to listen on; port 0 picks a free one")
        p.add_argument("--advertise", help="the URL others should dial (default: the listen URL; "
                       "on 0.0.0.0 or [::], this host's address, followed as it changes)")
        p.add_argument("--data-dir", help="keeps the key (and a node's peer cache) across restarts")
        p.add_argument("--parent-watch", action="store_true", help=argparse.SUPPRESS)

    def node_options(p: argparse.ArgumentParser, port: int) -> None:
        server_options(p, port)
        p.add_argument("--peer", action="append", default=[],
                       help="a node URL to join through (repeatable)")
        p.add_argument("--bootstrap", action="append", default=[], metavar="URL",
                       help="a bootstrap server URL (repeatable; tried in turn)")
        p.add_argument("--probe-interval", type=positive, metavar="SECONDS",
                       help="seconds between health checks (default 30; raise it when many nodes "
                       "share one host)")
        p.add_argument("--heartbeat-interval", type=positive, metavar="SECONDS",
                       help="seconds between heartbeats to the bootstrap server (default 5)")
        p.add_argument("--backoff-base", type=positive, metavar="SECONDS",
                       help="first retry delay bound; doubles per attempt, 5 attempts a round")
        p.add_argument("--backoff-cap", type=positive, metavar="SECONDS",
                       help="largest retry delay bound (default 8)")
        p.add_argument("--start-jitter", type=not_negative, metavar="SECONDS",
                       help="wait up to this long (uniformly drawn) before joining, so a fleet "
                       "restarted at once does not reach the bootstrap server at once (default: 10 for a "
                       "node, 0 for a bridge)")
        p.add_argument("--no-metrics", action="store_true",
                       help="record no transfer metrics: no hook at all on any message path (also "
                       "YZ_METRICS=0); /metrics keeps the state gauges")
        config_options(p)

    def config_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default="default", choices=("default", "minimal"),
                       help="minimal: the smallest known-good configuration, for emergencies")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any knob `yz config show` lists, e.g. maintenance_interval_settled=1")
        p.add_argument("--rollback", metavar="N", help="start from attempt N's values (a number "
                       "or commit prefix `yz config history` lists) in place of a profile")

    p = command("node", _node, "run a server node")
    node_options(p, 8080)
    p.add_argument("--no-listen", action="store_true",
                   help="accept no inbound connections: be reached through a bridge")
    p = command("bridge", _bridge, "run a bridge: a node that relays for peers behind NAT")
    node_options(p, 8090)
    p.add_argument("--bridge-secret-file", required=True, metavar="FILE",
                   help="the secret shared with the bootstrap servers (at least 16 bytes)")
    p = command("bootstrap", _bootstrap, "run a bootstrap server (first contact and dashboard)")
    server_options(p, 8080)
    p.add_argument("--bridges", type=int, default=0, metavar="N",
                   help="run and supervise N bridge processes (restarted when they die)")
    p.add_argument("--bridge-secret-file", metavar="FILE",
                   help="the secret bridges must prove (default with --bridges: a fresh one)")
    p.add_argument("--max-clients", type=int, default=10_000, metavar="N",
                   help="most client connections at once; more are refused with RATE_LIMITED")
    p.add_argument("--node-ttl", type=positive, default=30.0, metavar="SECONDS",
                   help="a node not heard from this long is no longer introduced (default 30)")
    p.add_argument("--bridge-heartbeat", type=positive, default=5.0, help=argparse.SUPPRESS)
    p = command("sim", _sim, "run a simulator scenario on a virtual clock and print its verdict")
    p.add_argument("--nodes", type=count, default=1000)
    # Checked when the command runs: importing the simulator here would slow every yz command.
    p.add_argument("--scenario", default="crisis", help="formation, lost_all, dead_peer, crisis, "
                   "partition, mass_restart, nat, backoff, stale, failover, stampede or lookups "
                   "(default crisis)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plot", metavar="FILE.svg", help="also draw the health timeline")
    p.add_argument("--json", action="store_true")
    p = command("up", _up, "run a local network: bootstrap server, bridges, nodes, dashboard")
    p.add_argument("--nodes", type=int, default=15, help="server nodes (default 15)")
    p.add_argument("--bridges", type=int, default=2, help="bridge processes (default 2)")
    p.add_argument("--port", type=int, default=8080, help="the bootstrap server and dashboard port")
    p.add_argument("--data-dir", help="keep keys, peer caches and logs here (default: a temporary "
                   "directory, removed on exit)")
    p.add_argument("--duration", type=positive, metavar="SECONDS",
                   help="stop by itself after this long (default: run until Ctrl-C)")
    def client_options(p: argparse.ArgumentParser) -> None:
        through = p.add_mutually_exclusive_group(required=True)
        through.add_argument("--via", help="a node URL, e.g. ws://127.0.0.1:8080/dht")
        through.add_argument("--bootstrap", metavar="URL",
                             help="a bootstrap server: join through the nodes it introduces")
        p.add_argument("--timeout", type=positive, default=30.0)
        p.add_argument("--json", action="store_true")

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
        client_options(p)
    add_ops_commands(command, config_options, client_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    _setup_logging(args)
    raise_open_files()
    try:
        return int(args.func(args))
    except YzError as exc:
        print(f"error {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader left (`yz status --json | head`): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor one at exit
        return 0
    except BaseExceptionGroup as group:  # raised in a task group: say its errors, if ours
        ours, rest = group.split(YzError)
        if ours is None or rest is not None:
            raise
        for exc in _leaves(ours):
            print(f"error {exc}", file=sys.stderr)
        return 1


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


if __name__ == "__main__":
    sys.exit(main())
