"""The bootstrap server: first contact, introductions, the bridge registry, signal relay.

It is never a dependency: it answers ``introduce`` with live peers and
healthy bridges, hears heartbeats, relays ``signal`` messages between its
connected clients, and checks its bridges. It runs no DHT: it never enters a
routing table (it claims the role ``bootstrap``, which no routing table
accepts) and refuses DHT requests with ``WRONG_ROLE``. Everything it knows
comes back within one heartbeat interval after a restart, so restarting it
loses nothing that matters; several may run side by side.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskGroup, TaskStatus

from yzcore import USE_EXTENSIONS, __version__, wire
from yzcore.bootstrap.auth import check_mac
from yzcore.bootstrap.dashboard import DASHBOARD_HTML
from yzcore.bootstrap.directory import Directory
from yzcore.bootstrap.supervisor import BridgeSupervisor
from yzcore.exceptions import ConnectionClosed, TransportError, WireError, WsUpgradeRejected
from yzcore.identity import Identity, holding, load_or_create
from yzcore.metrics import CONTENT_TYPE, exposition
from yzcore.ratelimit import RateLimiter
from yzcore.runtime.http import read_only
from yzcore.runtime.managers import may_pass_on, signal_error, signal_limiter
from yzcore.runtime.peer import (FLOOD_GRACE, FRAME_RATE, PeerConnection, describe_failure,
                                 handshake, source_of)
from yzcore.runtime.reporting import limit_fields, throttled
from yzcore.transport import Connection, HttpResponse, Listener, transport_for
from yzcore.wire import ErrorCode, NodeInfo

__all__ = ["BootstrapServer"]

log = logging.getLogger("yzcore.bootstrap")

_DHT_REQUESTS = (wire.FindNode, wire.FindValue, wire.Store, wire.Reconnect)
MAX_CLIENTS = 10_000  # connections at once; more are refused with RATE_LIMITED
DIAL_BACK_TIMEOUT = 5.0  # seconds a dial-back (connect and hello) may take
DIAL_BACK_MAX = 16  # dial-backs running at once, all clients together


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as an IP (IPv4-mapped IPv6 as the IPv4 it is), or None for a name."""
    try:
        ip = ipaddress.ip_address((text or "").strip("[]"))
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


class _Client:
    __slots__ = ("dialing_back", "nonce", "pc", "registered")

    def __init__(self, pc: PeerConnection) -> None:
        self.pc = pc
        self.nonce: bytes | None = None  # the challenge sent to a bridge
        self.registered = False
        self.dialing_back = False  # one dial-back at a time per client


