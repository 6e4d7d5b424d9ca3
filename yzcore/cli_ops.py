"""The operator's commands of ``yz``: ``config show|history``, ``diagnose``, ``health``,
``client``, and the pubsub clients ``pub`` and ``sub``; the configuration history a node
started from the command line records (B8.4).

Apart from :mod:`yzcore.cli` to keep each module to one screenful of jobs; the
parser there calls :func:`add_ops_commands`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["add_ops_commands", "count", "not_negative", "positive", "quiet_resource_errors",
           "raise_open_files", "record_attempt", "rollback_values"]

log = logging.getLogger("yzcore.cli")


# -- a server process's limits ----------------------------------------------------------


def raise_open_files() -> None:
    """Allow as many open files as the hard limit lets (its children inherit it): a server
    holds a socket per peer, and a client holding 1,100 idle sockets exhausted the common
    soft limit of 1,024, so that no peer could connect and no page be served."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass  # as it was


def quiet_resource_errors() -> None:
    """Log asyncio's "out of system resource" (accept() failing with EMFILE: a second a
    listener) once a minute with a count, not a traceback each: 3,193 tracebacks, 1.4 MB,
    in one 25 s flood of idle sockets. Other loop errors go to the default handler."""
    loop = asyncio.get_running_loop()
    seen: dict[str, tuple[float, int]] = {}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "out of system resource" not in message:
            loop.default_exception_handler(context)
            return
        last, hidden = seen.get(message, (-math.inf, 0))
        now = time.monotonic()
        if now - last < 60:
            seen[message] = (last, hidden + 1)
            return
        seen[message] = (now, 0)
        log.error("%s: %s (%d more in the last minute); raise the open-file limit (ulimit -n)",
                  message, context.get("exception"), hidden, extra={"code": "OUT_OF_RESOURCES"})

    loop.set_exception_handler(handler)

# -- argparse types (the parser's module uses them too) --------------------------------


def _seconds(*, zero: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, > 0 (or >= 0 when ``zero``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not ((0 <= value) if zero else (0 < value)) or not value < math.inf:  # nan fails too
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds "
                                             f"{'>=' if zero else '>'} 0")
        return value
    return parse


positive, not_negative = _seconds(zero=False), _seconds(zero=True)


def count(text: str) -> int:
    """An argparse type: a number of nodes, at least 2."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of nodes >= 2")
    return value



def rollback_values(args: argparse.Namespace,
                    role: str) -> tuple[str, dict[str, Any]] | None:
    """``--rollback N``: attempt N's values, from the history in ``--data-dir`` (B8.4)."""
    from yzcore import __version__
    from yzcore.exceptions import InvalidConfig
    from yzcore.history import LIST_THEM, ConfigHistory

    if args.rollback is None:
        return None
    if not args.data_dir:
        raise InvalidConfig("--rollback needs --data-dir.", advice=LIST_THEM)
    attempt = ConfigHistory(args.data_dir).find(args.rollback)
    if attempt.config["role"] != role:
        raise InvalidConfig(f"attempt {attempt.number} configured a {attempt.config['role']}, "
                            f"and this is a {role}.", advice="Roll back to an attempt of this "
                            "role, or give the values you want with --set.")
    if attempt.config["yzcore"] != __version__:
        log.warning("attempt %d was recorded by yzcore %s and this is %s: its values are "
                    "restored; knobs %s did not have keep this release's defaults",
                    attempt.number, attempt.config["yzcore"], __version__,
                    attempt.config["yzcore"])
    args.rollback_to = attempt.number  # the attempt this start records says so
    return f"rollback to attempt {attempt.number}", attempt.settings()


def record_attempt(node: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Record a started node's configuration in its data dir's history; the announce's fields."""
    from yzcore import __version__
    from yzcore.exceptions import YzError
    from yzcore.history import ConfigHistory, snapshot
    from yzcore.wire import PROTOCOL_VERSION

    if not args.data_dir or node.settings is None:
        return {}
    config = snapshot(node.settings, version=__version__, protocol=PROTOCOL_VERSION, role=node.role)
    rolled_back = getattr(args, "rollback_to", None)
    history = ConfigHistory(args.data_dir)
    try:
        attempt, new = history.record(
            config, now=int(time.time()), author=node.id.hex()[:16],
            note=f"rollback to attempt {rolled_back}" if rolled_back else None)
    except YzError as exc:  # the node runs on: a history is never a reason to stop serving
        log.warning("the configuration was not recorded: %s", exc,
                    extra={"code": exc.code, "node_id": node.id.hex()})
        return {}
    if new:
        log.info("configuration %s (commit %s)", attempt.message, attempt.commit[:12],
                 extra={"node_id": node.id.hex()})
    node.history = {"attempt": attempt.number, "commit": attempt.commit,
                    "message": attempt.message, "dir": history.path}
    return {"attempt": attempt.number, "commit": attempt.commit}


def _config(args: argparse.Namespace) -> int:
    from yzcore.cli import _settings
    from yzcore.config import table
    from yzcore.exceptions import InvalidConfig
    from yzcore.history import LIST_THEM, ConfigHistory

    if args.action == "history":
        if not args.data_dir:
            raise InvalidConfig("yz config history needs --data-dir.", advice=LIST_THEM)
        attempts = ConfigHistory(args.data_dir).attempts()
        if args.json:
            print(json.dumps([{"attempt": a.number, "commit": a.commit, "time": a.time,
                               "message": a.message, "config": a.config} for a in attempts]))
        else:
            for a in attempts:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a.time))
                print(f"{a.number:>3}  {a.commit[:12]}  {when}Z  {a.message.partition(': ')[2]}")
            if not attempts:
                print(f"no attempts recorded in {args.data_dir}")
        return 0
    s = _settings(args, args.role)
    print(json.dumps({k: {"value": v.value, "source": v.source} for k, v in sorted(s.items())})
          if args.json else table(s))
    return 0


