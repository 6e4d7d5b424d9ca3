"""The anyio node: the sans-I/O engine driven by real transports and a real clock.

The node owns the connections; the engine every protocol decision: feed events in, carry
the actions out. Handlers are attached before a connection's first message is read; a peer
enters the routing table the moment its handshake verifies (A4.1); a closed connection
leaves the active list at once (A4.2).

Exactly one connection per peer: two nodes dialling each other at once both keep the one
the smaller id dialled; a peer that dials again has let its old one go, and so do we.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import anyio
from anyio.abc import TaskGroup, TaskStatus

from yzcore import wire
from yzcore.config import Setting
from yzcore.exceptions import ConnectionClosed, TransportError, WireError
from yzcore.identity import Identity, holding, load_or_create
from yzcore.metrics import TransferMetrics, enabled as metrics_enabled
from yzcore.protocol.actions import Close, Dial, Done, Limited, PutResult, Send
from yzcore.protocol.backoff import BackoffPolicy
from yzcore.protocol.config import EngineConfig
from yzcore.protocol.engine import Engine
from yzcore.protocol.lookup import LookupResult
from yzcore.protocol.recovery import RecoveryConfig, RecoveryPolicy
from yzcore.runtime.http import HttpEndpoints
from yzcore.runtime.link import BootstrapLink
from yzcore.runtime.managers import Managers
from yzcore.runtime.peer import PeerConnection, describe_failure, dial_slots, handshake
from yzcore.runtime.probe import Probing
from yzcore.runtime.pubsub import PubSub
from yzcore.runtime.readdress import Readdressing
from yzcore.runtime.recovery import Recovery
from yzcore.runtime.relay import Relaying
from yzcore.runtime.replies import SERVICE_RIDS, Replies
from yzcore.runtime.reporting import Reporting
from yzcore.transport import Connection, Listener, transport_for
from yzcore.wire import NodeInfo

__all__ = ["Node"]

log = logging.getLogger("yzcore.node")
_ENGINE_NOTICES = (wire.ErrorCode.OVER_CAPACITY, wire.ErrorCode.DUPLICATE_CONNECTION)
_LOCAL_TYPES = frozenset((*wire.SERVICE_TYPES, *wire.PUBSUB_TYPES))  # the runtime's, not engine's


class Node(Relaying, Probing, Recovery, Reporting, PubSub, Readdressing):
    """A yzcore server node.

    Args:
        listen: Where to accept connections (``ws://HOST:PORT/dht``; port 0 picks one), or
            None for a node that accepts none.
        advertise: The URL other nodes should dial; defaults to the bound listen address.
        peers: URLs to join through (no id needed: the handshake tells).
        bootstrap: Bootstrap server URLs, tried in turn for introductions.
        data_dir: Where the node key and the peer cache live, held by one process at a time
            (DataDirInUse); None for an ephemeral identity and no cache.
        role: "node", "bridge" or "browser".
        bridge_secret: A bridge's shared secret, proved to each bootstrap server.
        config: Protocol knobs.
        seed: Seeds the node's one random source (engine, recovery, probe); None: the OS's.
        handshake_timeout: Seconds a new connection has to complete its hello.
        dial_timeout: Seconds a dial may take.
        probe_interval: Seconds between health checks (ARCHITECTURE §4).
        heartbeat_interval: Seconds between heartbeats to the bootstrap server.
        backoff: The retry schedule of bootstrap and reconnection attempts.
        cache_interval: Seconds between writes of the peer cache.
        start_jitter: Seconds (at most, uniformly drawn) to wait before joining, so that
            nodes restarted together do not all reach the bootstrap server at once (A7.4).
        metrics: Record transfer metrics (None: unless ``YZ_METRICS=0``; off: no hook, B8.1).
        settings: The effective configuration (:func:`yzcore.config.resolve`), for ``/status``.
    """

    def __init__(self, *, listen: str | None = "ws://127.0.0.1:0/dht", advertise: str | None = None,
                 peers: Sequence[str] = (), bootstrap: Sequence[str] = (), data_dir: str | None = None,
                 identity: Identity | None = None, role: str = "node",
                 bridge_secret: bytes | None = None, config: EngineConfig | None = None,
                 seed: int | None = None, handshake_timeout: float = 5.0, dial_timeout: float = 5.0,
                 probe_interval: float = 30.0, heartbeat_interval: float = 5.0,
                 backoff: BackoffPolicy | None = None, cache_interval: float = 10.0,
                 start_jitter: float = 0.0, metrics: bool | None = None,
                 settings: Mapping[str, Setting] | None = None) -> None:
        self.identity = identity or (load_or_create(data_dir) if data_dir else Identity.generate())
        self.id = self.identity.node_id
        self.role = role
        self._listen = listen
        self._advertise = advertise
        self._peers = list(peers)
        self.data_dir = data_dir
        self._config = config or EngineConfig()
        self._seed = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        # One generator for engine, recovery, links and probe (each is 2.5 KiB, and a
        # process may run a thousand nodes); nothing needs their draws apart.
        self._rng = random.Random(self._seed)
        self.handshake_timeout = handshake_timeout
        self.dial_timeout = dial_timeout
        self.address: str | None = None
        self.engine: Engine | None = None
        self.conns: dict[bytes, PeerConnection] = {}
        self.gone = [0, 0]  # frames sent and received on connections closed since the start
        self.errors: deque[dict[str, object]] = deque(maxlen=32)
        self._dial_logged: dict[object, tuple[float, int]] = {}  # kind: (logged at, unlogged)
        self.metrics = TransferMetrics() if metrics_enabled(metrics) else None
        self.settings = settings
        self.history: dict[str, object] | None = None  # the attempt it runs (B8.4), set by the CLI
        self.started_at = time.time()
        self._listener: Listener | None = None
        self._tg: TaskGroup | None = None
        self._waiters: dict[int, tuple[anyio.Event, list[object]]] = {}
        self._wake = anyio.Event()
        self._sleep_until = float("inf")
        self._joined = anyio.Event()
        self.last_probe: dict[str, object] | None = None
        self.probe_interval = probe_interval
        self._last_lookup: tuple[float, float] | None = None  # (finished at, seconds taken)
        self._probe_op = 0
        self._stopping = self._ended_once = False
        self._release: Callable[[], None] = lambda: None  # the data dir (DataDirInUse)
        self._backoff_policy = backoff or BackoffPolicy()
        self.recovery = RecoveryPolicy(RecoveryConfig(backoff=self._backoff_policy,
                                                      start_jitter=start_jitter), self._rng)
        self.heartbeat_interval = heartbeat_interval
        self.cache_interval = cache_interval
        if role == "bridge":  # one registration per bootstrap server: each keeps its own registry
            self.links = [BootstrapLink(self, [url], self._backoff_policy, self._rng, bridge_secret)
                          for url in bootstrap]
        else:
            self.links = ([BootstrapLink(self, bootstrap, self._backoff_policy, self._rng)]
                          if bootstrap else [])
        self._bridges: list[NodeInfo] = []
        self._relay_bridge: bytes | None = None
        # The timer loop's other looks, once joined: the recovery policy, the probe.
        self._recover_at = self._probe_at = float("inf")
        self._recovering = False  # an attempt to reconnect is running
        self._replies = Replies(first=SERVICE_RIDS)  # reconnect requests to bridges
        self.fatal: BaseException | None = None
        self.http = HttpEndpoints(self)
        self.managers = Managers(self)  # the connection-manager factory (B6.3)
        self._relay_init()

    # -- life cycle -------------------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Listen, then join in the background; returns once listening."""
        await tg.start(self._run)

    async def _run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with holding(self.data_dir) as self._release:  # one process on a data dir at a time
            self._recall()  # the peer cache, before any dial
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if self._listen:
                        transport = transport_for(self._listen)
                        self._listener = await transport.listen(self._listen, http=self.http)
                        tg.start_soon(self._listener.serve, self._inbound)
                    self.address = self._advertise or self._own_address()
                    info = NodeInfo(self.id, self.address, self.role)
                    self.engine = Engine(info, anyio.current_time(), self._rng, self._config)
                    self.managers.start(tg)
                    if self._follows_interfaces():  # A6.5
                        tg.start_soon(self._interface_loop)
                    tg.start_soon(self._timer_loop)
                    tg.start_soon(self._join)  # it starts the heartbeats, after the start jitter
                    if self._listen is None and self.role == "node":  # reached through a bridge
                        tg.start_soon(self._relay_loop)
                    if self.data_dir:
                        tg.start_soon(self._cache_loop)
                    task_status.started()
            finally:  # however it ended: aclose, kill, or the caller's task group cancelled
                await self._ended()

    async def joined(self, timeout: float = 30.0) -> None:
        """Wait until the bootstrap lookup finished (at once for a first node)."""
        with anyio.fail_after(timeout):
            await self._joined.wait()

    async def aclose(self) -> None:
        """Stop gracefully: every connection is closed with a goodbye, then the listener."""
        self._stopping = True
        async with anyio.create_task_group() as tg:
            for pc in list(self.conns.values()):
                tg.start_soon(pc.close)
        await self._stop()

    async def kill(self) -> None:
        """Die as a crash would: connections dropped, no goodbye (over ws peers see 1006)."""
        self._stopping = True
        for pc in list(self.conns.values()):
            pc.abort()
        await self._stop()

    def _fatal(self, exc: BaseException) -> None:
        """Stop the node for good: it cannot work as configured (``fatal`` says why)."""
        self.fatal = exc
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _ended(self) -> None:
        """Save the peer cache, answer callers, start nothing, close every socket; idempotent."""
        if not self._ended_once:
            self._ended_once = True
            self._cache_peers()
            self._release()  # before aclose returns: the next process may start at once
            for link in self.links:
                link.close()
        self._stopping = True
        if self.engine is not None:
            self.engine.stop(anyio.current_time())
            self._process()
        with anyio.CancelScope(shield=True):
            if self._listener is not None:
                await self._listener.aclose()
            await self.managers.aclose()
        for pc in list(self.conns.values()):
            pc.abort()
        self.conns.clear()

    async def _stop(self) -> None:
        await self._ended()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._ended()  # connections registered while we were closing the others

    # -- user operations ----------------------------------------------------------

    async def find_node(self, target: bytes, k: int | None = None) -> LookupResult:
        """The ``k`` (default: the configured k) live nodes closest to ``target``."""
        return await self._wait(self._engine.find_node(target, anyio.current_time(), k))  # type: ignore[return-value]

    async def get(self, key: bytes) -> str | None:
        """The value stored under ``key``, or None."""
        return (await self._wait(self._engine.get(key, anyio.current_time()))).value  # type: ignore[union-attr]

    async def put(self, key: bytes, value: str, ttl: float | None = None) -> PutResult:
        """Store ``value`` at the k nodes closest to ``key``."""
        return await self._wait(self._engine.put(key, value, anyio.current_time(), ttl))  # type: ignore[return-value]

    @property
    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the node is not started; call `await node.start(task_group)` first")
        return self.engine

    async def _wait(self, op: int) -> LookupResult | PutResult:
        event = anyio.Event()
        slot: list[object] = []
        self._waiters[op] = (event, slot)
        self._process()
        await event.wait()
        return slot[0]  # type: ignore[return-value]

    # -- engine actions --------------------------------------------------------------

    def _process(self) -> None:
        """Carry out what the engine asked for; wake the timer if it moved earlier."""
        engine = self._engine
        if self._stopping:  # closing: only answers to callers still go out, nothing else
            for action in engine.actions():
                if isinstance(action, Done):
                    self._done(action)
            return
        for action in engine.actions():
            if isinstance(action, Send):
                pc = self.conns.get(action.peer)
                if pc is not None and not pc.send(action.message) and pc.drop_once():
                    self._record("SLOW_READER", action.peer, "peer stopped reading; dropped",
                                 throttle=True)
                    self._tg.start_soon(pc.close)  # type: ignore[union-attr]
            elif isinstance(action, Dial):
                self._tg.start_soon(partial(self._dial, action.node, asked=True))  # type: ignore[union-attr]
            elif isinstance(action, Close):
                pc = self.conns.get(action.peer)
                if pc is not None:
                    if action.reason == "over_target":  # tell the dialer why, so it looks elsewhere
                        pc.send(wire.Error(None, wire.ErrorCode.OVER_CAPACITY,
                                           f"this node keeps {self._config.conn_max} connections "
                                           "and sheds idle ones above that"))
                    self._tg.start_soon(pc.close)  # type: ignore[union-attr]
            elif isinstance(action, Done):
                self._done(action)
            elif isinstance(action, Limited):
                self._limited(action)
        if engine.get_timer() < self._sleep_until:
            self._wake.set()

    def _done(self, action: Done) -> None:
        if action.kind == "find_node" and not self._joined.is_set() and action.result.target == self.id:
            self._set_joined()
        # A probe's own lookup is not evidence for the next one.
        if action.kind != "put" and action.op != self._probe_op and action.result.queried:  # type: ignore[union-attr]
            self._last_lookup = (action.finished_at, action.finished_at - action.started_at)
        waiter = self._waiters.pop(action.op, None)
        if waiter is not None:
            waiter[1].append(action.result)
            waiter[0].set()

    async def _timer_loop(self) -> None:
        """Engine timers, recovery and probe looks: one task (a waiting task costs ~4 KiB)."""
        while True:
            engine = self._engine
            self._sleep_until = min(engine.get_timer(), self._recover_at, self._probe_at)
            with anyio.move_on_after(max(0.0, self._sleep_until - anyio.current_time())):
                await self._wake.wait()
            self._wake = anyio.Event()
            # Our own processing must not wake us again: only actions processed
            # by other tasks while we sleep can move the timer earlier.
            self._sleep_until = float("-inf")
            now = anyio.current_time()
            engine.handle_timer(now)
            self._process()
            if self._recover_at <= now:
                self._recover_at = self._recovery_look(now)
            if self._probe_at <= now:
                self._probe_at = self._probe_look(now)

    # -- connections ------------------------------------------------------------------

    async def _dial(self, node: NodeInfo, *, by_url: bool = False,
                    advertise: str | None = None, asked: bool = False) -> NodeInfo | None:
        """Connect and verify; hands the connection to the engine.

        ``advertise`` overrides the address our hello claims (a node moving to a bridge
        claims the relayed address before it is ours). ``asked``: the engine's ``Dial``,
        made only if the engine still wants it once the dial has its slot.
        """
        expected = None if by_url else node.id
        async with dial_slots():  # the process's budget: the timeouts start with a slot
            if asked and self.engine is not None and not self.engine.dial_wanted(node.id):
                self._process()
                return None
            try:
                conn = await self.managers.connect(node, self.dial_timeout)
            except Exception as exc:  # noqa: BLE001 -- an address from a peer may be anything
                self._dial_failed(node, expected, exc)
                return None
            try:
                peer = await handshake(conn, self.identity, role=self.role,
                                       advertise=advertise or self.address,
                                       timeout=self.handshake_timeout, expected_id=expected)
            except Exception as exc:  # noqa: BLE001
                await conn.close()
                self._dial_failed(node, expected, exc)
                return None
            except BaseException:  # cancelled mid-handshake: leave no socket behind
                await conn.close()
                raise
        pc = PeerConnection(conn, peer, outbound=True, metrics=self.metrics)
        pc.dialled = node.addr
        if not self._register(pc):
            await pc.close()
            return self.conns[peer.id].info if peer.id in self.conns else None
        if pc.push:
            self._attach(pc)
        else:
            self._tg.start_soon(self._serve, pc)  # type: ignore[union-attr]
        return pc.info

    def _dial_failed(self, node: NodeInfo, expected: bytes | None, exc: BaseException) -> None:
        code, text = describe_failure(exc)
        self._record(code, expected, f"dial {node.addr} failed: {text}",
                     transport=(node.addr or "").partition("://")[0] or None, throttle=True)
        if expected is not None and self.engine is not None:
            self.engine.dial_failed(expected, anyio.current_time())
            self._process()

    async def _accepted(self, conn: Connection, first: bytes | None = None,
                        expected: bytes | None = None) -> bool:
        """Verify an inbound connection (from ``expected``, if known), serve it; False: refused."""
        try:
            peer = await handshake(conn, self.identity, role=self.role, advertise=self.address,
                                   timeout=self.handshake_timeout, first=first, expected_id=expected)
        except (WireError, TransportError, TimeoutError) as exc:
            code, text = describe_failure(exc)
            self._record(code, None, f"inbound handshake from {conn.remote_address} failed: {text}",
                         transport=conn.transport, throttle=True)
            return False
        pc = PeerConnection(conn, peer, outbound=False, metrics=self.metrics)
        if not self._register(pc):
            await pc.close()
            return False
        if pc.push:
            self._attach(pc)  # the connection outlives this handler
        else:
            await self._serve(pc)
        return True

    def _register(self, pc: PeerConnection) -> bool:
        """Make ``pc`` the peer's connection, at once; False when it must be closed."""
        peer_id = pc.peer.id
        if peer_id == self.id or self._stopping:
            return False
        old = self.conns.get(peer_id)
        if old is not None:
            # Both ways at once: the smaller id's dial stays; else (same end, A6.5, closing): new.
            state = self._engine.peers.get(peer_id)  # not connected: the engine closed the old one
            if (pc.outbound != old.outbound and pc.outbound != (self.id < peer_id)
                    and pc.info.addr == old.info.addr and state is not None and state.connected):
                pc.send(wire.Error(None, wire.ErrorCode.DUPLICATE_CONNECTION, "already connected"))
                # Whatever the engine queued for the dial goes out on the kept one.
                self._engine.connection_opened(old.info, anyio.current_time(), outbound=old.outbound)
                self._process()
                return False
            del self.conns[peer_id]
            self._tg.start_soon(old.close)  # type: ignore[union-attr]
        self.conns[peer_id] = pc
        self._engine.connection_opened(pc.info, anyio.current_time(), outbound=pc.outbound, ip=pc.ip)
        if self._relays_for(pc):
            self._engine.pin(peer_id)
        self._process()
        return True

    def _attach(self, pc: PeerConnection) -> None:
        """Push mode: the transport calls us with each message and with the end."""
        def on_message(frame: bytes) -> None:
            if self._stopping:
                return
            try:
                if not self._on_frame(pc, frame) and pc.drop_once():
                    self._tg.start_soon(pc.close)  # type: ignore[union-attr]
            except Exception:  # a bug here must not break the transport's callback
                log.exception("failed handling a message", extra={"peer_id": pc.peer.id.hex()})

        def on_closed(exc: ConnectionClosed) -> None:
            try:
                if exc.silent and self.conns.get(pc.peer.id) is pc:
                    self._went_silent(pc, exc)
                self._closed(pc, exc.close_code not in (1000, 1001, None))
            except Exception:
                log.exception("failed handling a closed connection",
                              extra={"peer_id": pc.peer.id.hex()})

        pc.conn.attach(on_message, on_closed)  # type: ignore[attr-defined]

    async def _serve(self, pc: PeerConnection) -> None:
        """Pull mode: write and read for a registered connection until it closes."""
        error = False
        try:
            error = await pc.pump(lambda frame: self._on_frame(pc, frame))
        finally:
            self._closed(pc, error)

    def _closed(self, pc: PeerConnection, error: bool) -> None:
        peer_id = pc.peer.id
        self.gone[0], self.gone[1] = self.gone[0] + pc.sent, self.gone[1] + pc.received
        if self.conns.get(peer_id) is pc:
            del self.conns[peer_id]
            self._engine.connection_closed(peer_id, anyio.current_time(), error=error)
            self._process()
            if peer_id == self._relay_bridge:  # A5.5: on to the next bridge
                self._relay_lost()
            self._ps_closed(peer_id)
            if not self.conns and self._joined.is_set():
                self._look(recover=anyio.current_time())  # the recovery policy looks at once
        elif peer_id in self.conns:  # the tie-break closed this duplicate
            self._engine.connection_superseded(peer_id, anyio.current_time())
            self._process()

    def _on_frame(self, pc: PeerConnection, frame: bytes) -> bool:
        """One message from a verified peer; False when the peer must be dropped."""
        if not (home := self._ps_home(pc.peer.id)) and not self._admitted(pc, None):
            return not pc.dropping  # over its frame budget: dropped unread (or the peer)
        pc.received += 1
        try:
            msg: wire.Message | None = wire.decode(frame)
        except WireError as err:
            msg, bad = None, err
        if home and not self._admitted(pc, msg):  # (a home's: decoded first, see _admitted)
            return not pc.dropping
        if pc.metrics is not None:
            kind = "invalid" if msg is None else msg.TYPE
            pc.metrics.received(pc.conn.transport, kind, len(frame))
        if msg is None:
            self._record(str(bad.code), pc.peer.id, bad.message, throttle=True)  # a line a second
            return pc.send(wire.error_reply(bad))
        if isinstance(msg, wire.Error) and msg.rid is not None and (  # refused: its asker reads it
                self._replies.answer(msg, pc.peer.id) or self._ps_answer(msg, pc.peer.id)):
            return True
        # OVER_CAPACITY, DUPLICATE_CONNECTION: the engine's (on the live connection); others logged.
        if isinstance(msg, wire.Error) and msg.rid is None and (
                msg.code not in _ENGINE_NOTICES or self.conns.get(pc.peer.id) is not pc):
            if msg.code not in _ENGINE_NOTICES:
                self._record(msg.code, pc.peer.id, f"peer reports: {msg.message}", throttle=True)
            return True
        if type(msg) in _LOCAL_TYPES:  # messages are final classes: no subclass to miss
            self._service(pc, msg)
            return True
        self._engine.receive(pc.peer.id, msg, anyio.current_time())
        self._process()
        return True
