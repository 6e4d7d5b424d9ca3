"""The sans-I/O Kademlia engine of one node.

Events go in — a verified connection opened or closed, a dial failed, a
message received, a timer fired — each with the caller's ``now``; actions
come out of :meth:`Engine.actions` (:class:`~yzcore.protocol.actions.Send`,
``Dial``, ``Close``, ``Done``, ``Limited``) and :meth:`Engine.get_timer` says when to call
:meth:`Engine.handle_timer` next. Randomness comes from an injected
``random.Random``. The anyio runtime and the simulator drive the same engine.

Connection policy (what to dial, keep and close) is in
:mod:`yzcore.protocol.connections`; the table-side helpers (the contacts a
reply names, bucket refreshes, the size estimate) in
:mod:`yzcore.protocol.neighbourhood`.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from yzcore import ratelimit, routing
from yzcore.messages import check_value
from yzcore.protocol.actions import Action, Done, Limited, PutResult, Send
from yzcore.protocol.config import EngineConfig
from yzcore.protocol.connections import TABLE_ROLES, ConnectionPolicy, PeerState
from yzcore.protocol.lookup import Lookup, LookupResult
from yzcore.protocol.neighbourhood import Neighbourhood
from yzcore.protocol.rpc import Pending, RpcTable
from yzcore.protocol.store import ValueStore
from yzcore.wire import (Error, ErrorCode, FindNode, FindValue, Keep, Message, NodeInfo, Nodes,
                         Ping, Pong, Store, Stored, Value)

__all__ = ["Engine", "EngineConfig"]

RETRY_WAIT_MAX = 5.0  # a rate-limited query is asked again when told to wait at most this


@dataclass(slots=True)
class _Op:
    id: int
    kind: str  # "find_node" | "get" | "put"
    lookup: Lookup
    started_at: float
    notify: bool = True  # False for housekeeping: refreshes and republishing
    join: bool = False  # the self-lookup of bootstrap: refresh the far buckets after it
    emergency: bool = False  # a (re)join's, from seeds: its queries may pass full limits (A3.2)
    value: str = ""
    ttl: float = 0.0
    put_nodes: tuple[NodeInfo, ...] = ()
    put_waiting: int = 0
    put_stored: int = 0
    store_retried: set[bytes] = field(default_factory=set)
    abandon_by: dict[bytes, float] = field(default_factory=dict)  # retried queries' first deadlines


class Engine(ConnectionPolicy, Neighbourhood):
    """One node's protocol state.

    Args:
        info: This node: id, advertised address (None if it accepts no
            inbound connections) and role.
        now: The caller's clock at start.
        rng: The only source of randomness.
        config: The knobs; defaults match ARCHITECTURE.md.
    """

    def __init__(self, info: NodeInfo, now: float, rng: random.Random,
                 config: EngineConfig | None = None) -> None:
        self.info = info
        self.config = cfg = config or EngineConfig()
        self.rng = rng
        self.table = routing.RoutingTable(info.id, cfg.k, now=now)
        self.rpc = RpcTable(timeout=cfg.rpc_timeout, initial_rto=cfg.initial_rto,
                            min_rto=cfg.min_rto, first_rid=rng.randrange(1, 2**52))  # see RpcTable
        self.store = ValueStore(cfg.max_values, cfg.republish_interval,
                                cfg.replicate_interval, cfg.max_value_bytes)
        self.limiter = ratelimit.RateLimiter() if cfg.rate_limit else None
        self.peers: dict[bytes, PeerState] = {}
        self._dials: set[bytes] = set()  # Dial actions out, not yet opened or failed
        self._dial_queue: deque[bytes] = deque()  # peers waiting for a dial slot
        self._full: dict[bytes, float] = {}  # peers that shed our kept connection, until when
        self._dormant: dict[bytes, tuple[NodeInfo, float, float, int]] = {}  # evicted: when, next dial, dials
        self._next_rejoin = now
        self._infos: dict[bytes, NodeInfo] = {}  # contacts as replies name them
        self._next_dormant = now + cfg.dormant_interval
        self._ops: dict[int, _Op] = {}
        self._next_op = 1
        self._out: list[Action] = []
        self._next_maintenance = now + cfg.maintenance_interval
        self._next_self_lookup = float("inf")  # a join that found fewer than k looks again
        self._self_lookup_wait = cfg.self_lookup_interval
        self._deferred: list[tuple[float, int, bytes]] = []  # rate-limited queries: (when, op, peer)

    # -- what the driver reads ------------------------------------------------

    def actions(self) -> list[Action]:
        """Everything the engine wants done since the last call, in order."""
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float:
        """When :meth:`handle_timer` must next be called."""
        deadline = self.rpc.next_deadline()
        at = min(self._next_maintenance, self._next_self_lookup)
        at = at if deadline is None else min(deadline, at)
        return min(at, self._deferred[0][0]) if self._deferred else at

    def connected(self) -> list[bytes]:
        """Ids of the peers with an open, verified connection."""
        return [i for i, p in self.peers.items() if p.connected]

    # -- user operations --------------------------------------------------------

    def bootstrap(self, seeds: list[NodeInfo], now: float) -> int:
        """Join through ``seeds``: a lookup of our own id that starts from them.

        When it is done, every bucket farther than our closest neighbour
        that holds fewer than ``join_refresh_below`` contacts is refreshed
        too (the Kademlia join), so that nodes all over the id space hear of
        us and our table has contacts beyond our own neighbourhood; a bucket
        where we met live nodes already is not, as its refresh would only
        meet more.
        """
        for seed in seeds:  # seeds are kept, within conn_max (B7.2)
            peer = self._peer(seed)
            if not peer.kept and self._kept_count() < self.config.conn_max:
                self._keep(peer)
        return self._join(now, seeds=seeds)

    def _join(self, now: float, *, seeds: list[NodeInfo] | None = None, notify: bool = True) -> int:
        op = self._start("find_node", self.info.id, now, seeds=seeds, defer=True, notify=notify)
        self._ops[op].join = True
        self._ops[op].emergency = seeds is not None  # not the small network's periodic looks
        self._advance(self._ops[op], now)
        return op

    def readdress(self, addr: str | None) -> None:
        """This node's advertised address changed (it moved to another bridge)."""
        self.info = NodeInfo(self.info.id, addr, self.info.role)

    def find_node(self, target: bytes, now: float, k: int | None = None) -> int:
        """Start a lookup for the ``k`` (default: the configured k) nodes closest to
        ``target``; returns the op id its ``Done`` will carry."""
        return self._start("find_node", target, now, k=k)

    def get(self, key: bytes, now: float) -> int:
        """Start a value lookup; ``Done.result.value`` is None when nothing was found."""
        value = self.store.get(key, now)
        if value is None:
            return self._start("get", key, now, want_value=True)
        op = self._next_op
        self._next_op += 1
        self._out.append(Done(op, "get", LookupResult(key, (), value, self.info.id), now, now))
        return op

    def put(self, key: bytes, value: str, now: float, ttl: float | None = None) -> int:
        """Store ``value`` at the k closest to ``key``, republished (too large: EncodeError)."""
        check_value(value)
        ttl = self.config.value_ttl if ttl is None else ttl
        self.store.put(key, value, ttl, now, original=True)
        op = self._start("put", key, now, defer=True)
        o = self._ops[op]
        o.value, o.ttl = value, ttl
        self._advance(o, now)
        return op

    def stop(self, now: float) -> None:
        """The node is going away: every operation finishes now with what it has."""
        for op in list(self._ops.values()):
            op.join = False  # no follow-up refreshes
            self._finish(op, now)

    # -- events from the driver -------------------------------------------------

    def connection_opened(self, info: NodeInfo, now: float, *, outbound: bool,
                          ip: str | None = None) -> None:
        """A connection passed the handshake: the peer (``info``, as its verified hello says)
        is reachable now; ``outbound``: we dialled it; ``ip``: for the table's diversity limit."""
        peer = self._peer(info)
        was = peer.connected  # (the runtime tells again of a connection it kept: tie-break)
        peer.info = info  # the verified hello is the freshest information (A4.5)
        peer.connected, peer.dialing, peer.last_active, peer.outbound = True, False, now, outbound
        peer.declined = False  # said on a connection this one replaced
        self._dials.discard(info.id)
        # We keep what we dialled while short of conn_target (keeping up to conn_max
        # filled the network and turned newcomers away); an inbound connection
        # only once its dialer says it keeps it (Keep), so both ends agree.
        if (not peer.kept and outbound and info.role in TABLE_ROLES
                and self._kept_count() < self.config.conn_target):
            peer.kept = True
        if peer.kept and not (was or peer.pinned) and self._kept_count() > self.config.conn_max:
            peer.kept = False  # kept before it connected (a join's seed): no room now
        if peer.kept:
            self._out.append(Send(info.id, Keep()))
        if info.role in TABLE_ROLES and info.addr:
            self._table_add(info, now, ip)
        self.rpc.connected(info.id, now)  # the hard timeouts of what waited for it start now
        queued, peer.queue = peer.queue, []
        for msg in queued:
            self._out.append(Send(info.id, msg))
        self._woke(info, now)
        self._pump_dials()
        self._soon(now)

    def connection_closed(self, peer_id: bytes, now: float, *, error: bool = False) -> None:
        """The connection to a peer ended; ``error`` when it was not a clean close."""
        peer = self.peers.get(peer_id)
        if peer is None or (not peer.connected and peer.dialing):
            return  # our own Close done (idle, over capacity); what we asked since waits for a dial
        peer.connected = peer.dialing = False
        peer.kept = peer.pinned = peer.held = False
        declined, peer.declined = peer.declined, False
        self._dials.discard(peer_id)
        self._fail_peer(peer_id, now, count_failure=error and not declined, retry=True,
                        declined=declined)
        self._prune(peer_id)
        self._pump_dials()
        self._soon(now)

    def connection_superseded(self, peer_id: bytes, now: float) -> None:
        """A duplicate connection to a still-connected peer closed (the tie-break).

        Requests sent on it may be lost: each is asked again on the kept one, even
        if asked again before (every such retry follows a lost connection).
        """
        if peer_id in self.peers:
            for p in self.rpc.drop_peer(peer_id):
                if not self._retry(p, now, again=True):
                    self._rpc_failed(p, now)

    def dial_failed(self, peer_id: bytes, now: float) -> None:
        """A ``Dial`` could not connect (refused, timed out, handshake failed)."""
        peer = self.peers.get(peer_id)
        if peer is None or peer.connected:
            return  # the peer's own connection came meanwhile: what waited went out on it
        peer.dialing = peer.kept = peer.pinned = peer.held = False
        self._dials.discard(peer_id)
        self._fail_peer(peer_id, now, count_failure=True, retry=False)
        self._prune(peer_id)
        self._pump_dials()
        self._soon(now)

    def receive(self, peer_id: bytes, msg: Message, now: float) -> None:
        """A message arrived from a connected, verified peer."""
        peer = self.peers.get(peer_id)
        if peer is None or not peer.connected:
            return
        peer.last_active = now
        self.table.seen(peer_id, now)
        if isinstance(msg, (Ping, FindNode, FindValue, Store)):
            self._serve(peer_id, msg, now)
            return
        if type(msg) is Keep:
            self._kept_by(peer)
            return
        if type(msg) is Error and msg.rid is None:
            if msg.code == ErrorCode.OVER_CAPACITY:
                self.peer_full(peer_id, now)
            elif msg.code == ErrorCode.DUPLICATE_CONNECTION:  # the tie-break closes ours
                peer.declined = True
            return
        rid = getattr(msg, "rid", None)
        p = self.rpc.finish(peer_id, rid, now) if rid is not None else None
        if p is not None:
            self._answered(p, msg, now)

    def handle_timer(self, now: float) -> None:
        """Expire requests and run housekeeping that is due."""
        soft, abandon, hard = self.rpc.expire(now)
        for p in soft:
            op = self._ops.get(p.owner) if p.owner is not None else None
            if op is not None:
                op.lookup.slow(p.peer)
                self._advance(op, now)
        for p in abandon:
            op = self._ops.get(p.owner) if p.owner is not None else None
            if op is not None:
                op.lookup.abandon(p.peer)
                self._advance(op, now)
        for p in hard:
            self._table_fail(p.peer, now)
            self._rpc_failed(p, now)
        while self._deferred and self._deferred[0][0] <= now:
            _, op_id, peer_id = heapq.heappop(self._deferred)
            op = self._ops.get(op_id)
            if op is not None:
                op.lookup.revive(peer_id)
                self._advance(op, now)
        if now >= self._next_self_lookup:
            self._next_self_lookup = float("inf")
            self._join(now, notify=False)
        if now >= self._next_maintenance:
            self._maintain(now)
            # Adaptive: a settled node (its kept connections within target,
            # no other connection, no dial) looks again less often; any
            # connection event brings the next look forward (_soon).
            cfg = self.config
            settled = (cfg.conn_target <= self._kept_count() <= cfg.conn_max and not self._dials
                       and all(p.kept for p in self.peers.values() if p.connected))
            self._next_maintenance = now + (cfg.maintenance_interval_settled if settled
                                            else cfg.maintenance_interval)

    def _soon(self, now: float) -> None:
        """Something changed: housekeeping runs within ``maintenance_interval``."""
        self._next_maintenance = min(self._next_maintenance, now + self.config.maintenance_interval)

    # -- serving requests ---------------------------------------------------------

    def _serve(self, peer_id: bytes, msg: Ping | FindNode | FindValue | Store, now: float) -> None:
        if self.rpc.is_duplicate(peer_id, msg.rid, now):
            return
        if self.limiter is not None and isinstance(msg, (FindNode, FindValue)):
            d = self.limiter.check(peer_id, "find_node", now,
                                   emergency=getattr(msg, "emergency", False))
            if d.bypassed:  # let through on the bypass budget (A3.2): logged all the same
                self._out.append(Limited(peer_id, "find_node", d.scope, 0.0, 0.0, 0.0, True))
            elif not d.allowed:
                self._reply(peer_id, Error(
                    msg.rid, ErrorCode.RATE_LIMITED,
                    f"{d.scope} limit of {d.limit:g} lookups/s (burst {d.burst:g}) reached; "
                    f"retry in {d.retry_after:.3f}s", d.retry_after))
                self._out.append(Limited(peer_id, "find_node", d.scope, d.limit, d.burst,
                                         d.retry_after))
                return
        if isinstance(msg, Ping):
            self._reply(peer_id, Pong(msg.rid))
        elif isinstance(msg, FindNode):
            self._reply(peer_id, Nodes(msg.rid, self._closest(msg.target, exclude=peer_id)))
        elif isinstance(msg, FindValue):
            value = self.store.get(msg.key, now)
            nodes = () if value is not None else self._closest(msg.key, exclude=peer_id)
            self._reply(peer_id, Value(msg.rid, value, nodes))
        else:
            ttl = min(msg.ttl, self.config.max_ttl)
            self.store.put(msg.key, msg.value, ttl, now, source=peer_id)
            self._reply(peer_id, Stored(msg.rid))

    def _reply(self, peer_id: bytes, msg: Message) -> None:
        self._out.append(Send(peer_id, msg))

    # -- operations -----------------------------------------------------------------

    def _start(self, kind: str, target: bytes, now: float, *, want_value: bool = False,
               seeds: list[NodeInfo] | None = None, defer: bool = False, notify: bool = True,
               k: int | None = None) -> int:
        op_id = self._next_op
        self._next_op += 1
        lookup = Lookup(target, self.info.id, k or self.config.k, self.config.alpha, want_value)
        lookup.add(self._closest(target, exclude=self.info.id))
        lookup.add([p.info for p in self.peers.values() if p.connected and p.info.addr is not None
                    and p.info.role in TABLE_ROLES])
        if seeds:
            lookup.add(seeds)
        op = self._ops[op_id] = _Op(op_id, kind, lookup, now, notify)
        self.table.mark_refreshed(min(self.table.bucket_of(target), 255), now)
        if not defer:
            self._advance(op, now)
        return op_id

    def _advance(self, op: _Op, now: float) -> None:
        """Send the queries the lookup wants; finish the op when it is done."""
        lookup = op.lookup
        if op.kind == "put" and op.put_nodes:
            return  # storing phase: waits for Stored answers
        for info in lookup.next_queries():
            by = op.abandon_by.pop(info.id, None) if op.abandon_by else None
            if lookup.want_value:
                self._request(info, "find_value", lambda rid: FindValue(rid, lookup.target), op.id, now, by)
            else:
                self._request(info, "find_node",
                              lambda rid: FindNode(rid, lookup.target, op.emergency),
                              op.id, now, by)
        if lookup.done and op.id in self._ops:
            if op.kind == "put":
                self._store_at_closest(op, now)
            else:
                self._finish(op, now)

    def _store_at_closest(self, op: _Op, now: float) -> None:
        self._withdraw(op.id, op.lookup.in_flight())  # the lookup's part is over
        nodes = op.lookup.result().nodes
        op.put_nodes = nodes or (NodeInfo(self.info.id, self.info.addr, self.info.role),)
        op.put_waiting = len(nodes)
        if not nodes:  # alone in the network: our own copy is all there is
            self._finish(op, now)
            return
        for info in nodes:
            self._request(info, "store", lambda rid: Store(rid, op.lookup.target, op.value, op.ttl),
                          op.id, now)

    def _finish(self, op: _Op, now: float) -> None:
        self._ops.pop(op.id, None)
        self._withdraw(op.id, op.lookup.in_flight())
        result: LookupResult | PutResult | None = None
        if op.join:  # a find_node of our own id
            result = op.lookup.result()
            self._refresh_far_buckets(now)
            self._joined(len(result.nodes), now)
            self._release_unused_seeds()
        if not op.notify:
            return  # housekeeping lookups build no result
        if op.kind == "put":
            result = PutResult(op.lookup.target, op.put_stored, op.put_nodes)
        elif result is None:
            result = op.lookup.result()
        self._out.append(Done(op.id, op.kind, result, op.started_at, now))

    def _joined(self, found: int, now: float) -> None:
        """A join's self-lookup ended with ``found`` nodes: fewer than k, look again later."""
        cfg = self.config
        if found >= cfg.k:
            self._next_self_lookup, self._self_lookup_wait = float("inf"), cfg.self_lookup_interval
        else:
            self._next_self_lookup = now + self._self_lookup_wait
            self._self_lookup_wait = min(2 * self._self_lookup_wait, cfg.refresh_interval)

    def _request(self, info: NodeInfo, kind: str, make: Callable[[int], Message],
                 owner: int | None, now: float, abandon_by: float | None = None) -> None:
        peer = self._peer(info)
        p = self.rpc.start(info.id, kind, now, owner, connecting=not peer.connected,
                           abandon_by=abandon_by)
        msg = make(p.rid)
        if peer.connected:
            peer.last_active = now
            self._out.append(Send(info.id, msg))
        elif info.addr:
            peer.queue.append(msg)
            if not peer.dialing:
                self._dial(peer)
        else:  # cannot be dialled and not connected: unreachable from here
            self.rpc.finish(info.id, p.rid, now)
            self._rpc_failed(p, now)

    def _answered(self, p: Pending, msg: Message, now: float) -> None:
        op = self._ops.get(p.owner) if p.owner is not None else None
        if isinstance(msg, Error):
            wait = msg.retry_after
            if (msg.code == ErrorCode.RATE_LIMITED and wait is not None
                    and 0 <= wait <= RETRY_WAIT_MAX and self._defer(p, now, wait)):
                return  # asked again after the wait it was told (A3.5); others meanwhile (A3.3)
            self._rpc_failed(p, now)
            return
        if op is None:
            return
        if p.kind == "store":
            op.put_waiting -= 1
            op.put_stored += isinstance(msg, Stored)
            if op.put_waiting <= 0:
                self._finish(op, now)
            return
        if isinstance(msg, Nodes):
            op.lookup.answered(p.peer, msg.nodes)
        elif isinstance(msg, Value):
            op.lookup.answered(p.peer, msg.nodes, msg.value)
        else:
            op.lookup.failed(p.peer)
        self._advance(op, now)

    def _rpc_failed(self, p: Pending, now: float) -> None:
        op = self._ops.get(p.owner) if p.owner is not None else None
        if op is None:
            return
        if p.kind == "store":
            op.put_waiting -= 1
            if op.put_waiting <= 0:
                self._finish(op, now)
            return
        op.lookup.failed(p.peer)
        self._advance(op, now)

    def _defer(self, p: Pending, now: float, wait: float) -> bool:
        """Ask a lookup's peer again after ``wait`` (once), still waiting for its answer."""
        op = self._ops.get(p.owner) if p.owner is not None else None
        if op is None or p.kind == "store" or not op.lookup.defer(p.peer):
            return False
        heapq.heappush(self._deferred, (now + wait, op.id, p.peer))
        self._advance(op, now)
        return True

    def _retry(self, p: Pending, now: float, again: bool = False) -> bool:
        op = self._ops.get(p.owner) if p.owner is not None else None
        if op is None or self.peers[p.peer].info.addr is None:
            return False
        if p.kind == "store":
            if p.peer in op.store_retried and not again:
                return False
            op.store_retried.add(p.peer)
            target, value, ttl = op.lookup.target, op.value, op.ttl
            self._request(self.peers[p.peer].info, "store",
                          lambda rid: Store(rid, target, value, ttl), op.id, now)
            return True
        if not op.lookup.retry(p.peer, again):
            return False
        op.abandon_by[p.peer] = p.abandon_at
        self._advance(op, now)
        return True