def _status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from yzcore.transport import http_base

    base = http_base(args.url)
    try:
        with urllib.request.urlopen(base + "/status", timeout=args.timeout) as resp:
            status = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"error [STATUS_UNAVAILABLE] {base}/status: {exc}; is a yzcore node listening there?",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    try:
        rows, code = (_server_rows(status) if status.get("role") == "bootstrap"
                      else _node_rows(status))
        rows += [("", f"[{err['code']}] {err['message']}") for err in status["recent_errors"][-5:]]
    except (KeyError, TypeError, AttributeError, ValueError):
        print(f"error [STATUS_UNAVAILABLE] {base}/status is not a yzcore node's or bootstrap "
              "server's status; point `yz status` at one (`--json` prints what came back).",
              file=sys.stderr)
        return 1
    for name, value in rows:
        print(f"{name:>14}  {value}")
    return code


def _node_rows(status: dict[str, Any]) -> tuple[list[tuple[str, object]], int]:
    health = status["health"]
    return ([("id", status["id"]), ("role", status["role"]), ("address", status["address"]),
             ("version", f"{status['version']} (protocol {status['protocol']})"),
             ("health", "healthy" if health["healthy"]
              else "UNHEALTHY: " + "; ".join(health["reasons"])),
             ("connections", ", ".join(f"{k} {v}" for k, v in status["connections"].items())),
             ("routing table", status["routing_table"]), ("values held", status["values"]),
             ("recent errors", len(status["recent_errors"]))], 0 if health["healthy"] else 3)


def _server_rows(status: dict[str, Any]) -> tuple[list[tuple[str, object]], int]:
    net, bridges = status["network"], status["bridges"]
    return ([("id", status["id"]), ("role", "bootstrap server"), ("address", status["address"]),
             ("version", f"{status['version']} (protocol {status['protocol']})"),
             ("network", f"{net['nodes']} nodes, {net['healthy']} healthy ({net['share']:.0%})"),
             ("bridges", f"{len(bridges)}, {sum(1 for b in bridges if b['healthy'])} healthy"),
             ("introductions", status["introductions"]),
             ("recent errors", len(status["recent_errors"]))], 0)


def _diagnose(args: argparse.Namespace) -> int:
    from yzcore.diagnose import diagnose, render

    report = anyio.run(lambda: diagnose(args.bootstrap, node=args.node, advertise=args.advertise,
                                        data_dir=args.data_dir, webrtc=not args.no_webrtc))
    print(json.dumps(report.as_json()) if args.json else render(report))
    return 0 if report.ok else 1