class BootstrapServer:
    """A bootstrap server.

    Args:
        listen: ``ws://HOST:PORT/dht`` to accept connections on (port 0 picks one).
        advertise: The URL clients should use; defaults to the bound address.
        secret: The bridges' shared secret; None accepts no bridge.
        data_dir: Keeps the server's key; None for an ephemeral one.
        node_ttl: A node not heard from this long is no longer introduced.
        bridge_check: Seconds between bridge health checks.
        bridges: How many bridge processes to run and supervise (A5.4).
        secret_file: The secret's file, handed to supervised bridges.
        seed: Seeds the random source (tests); None draws one from the OS.
        max_clients: Most client connections at once; more are refused with
            ``RATE_LIMITED`` (retry after 30 s).
    """

    def __init__(self, *, listen: str = "ws://127.0.0.1:0/dht", advertise: str | None = None,
                 secret: bytes | None = None, data_dir: str | None = None,
                 identity: Identity | None = None, node_ttl: float = 30.0,
                 bridge_check: float = 2.0, bridges: int = 0, secret_file: str | None = None,
                 bridge_args: Sequence[str] = (), seed: int | None = None,
                 max_clients: int = MAX_CLIENTS,
                 handshake_timeout: float = 5.0) -> None:
        self.max_clients = max_clients
        self.identity = identity or (load_or_create(data_dir) if data_dir else Identity.generate())
        self._data_dir = data_dir
        self._release: Callable[[], None] = lambda: None  # the data dir's lock (DataDirInUse)
        self.id = self.identity.node_id
        self._listen = listen
        self._advertise = advertise
        self._secret = secret
        seed = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        self.directory = Directory(random.Random(seed), node_ttl=node_ttl, bridge_check=bridge_check)
        self.clients: dict[bytes, _Client] = {}
        self._signals = signal_limiter()  # signals relayed per client (a flood costs its sender)
        # New node identities per address (keys cost nothing: 8,000 throwaway ones, each
        # listed for node_ttl with 64 peers, made /status 36 MB and the health share 0%).
        self._newcomers = RateLimiter(rate=1.0, burst=64.0, global_rate=1e6, global_burst=1e6,
                                      bypass_rate=0.0, bypass_burst=0.0, max_keys=4096)
        self.errors: deque[dict[str, object]] = deque(maxlen=32)
        self._logged: dict[object, tuple[float, int]] = {}  # throttled log lines, by kind
        self.address: str | None = None
        self.started_at = time.time()
        self.handshake_timeout = handshake_timeout
        self.introductions = 0
        self._dial_backs = 0  # running now
        self._pings: dict[int, bytes] = {}
        self._rid = 0
        self._listener: Listener | None = None
        self._tg: TaskGroup | None = None
        self.supervisor = (BridgeSupervisor(bridges, secret_file, bridge_args, seed=seed,
                                            data_dir=os.path.join(data_dir, "bridges") if data_dir
                                            else None) if bridges else None)

    # -- life cycle -------------------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Listen and serve in ``tg``; returns once listening (bridges start after)."""
        await tg.start(self._run)

    async def _run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with holding(self._data_dir) as self._release:  # one process on a data dir at a time
            async with anyio.create_task_group() as tg:
                self._tg = tg
                listener = transport_for(self._listen)
                self._listener = await listener.listen(self._listen, http=self._http)
                self.address = self._advertise or self._listener.address
                tg.start_soon(self._listener.serve, self._accepted)
                tg.start_soon(self._tick_loop)
                if self.supervisor is not None:
                    tg.start_soon(self.supervisor.run, self.address)
                task_status.started()

    async def aclose(self) -> None:
        """Stop: supervised bridges first, then every connection and the listener."""
        if self.supervisor is not None:
            await self.supervisor.stop()
        for client in list(self.clients.values()):
            client.pc.abort()
        if self._listener is not None:
            await self._listener.aclose()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._release()  # now, not once the task group is done: a restart may follow at once

    # -- connections ------------------------------------------------------------------

    async def _accepted(self, conn: Connection) -> None:
        try:
            peer = await handshake(conn, self.identity, role="bootstrap", advertise=self.address,
                                   timeout=self.handshake_timeout)
        except (WireError, TransportError, TimeoutError) as exc:
            code, text = describe_failure(exc)
            self._record(code, None, f"handshake from {conn.remote_address} failed: {text}")
            return
        pc = PeerConnection(conn, peer, outbound=False)
        client = _Client(pc)
        old = self.clients.get(peer.id)
        if old is None and not self._may_join(pc):
            await pc.close()
            return
        if old is None and len(self.clients) >= self.max_clients:
            self._record("RATE_LIMITED", peer.id, f"client refused: {self.max_clients} clients "
                         "(--max-clients) are connected; it may try again in 30 s",
                         fields={"operation": "connect", "limit_clients": self.max_clients,
                                 "retry_after": 30.0})
            pc.send(wire.Error(None, ErrorCode.RATE_LIMITED, "this bootstrap server is full; "
                               "try another one", retry_after=30.0))
            await pc.close()
            return
        if old is not None:  # a reconnecting client: the new connection wins
            old.pc.abort()
            if old.registered:  # down until it registers again (its close will not say so)
                self.directory.bridge_closed(peer.id, anyio.current_time())
        self.clients[peer.id] = client
        if peer.role == "bridge":
            client.nonce = os.urandom(32)
            pc.send(wire.Challenge(client.nonce))
        if pc.push:
            def on_message(frame: bytes) -> None:
                try:
                    if not self._on_frame(client, frame):
                        pc.abort()
                except Exception:
                    log.exception("failed handling a message", extra={"peer_id": peer.id.hex()})

            pc.conn.attach(on_message, lambda _exc: self._closed(client))  # type: ignore[attr-defined]
            return
        try:  # a pull-only transport
            await pc.pump(lambda frame: self._on_frame(client, frame))
        finally:
            self._closed(client)

    def _may_join(self, pc: PeerConnection) -> bool:
        """Whether a node id this server has not seen may join from its address (one a
        second, bursts of 64; an IPv6 address counts by its /64; loopback clients, and those
        of a proxy on this host or network, are not counted); told ``RATE_LIMITED`` if not."""
        peer, host = pc.peer, source_of(pc.conn)
        if (peer.role != "node" or peer.id in self.directory.nodes or host is None
                or getattr(_ip(pc.conn.remote_address.rpartition(":")[0]), "is_loopback", True)):
            return True
        d = self._newcomers.check(host, "join", time.monotonic())
        if d.allowed:
            return True
        self._record(str(ErrorCode.RATE_LIMITED), peer.id, f"new node refused: over {d.limit:g} "
                     f"new ids/s from {host} (burst {d.burst:g})")
        pc.send(wire.Error(None, ErrorCode.RATE_LIMITED, f"too many new node ids from {host}; "
                           f"retry in {d.retry_after:.1f} s", retry_after=d.retry_after))
        return False

    def _closed(self, client: _Client) -> None:
        peer = client.pc.peer
        if self.clients.get(peer.id) is client:
            del self.clients[peer.id]
            self.directory.left(peer.id)  # a stopped node no longer counts healthy meanwhile
            if client.registered:
                self.directory.bridge_closed(peer.id, anyio.current_time())
                log.warning("bridge %s disconnected", peer.id.hex()[:16],
                            extra={"peer_id": peer.id.hex(), "code": "BRIDGE_DOWN"})

    def _on_frame(self, client: _Client, frame: bytes) -> bool:
        """One message from a verified client; False when it must be dropped."""
        pc, peer = client.pc, client.pc.peer
        if (admitted := pc.admit()) is not True:  # the frame budget a node keeps too
            if admitted is False:
                self._record(str(ErrorCode.RATE_LIMITED), peer.id, f"client dropped: over "
                             f"{FRAME_RATE:g} frames/s for {FLOOD_GRACE:g} s")
            return admitted is None
        try:
            msg = wire.decode(frame)
        except WireError as err:
            self._record(str(err.code), peer.id, str(err.args[0]) if err.args else "")
            return pc.send(wire.error_reply(err))
        now = anyio.current_time()
        info = NodeInfo(peer.id, peer.advertise, peer.role)
        if isinstance(msg, wire.Introduce):
            self.directory.seen(info, now)
            peers, bridges, genesis = self.directory.introduce(peer.id, msg.want)
            self.introductions += 1
            return pc.send(wire.Introductions(msg.rid, tuple(peers), tuple(bridges[:wire.MAX_NODES]),
                                              genesis))
        if isinstance(msg, wire.Heartbeat):
            self.directory.heartbeat(info, now, healthy=msg.healthy, connections=msg.connections,
                                     routing_table=msg.routing_table, probe=msg.probe,
                                     peers=msg.peers, sent=msg.sent, received=msg.received)
            return True
        if isinstance(msg, wire.Register):
            return self._register(client, info, msg, now)
        if isinstance(msg, wire.Pong):
            if self._pings.get(msg.rid) == peer.id:  # only the pinged bridge's answer counts
                del self._pings[msg.rid]
                self.directory.bridge_answered(peer.id, now)
            return True
        if isinstance(msg, wire.Ping):
            return pc.send(wire.Pong(msg.rid))
        if isinstance(msg, wire.Signal):
            decision = self._signals.check(peer.id, "signal", time.monotonic())
            if not decision.allowed:  # dropped, and said once in the log: signals are cheap to send
                self._record(str(ErrorCode.RATE_LIMITED), peer.id, f"signal not relayed: over "
                             f"{decision.limit:g}/s; wait {decision.retry_after:.2f} s",
                             fields=limit_fields("signal", decision.scope, decision.limit,
                                                 decision.burst, decision.retry_after))
                return True
            if not may_pass_on(peer.role, peer.advertise, msg.data):
                return True
            target = self.clients.get(msg.to)
            if target is None:  # told as a signal: the sender's WebRTC attempt ends at once
                return msg.data.get("kind") == "error" or pc.send(wire.Signal(
                    peer.id, None, signal_error(msg.data, str(ErrorCode.PEER_UNREACHABLE),
                                                f"peer {msg.to.hex()[:16]} is not connected to "
                                                "this bootstrap server")))
            target.pc.send(wire.Signal(msg.to, peer.id, msg.data))
            return True
        if isinstance(msg, wire.DialBack):
            return self._dial_back(client, msg)
        if isinstance(msg, _DHT_REQUESTS):
            return pc.send(wire.Error(msg.rid, ErrorCode.WRONG_ROLE,
                                      f"this is a bootstrap server: it answers introduce and relays "
                                      f"signals, not {msg.TYPE}. {wire.advice(ErrorCode.WRONG_ROLE)}"))
        if isinstance(msg, wire.Error):
            self._record(str(msg.code), peer.id, f"client reports: {msg.message}")
        return True

    def _dial_back(self, client: _Client, msg: wire.DialBack) -> bool:
        """Dial ``msg.addr`` for the asker and tell it what happened.

        Only an address on the asker's own IP; one dial-back at a time per
        client and ``DIAL_BACK_MAX`` in all; none for a client that came
        through a proxy (its IP as seen here is the proxy's: it could have this
        server probe the proxy's host, ports on loopback included); a
        loopback address only when this server listens on loopback itself
        (a proxy that adds no forwarding header hides itself: every client then
        looks like the proxy and may learn which of its host's ports answer;
        have it add X-Forwarded-For, as nginx's proxy_set_header does). The
        answer names the failure's code and our own sentence, never what the
        dialled address sent back (a local web page is not the asker's to read).
        """
        pc = client.pc
        try:
            host = _ip(urlsplit(msg.addr).hostname)
        except ValueError:  # "ws://[::1/dht": no host to read
            host = None
        ip = _ip(pc.ip)
        why = None
        if getattr(pc.conn, "forwarded", False):
            why = ("you reached this server through a proxy, so it cannot tell your address "
                   "from the proxy's")
        elif host is None or ip is None or host != ip or self._tg is None:
            why = f"{msg.addr} is not on your address {pc.ip}"
        elif host.is_loopback and not getattr(_ip(urlsplit(self._listen).hostname), "is_loopback", False):
            why = "this server does not dial loopback addresses for clients"
        elif client.dialing_back or self._dial_backs >= DIAL_BACK_MAX:
            why = "a dial-back is already running; ask again when it is done"
        if why is not None:
            return pc.send(wire.Error(msg.rid, ErrorCode.DIAL_BACK_REFUSED,
                                      f"{why}; {wire.advice(ErrorCode.DIAL_BACK_REFUSED)}"))
        client.dialing_back = True
        self._dial_backs += 1
        self._tg.start_soon(self._dial_back_task, client, msg)
        return True

    async def _dial_back_task(self, client: _Client, msg: wire.DialBack) -> None:
        pc = client.pc
        started = anyio.current_time()
        try:
            with anyio.fail_after(DIAL_BACK_TIMEOUT):
                conn = await transport_for(msg.addr).connect(msg.addr, timeout=DIAL_BACK_TIMEOUT)
                try:
                    peer = await handshake(conn, self.identity, role="bootstrap", advertise=self.address,
                                           timeout=DIAL_BACK_TIMEOUT)
                finally:
                    await conn.close()
            result = wire.DialBackResult(msg.rid, True, None, f"{peer.role} {peer.id.hex()[:16]} answered",
                                         round(anyio.current_time() - started, 3), peer.id)
        except Exception as exc:  # noqa: BLE001 - every failure is the answer
            code, text = describe_failure(exc)
            # Not what answered there: a page, an error frame's text, a close reason.
            if isinstance(exc, WsUpgradeRejected):
                text = (f"{msg.addr} answered HTTP {exc.status}, not a WebSocket upgrade"
                        if exc.status is not None else f"{msg.addr} answered, but not over HTTP")
            elif isinstance(exc, WireError | ConnectionClosed):
                text = f"{msg.addr} took the connection, but completed no yzcore hello"
            result = wire.DialBackResult(msg.rid, False, code, text,
                                         round(anyio.current_time() - started, 3))
        finally:
            client.dialing_back = False
            self._dial_backs -= 1
        try:  # a task of the server's own group: nothing may escape it
            pc.send(result)
        except Exception:
            log.exception("failed answering a dial-back", extra={"peer_id": pc.peer.id.hex()})

    def _register(self, client: _Client, info: NodeInfo, msg: wire.Register, now: float) -> bool:
        peer = client.pc.peer
        if client.nonce is None or self._secret is None:
            why = ("this server accepts no bridges (no --bridge-secret-file)" if self._secret is None
                   else "only a peer that said hello as a bridge may register")
            client.pc.send(wire.Error(msg.rid, ErrorCode.WRONG_ROLE, why))
            return False
        if not check_mac(self._secret, client.nonce, peer.id, self.id, msg.mac):
            text = (f"bridge {peer.id.hex()[:16]} at {peer.advertise} failed the secret check; "
                    "refused")
            self._record(str(ErrorCode.BRIDGE_AUTH_FAILED), peer.id, text)
            client.pc.send(wire.Error(msg.rid, ErrorCode.BRIDGE_AUTH_FAILED,
                                      f"{text}. {wire.advice(ErrorCode.BRIDGE_AUTH_FAILED)}"))
            return False
        client.nonce, client.registered = None, True
        self.directory.bridge_registered(info, now)
        log.info("bridge %s registered at %s", peer.id.hex()[:16], peer.advertise,
                 extra={"peer_id": peer.id.hex(), "address": peer.advertise})
        return client.pc.send(wire.Registered(msg.rid))

    async def _tick_loop(self) -> None:
        """Expire silent nodes and check each bridge (A5.3)."""
        while True:
            now = anyio.current_time()
            self.directory.expire(now)
            for bridge_id in self.directory.bridges_to_check(now):
                client = self.clients.get(bridge_id)
                if client is None:
                    continue
                self._rid += 1
                self._pings[self._rid] = bridge_id
                client.pc.send(wire.Ping(self._rid))
            if len(self._pings) > 1024:  # answers that never came
                for rid in sorted(self._pings)[:512]:
                    del self._pings[rid]
            await anyio.sleep(min(1.0, self.directory.bridge_check / 2))

    def _record(self, code: str, peer: bytes | None, message: str, *,
                fields: dict[str, object] | None = None) -> None:
        """Keep an error for /status and log it: at most a line a second per code (and,
        for a refusal for a limit, per limit ``fields`` names), as a node's throttled
        lines: most of these a client can cause at will, with bad frames or hellos."""
        entry = {"time": time.time(), "code": code, "peer": peer.hex() if peer else None,
                 "message": message}
        self.errors.append(entry)
        said = throttled(self._logged, (code, (fields or {}).get("operation")), message)
        if said is None:
            return
        message, unlogged = said
        log.warning(message, extra={"code": code, "peer_id": entry["peer"], "transport": "ws",
                                    "unlogged": unlogged, **(fields or {})})

    # -- HTTP -------------------------------------------------------------------------

    def _http(self, method: str, path: str, headers: Mapping[str, str]) -> HttpResponse | None:
        route = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):  # a page here: 405, else the transport's default
            known = route in ("/", "/status", "/healthz", "/metrics")
            return read_only(method, route) if known else None
        if route == "/":
            return HttpResponse(200, (("content-type", "text/html; charset=utf-8"),),
                                DASHBOARD_HTML.encode())
        if route == "/status":
            return HttpResponse.json(200, self.status())
        if route == "/healthz":
            return HttpResponse.json(200, {"healthy": True, "role": "bootstrap",
                                           "bridges_healthy": len(self.directory.healthy_bridges())})
        if route == "/metrics":
            return HttpResponse(200, (("content-type", CONTENT_TYPE),), self._metrics())
        return None

    def status(self) -> dict[str, Any]:
        """The nodes and bridges this server knows, and the network's health share."""
        now = anyio.current_time()
        nodes = [{"id": i.hex(), "role": e.info.role, "address": e.info.addr, "healthy": e.healthy,
                  "connections": e.connections, "routing_table": e.routing_table, "probe": e.probe,
                  "last_seen_s": round(now - e.last_seen, 1),
                  "peers": [p.hex() for p in e.peers], "sent": e.sent, "received": e.received,
                  "connected": i in self.clients}
                 for i, e in self.directory.nodes.items() if e.info.role == "node"]
        procs = self.supervisor.status() if self.supervisor else {}
        bridges = []
        for i, e in self.directory.bridges.items():
            row: dict[str, Any] = {"id": i.hex(), "address": e.info.addr,
                                   "healthy": self.directory.bridge_healthy(e),
                                   "registered_s": round(now - e.registered_at, 1),
                                   "last_ok_s": round(now - e.last_ok, 1), "misses": e.misses}
            row.update(procs.get(e.info.addr or "", {}))
            bridges.append(row)
        healthy = sum(1 for n in nodes if n["healthy"])
        return {
            "id": self.id.hex(), "role": "bootstrap", "address": self.address, "pid": os.getpid(),
            "version": __version__, "protocol": wire.PROTOCOL_VERSION,
            "compiled_core": USE_EXTENSIONS, "uptime_s": round(time.time() - self.started_at, 1),
            "network": {"nodes": len(nodes), "healthy": healthy,
                        "share": round(healthy / len(nodes), 3) if nodes else 0.0},
            "nodes": sorted(nodes, key=lambda n: n["address"] or ""),
            "bridges": bridges,
            "supervised": list(procs.values()),
            "introductions": self.introductions,
            "recent_errors": list(self.errors),
        }

    def _metrics(self) -> bytes:
        nodes = [e for e in self.directory.nodes.values() if e.info.role == "node"]
        return exposition([
            ("yz_bootstrap_nodes", "Nodes heard from within the TTL", {}, float(len(nodes))),
            ("yz_bootstrap_nodes_healthy", "Of them, those reporting healthy", {},
             float(sum(1 for e in nodes if e.healthy))),
            ("yz_bootstrap_bridges_healthy", "Registered bridges answering checks", {},
             float(len(self.directory.healthy_bridges()))),
            ("yz_bootstrap_introductions_total", "Introductions answered", {}, float(self.introductions)),
            ("yz_bootstrap_clients", "Open client connections", {}, float(len(self.clients))),
        ], None, hooks=False)