def _health(args: argparse.Namespace) -> int:
    from yzcore.health import run_health

    return run_health(args)


def _light_client(args: argparse.Namespace) -> int:
    """``yz client --bootstrap URL find-node ID | put KEY VALUE | get KEY | connect ID | serve``."""
    from yzcore.cli import _find_node, _get, _put

    wanted = {"find-node": 1, "put": 2, "get": 1, "connect": 1, "serve": 0}[args.action]
    if len(args.words) != wanted:
        print(f"error [INVALID_ARGUMENT] {args.action} takes {wanted} argument(s).", file=sys.stderr)
        return 2
    if args.action == "find-node":
        args.id = args.words[0]
        return _find_node(args)
    if args.action in ("connect", "serve"):
        return _peer_to_peer(args)
    args.key = args.words[0]
    if args.action == "put":
        args.value = args.words[1]
        return _put(args)
    return _get(args)


def _peer_to_peer(args: argparse.Namespace) -> int:
    """``connect ID``: reach a browser-class peer (WebRTC, else a relay) and say how.
    ``serve``: stay online, taking WebRTC and relayed connections; one JSON line per event."""
    from yzcore.cli import _client
    from yzcore.exceptions import YzError
    from yzcore.ids import id_from_hex

    async def connect(node: Any) -> int:
        started = anyio.current_time()
        try:
            info = await node.managers.reach(id_from_hex(args.words[0]), timeout=args.timeout)
        except YzError as exc:
            print(f"error [{exc.code}] {exc.args[0]} {exc.advice}", file=sys.stderr)
            return 1
        pc = node.conns.get(info.id)
        if pc is None:
            print(f"error [PEER_UNREACHABLE] {info.id.hex()[:16]} closed the connection at once",
                  file=sys.stderr)
            return 1
        path = pc.conn.transport
        failed = node.managers.webrtc.last_error if path != "webrtc" else None
        print(json.dumps({"peer": info.id.hex(), "transport": path,
                          "seconds": round(anyio.current_time() - started, 4),
                          "webrtc_failure": failed}) if args.json
              else f"connected to {info.id.hex()[:16]} over {path} in "
                   f"{(anyio.current_time() - started) * 1000:.0f} ms"
                   + (f" (WebRTC failed: [{failed['code']}] {failed['message']})" if failed else ""))
        return 0

    async def serve(node: Any) -> int:
        with anyio.move_on_after(5):  # offers come through the bootstrap server: be there first
            while node.links and not any(link.pc for link in node.links):
                await anyio.sleep(0.05)
        print(json.dumps({"event": "ready", "id": node.id.hex(), "relays": node.managers.relays(),
                          "webrtc": node.managers.status()["webrtc"]}), flush=True)
        seen: set[bytes] = set()
        with anyio.move_on_after(args.duration or float("inf")):
            while True:
                for peer_id, pc in list(node.conns.items()):
                    if peer_id not in seen and pc.info.role == "browser":
                        print(json.dumps({"event": "peer", "id": peer_id.hex(),
                                          "transport": pc.conn.transport}), flush=True)
                seen = set(node.conns)
                await anyio.sleep(0.1)
        return 0

    if args.action == "serve":
        args.timeout = float("inf") if args.duration is None else args.duration + args.timeout
    return _client(args, connect if args.action == "connect" else serve)


def _pub(args: argparse.Namespace) -> int:
    """``yz pub CHANNEL DATA``: publish once, say how many homes took it."""
    from yzcore.cli import _client

    async def act(node: Any) -> int:
        result = await node.publish(args.channel, args.data)
        print(json.dumps({"channel": args.channel, "mid": result.mid.hex(), "homes": result.homes,
                          "reached": result.reached}) if args.json
              else f"published on {args.channel!r}: {result.homes} homes took it, "
                   f"{result.reached} subscribers or more reached")
        return 0

    return _client(args, act)


def _sub(args: argparse.Namespace) -> int:
    """``yz sub CHANNEL``: print each message as it arrives (a JSON line each with --json);
    stop after --count messages, or at --timeout, or Ctrl-C."""
    from yzcore.cli import _client

    duration, args.timeout = args.timeout, None  # a subscriber's --timeout is how long it listens

    async def act(node: Any) -> int:
        sub = await node.subscribe(args.channel)
        print(f"subscribed to {args.channel!r} at {sub.homes} homes", file=sys.stderr, flush=True)
        got = 0
        with anyio.move_on_after(duration if duration is not None else float("inf")):
            async for pub in sub:
                print(json.dumps({"channel": pub.channel, "data": pub.data,
                                  "sender": pub.sender.hex(), "mid": pub.mid.hex()}) if args.json
                      else f"{pub.sender.hex()[:16]}: {pub.data}", flush=True)
                got += 1
                if got == args.count:
                    break
        await sub.aclose()
        if got < args.count:
            within = (f"within --timeout {duration:g} s" if duration is not None
                      else "before the subscription ended")
            print(f"error [TIMEOUT] {got} of {args.count} messages {within}; check that something "
                  "publishes on the channel.", file=sys.stderr)
            return 1
        return 0

    return _client(args, act)


def add_ops_commands(command: Any, config_options: Any, client_options: Any) -> None:
    """Register config, status, diagnose, health and client on the parser (``command`` makes
    a subcommand)."""
    p = command("client", _light_client, "the Python light client: join as a browser-class peer "
                "and run find-node ID, put KEY VALUE, get KEY, connect ID (a browser-class "
                "peer, over WebRTC) or serve (stay online, taking WebRTC connections)")
    client_options(p)
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="a STUN/TURN server for WebRTC (repeatable; default: none, host "
                   "candidates only)")
    p.add_argument("--duration", type=positive, metavar="SECONDS",
                   help="serve: stop after this long")
    p.add_argument("action", choices=("find-node", "put", "get", "connect", "serve"))
    p.add_argument("words", nargs="*", metavar="ARG", help="ID, KEY VALUE, KEY or nothing")
    p = command("pub", _pub, "publish a message on a pubsub channel")
    p.add_argument("channel", help="the channel's name (its key is sha256 of it)")
    p.add_argument("data", help="the message (at most 16 KiB as JSON)")
    client_options(p)
    p = command("sub", _sub, "subscribe to a pubsub channel and print its messages")
    p.add_argument("channel", help="the channel's name")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages "
                   "(default: run until --timeout or Ctrl-C; fewer by --timeout exits 1)")
    client_options(p)
    p.set_defaults(timeout=None)  # a subscriber listens until told otherwise
    p = command("config", _config, "show: the effective configuration and where each value came "
                "from; history: the configurations a node in --data-dir was started with")
    p.add_argument("action", choices=("show", "history"))
    p.add_argument("--data-dir", help="the node's data directory (history; show --rollback)")
    p.add_argument("--role", default="node", choices=("node", "bridge"))
    p.add_argument("--no-metrics", action="store_true")
    config_options(p)
    p.add_argument("--json", action="store_true")
    p = command("status", _status, "a node's (or a bootstrap server's) health, connections and "
                "recent errors")
    p.add_argument("url", help="the node's URL (ws://HOST:PORT/dht or http://HOST:PORT)")
    p.add_argument("--timeout", type=positive, default=5.0)
    p.add_argument("--json", action="store_true")
    p = command("diagnose", _diagnose, "test each step into a network and name the cause of a failure")
    p.add_argument("--bootstrap", required=True, metavar="URL")
    p.add_argument("--node", metavar="URL", help="also check this node: the bootstrap server dials "
                   "its advertised address back")
    p.add_argument("--advertise", metavar="URL", help="have the bootstrap server dial this address "
                   "back (on this host), e.g. before starting a node with it")
    p.add_argument("--data-dir", help="a node's data directory: when a name does not resolve, go on "
                   "with the address its peer cache remembers for it")
    p.add_argument("--no-webrtc", action="store_true", help="skip the WebRTC round trip (it opens "
                   "a DataChannel between two throwaway peers on this host)")
    p.add_argument("--json", action="store_true")
    p = command("health", _health, "the network's health from a bootstrap server, against a baseline")
    p.add_argument("--bootstrap", required=True, metavar="URL")
    p.add_argument("--save-baseline", metavar="FILE", help="write the health now to FILE")
    p.add_argument("--compare", metavar="FILE", help="exit 1 unless health is back to FILE's levels")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="how far the healthy share may stay below the baseline's (default 0.05)")
    p.add_argument("--json", action="store_true")
