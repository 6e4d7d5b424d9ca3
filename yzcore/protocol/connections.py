"""The engine's connection policy: which peers to dial, keep and close.

A node keeps between ``conn_target`` and ``conn_max`` long-lived connections
(inbound ones count) and opens more transiently for lookups. Both ends agree
on which connections are kept: the end that keeps one (its dialer, while
short of ``conn_target``) says so with ``keep``, and the other end keeps it
too. One already keeping ``conn_max`` makes room: it releases a connection
it dialled itself, telling that peer ``OVER_CAPACITY``, or, having none,
answers the asker so. Whoever hears ``OVER_CAPACITY`` treats the connection
as transient and keeps one elsewhere, avoiding that peer for
``full_backoff``. No node keeps more than ``conn_max``, no connection counts
at one end only (B7.2), and a newcomer finds room in a network whose nodes
all keep ``conn_max`` (A1.1). A transient connection idle for
``idle_timeout`` is closed by its dialer, above ``conn_cap`` the least
recently used go first, and above ``conn_max`` a node sheds inbound
connections it does not keep once they are quiet for a second, saying
``OVER_CAPACITY``. At most ``max_dials`` dials are
in flight; more wait their turn, so a node joining a busy network floods
neither it nor itself. Peers it no longer talks to are forgotten (the routing
table keeps what matters).

A mixin of :class:`~yzcore.protocol.engine.Engine`, apart only to keep each
module to one job; it uses the engine's state and emits its actions.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from yzcore import routing
from yzcore.protocol.actions import Action, Close, Dial, Send
from yzcore.protocol.config import EngineConfig
from yzcore.protocol.rpc import RpcTable
from yzcore.wire import Error, ErrorCode, Keep, Message, NodeInfo

__all__ = ["TABLE_ROLES", "ConnectionPolicy", "PeerState"]

TABLE_ROLES = ("node", "bridge")  #: roles that enter routing tables and are kept

DORMANT_TTL = 86400.0  # seconds a dormant contact is remembered at most
DORMANT_WAIT_MAX = 600.0  # longest wait between two dials of one dormant contact


@dataclass(slots=True)
class PeerState:
    """What the engine knows of a peer it talks to.

    Attributes:
        info: Its id, address and role.
        connected: An open, verified connection exists.
        dialing: A dial is in flight or waiting for a slot.
        kept: Counted among the long-lived connections.
        pinned: Kept whatever the peer says (a bridge and the node it relays for).
        held: Open for pubsub (a channel's home, or a subscriber it holds):
            never closed for idleness or capacity, and counted neither as
            kept nor against ``conn_max`` or ``conn_cap``.
        outbound: We dialled the open connection.
        declined: The peer said ``DUPLICATE_CONNECTION`` on our connection, about to close.
        last_active: ``now`` of the last message either way.
        queue: Messages waiting for the connection.
    """

    info: NodeInfo
    connected: bool = False
    dialing: bool = False
    kept: bool = False
    pinned: bool = False
    held: bool = False
    outbound: bool = False
    declined: bool = False
    last_active: float = 0.0
    queue: list[Message] = field(default_factory=list)


class ConnectionPolicy:
    """Dialling, keeping and closing connections (mixed into the engine)."""

    config: EngineConfig
    rng: random.Random
    rpc: RpcTable
    table: routing.RoutingTable
    peers: dict[bytes, PeerState]
    _out: list[Action]
    _dials: set[bytes]
    _dial_queue: deque[bytes]
    _full: dict[bytes, float]
    _dormant: dict[bytes, tuple[NodeInfo, float, float, int]]
    _next_dormant: float
    _next_rejoin: float

    def _peer(self, info: NodeInfo) -> PeerState:
        """The state of the peer ``info`` names; while neither connected nor being
        dialled, it takes ``info``'s address, the one to dial next (a lookup asks
        a peer at another address when a reply gave one: Lookup.add)."""
        peer = self.peers.get(info.id)
        if peer is None:
            peer = self.peers[info.id] = PeerState(info)
        elif not (peer.connected or peer.dialing) and peer.info is not info:
            peer.info = info
        return peer

    def _dial(self, peer: PeerState) -> None:
        """Dial ``peer`` now, or once fewer than ``max_dials`` dials are in flight."""
        peer.dialing = True
        if len(self._dials) < self.config.max_dials:
            self._dials.add(peer.info.id)
            self._out.append(Dial(peer.info))
        else:
            self._dial_queue.append(peer.info.id)

    def _pump_dials(self) -> None:
        """Start waiting dials that are still wanted, up to ``max_dials`` in flight."""
        while self._dial_queue and len(self._dials) < self.config.max_dials:
            peer_id = self._dial_queue.popleft()
            peer = self.peers.get(peer_id)
            if peer is None or peer.connected or not peer.dialing or peer_id in self._dials:
                continue  # (in twice: queued, connected inbound, queued again; dialled once)
            if not self._wanted(peer_id, peer):  # its requests timed out or were withdrawn
                self._forget_dial(peer_id, peer)
                continue
            self._dials.add(peer_id)
            self._out.append(Dial(peer.info))

    def _wanted(self, peer_id: bytes, peer: PeerState) -> bool:
        """Whether anything still needs the connection to ``peer`` that is being dialled."""
        return (peer.kept or peer.pinned or peer_id in self._dormant
                or self.rpc.has_pending(peer_id))

    def dial_wanted(self, peer_id: bytes) -> bool:
        """Whether a ``Dial`` whose turn has come is still wanted.

        The runtime asks just before it dials: under load a dial waits for a
        slot it shares with other nodes, and the operation that wanted it may
        have finished meanwhile. A dial no longer wanted is forgotten (False)
        and the runtime does not make it.
        """
        peer = self.peers.get(peer_id)
        if peer is not None and peer.dialing and not peer.connected and self._wanted(peer_id, peer):
            return True
        self._dials.discard(peer_id)
        if peer is not None and not peer.connected:
            self._forget_dial(peer_id, peer)
        self._pump_dials()
        return False

    def _forget_dial(self, peer_id: bytes, peer: PeerState) -> None:
        """A dial nothing wants any more is not made, and the peer forgotten if idle."""
        peer.dialing = False
        peer.queue.clear()
        self._prune(peer_id)

    def _withdraw(self, op_id: int, peers: list[bytes]) -> None:
        """An operation is over: its requests that still wait for a dial are dropped,
        so that a dial nothing else wants is not made (:meth:`dial_wanted`). Requests
        already sent stay: their answers still refresh the routing table."""
        for peer_id in peers:
            peer = self.peers.get(peer_id)
            if peer is None or peer.connected or not peer.queue:
                continue
            gone = self.rpc.withdraw(peer_id, op_id)
            if gone:
                peer.queue = [m for m in peer.queue if getattr(m, "rid", None) not in gone]

    def _fail_peer(self, peer_id: bytes, now: float, *, count_failure: bool, retry: bool,
                   declined: bool = False) -> None:
        """Requests waiting on a peer whose connection is gone fail at once, or
        (``retry``: the connection closed under them) are retried once on a new one.

        A clean close is typically the peer closing an idle connection just as
        we sent a request on it. A close on an error may be a lossy path whose
        kernel gave up, with the peer alive: a lookup that failed it there
        would leave a live node out. A peer really gone refuses the new dial,
        or it times out, and the retried request keeps its first abandon
        deadline: the lookup waits no longer for it either way.

        A connection the peer ``declined`` (it keeps another with us: its own
        dial, whose handshake has not reached us yet, or one whose close has
        not reached it) is no failure either: a lookup asks the peer again
        after ``declined_wait``, by when that connection is ours or gone, with
        a fresh abandon deadline (the peer is alive), and waits meanwhile.
        A store is retried at once; anything else fails.
        """
        self.peers[peer_id].queue.clear()
        if count_failure:
            self._table_fail(peer_id, now)
        wait = self.config.declined_wait
        for p in self.rpc.drop_peer(peer_id):
            if declined and self._defer(p, now, wait):  # type: ignore[attr-defined]
                continue
            if not (retry and self._retry(p, now)):  # type: ignore[attr-defined]
                self._rpc_failed(p, now)  # type: ignore[attr-defined]

    def _release_unused_seeds(self) -> None:
        """A join is over: the seeds it was given are kept (bootstrap) before any
        dial; those it never dialled are let go, or each would stay for good, and
        count as kept if it ever connected. Not while another join runs: they
        may be its seeds."""
        if any(op.join for op in self._ops.values()):  # type: ignore[attr-defined]
            return
        for peer_id in [i for i, p in self.peers.items()
                        if p.kept and not (p.connected or p.dialing)]:
            self.peers[peer_id].kept = False
            self._prune(peer_id)

    def _prune(self, peer_id: bytes) -> None:
        """Forget a peer we no longer talk to; the routing table keeps what matters."""
        peer = self.peers.get(peer_id)
        if peer is not None and not (peer.connected or peer.dialing or peer.queue):
            del self.peers[peer_id]
            if peer_id not in self.table:
                self.rpc.forget_peer(peer_id)

    def _table_fail(self, peer_id: bytes, now: float) -> None:
        """A request to a contact failed; one evicted for it goes to the dormant cache.

        Not when the request went to another address than the table's (one a
        reply named): that says nothing of the contact, and a peer could
        otherwise have live nodes evicted by naming them at bogus addresses.
        """
        contact = self.table.get(peer_id)  # None also for one in a replacement cache
        peer = self.peers.get(peer_id)
        if (contact is not None and peer is not None and not peer.connected
                and peer.info.addr != contact.address):
            return
        status, _ = self.table.fail(peer_id, now)
        if status == routing.EVICTED and peer is None:
            self.rpc.forget_peer(peer_id)  # (else _prune does, once it is done with the peer)
        if status == routing.EVICTED and contact is not None and contact.address:
            role = (contact.meta or {}).get("role", "node")
            info = NodeInfo(peer_id, contact.address, role)  # type: ignore[arg-type]
            self._dormant[peer_id] = (info, now, now + self.config.dormant_interval, 0)
            while len(self._dormant) > self.config.dormant_max:
                # The one dialled most in vain goes (the oldest of those): a dead contact
                # leaves before the other side of a long partition does.
                worst = max(self._dormant.items(), key=lambda e: (e[1][3], -e[1][1]))[0]
                del self._dormant[worst]

    def _probe_dormant(self, now: float) -> None:
        """Dial one dormant contact now and then: a healed partition merges back (A7.5).

        Each entry waits longer between its dials (``dormant_interval``,
        doubling, up to 10 minutes) and is forgotten after a day: however
        long a partition lasted, the other side is still remembered and
        tried when it heals, and the dead cost one dial in 10 minutes each.
        """
        if now < self._next_dormant or not self._dormant:
            return
        self._next_dormant = now + self.config.dormant_interval
        for peer_id, (_, since, _, _) in list(self._dormant.items()):
            if now - since > DORMANT_TTL:
                del self._dormant[peer_id]
        due = [i for i, (_, _, at, _) in self._dormant.items() if at <= now and i not in self.peers]
        if due:
            peer_id = self.rng.choice(sorted(due))
            info, since, _, tries = self._dormant[peer_id]
            wait = min(DORMANT_WAIT_MAX, self.config.dormant_interval * 2 ** (tries + 1))
            self._dormant[peer_id] = (info, since, now + wait, tries + 1)
            self._dial(self._peer(info))

    def _woke(self, info: NodeInfo, now: float) -> None:
        """A dormant contact is back: rejoin through it (once an interval at most)."""
        if self._dormant.pop(info.id, None) is not None and now >= self._next_rejoin:
            self._next_rejoin = now + self.config.dormant_interval
            self.bootstrap([info], now)  # type: ignore[attr-defined]

    def pin(self, peer_id: bytes) -> None:
        """Keep the connection to ``peer_id`` however many others there are.

        For the bridge that relays for a node without a listener (and the
        nodes a bridge relays for): losing it would make the node unreachable.
        A pinned connection counts neither among the kept (``conn_target``,
        ``conn_max``) nor against ``conn_cap``: a bridge relaying for many
        nodes keeps its own connections and serves lookups as any node does.
        """
        peer = self.peers.get(peer_id)
        if peer is not None:
            self._keep(peer)
            peer.pinned = True

    def hold(self, peer_id: bytes, held: bool) -> None:
        """Hold the connection to ``peer_id`` open (or stop), for pubsub: a
        subscriber holds its channels' homes, a home the subscribers it
        serves. A held connection is not kept (B7.2 counts those), but
        neither idleness nor the cap closes it; the runtime's limits bound them."""
        peer = self.peers.get(peer_id)
        if peer is not None and peer.connected:
            peer.held = held

    def _keep(self, peer: PeerState) -> None:
        """Count ``peer`` among the kept; once connected, ask it to keep us too (Keep)."""
        if not peer.kept:
            peer.kept = True
            if peer.connected:
                self._out.append(Send(peer.info.id, Keep()))

    def peer_full(self, peer_id: bytes, now: float) -> None:
        """The peer keeps no more connections (``OVER_CAPACITY``): if we kept ours, keep one
        elsewhere; this one is transient now, closed when idle (unless pinned)."""
        peer = self.peers.get(peer_id)
        if peer is not None and peer.kept and not peer.pinned:  # a lookup's dial is none of this
            peer.kept = False
            self._full[peer_id] = now + self.config.full_backoff
            self._soon(now)  # type: ignore[attr-defined]

    def _kept_by(self, peer: PeerState) -> None:
        """``peer`` keeps our connection: keep it too, making room if we must.

        A node keeps a connection it dialled only while short of
        ``conn_target``, so a ``keep`` comes from a node that needs one. At
        ``conn_max`` we release one we dialled ourselves rather than turn the
        needy one away (the released peer keeps another if that leaves it
        short); only when there is none to release does it hear
        ``OVER_CAPACITY``.
        """
        if peer.kept or peer.info.role not in TABLE_ROLES:
            return  # a browser-class peer's connection is served, never counted nor shed
        if self._kept_count() >= self.config.conn_max:
            ours = sorted(i for i, p in self.peers.items()
                          if p.kept and p.connected and p.outbound and not p.pinned and p is not peer)
            told = self.peers[self.rng.choice(ours)] if ours else peer
            self._out.append(Send(told.info.id, Error(
                None, ErrorCode.OVER_CAPACITY, f"this node keeps {self.config.conn_max} connections "
                + ("and made room for a newcomer" if ours else "already"))))
            if not ours:
                return
            told.kept = False  # released: transient now, closed once idle
        peer.kept = True

    def _kept_count(self) -> int:
        n = 0  # a plain loop: this runs on every connection event
        for p in self.peers.values():
            if p.kept and not p.pinned and (p.connected or p.dialing):
                n += 1
        return n

    def _keep_connections(self, now: float) -> None:
        cfg = self.config
        self._probe_dormant(now)
        missing = cfg.conn_target - self._kept_count()
        if missing > 0:
            busy_ids = {i for i, p in self.peers.items() if p.connected or p.dialing}
            for peer_id, until in list(self._full.items()):
                if until <= now:
                    del self._full[peer_id]
            pool = [c for c in self.table.contacts() if c.id not in busy_ids and c.id not in self._full]
            for c in self.rng.sample(pool, min(missing, len(pool))):
                peer = self._peer(NodeInfo(c.id, c.address, (c.meta or {}).get("role", "node")))  # type: ignore[arg-type]
                peer.kept = True
                self._dial(peer)
        # Transient connections: ours close when idle; anyone's go, least
        # recently used first, above the cap. Inbound ones are someone else's
        # long-lived connection, so idleness alone does not close them.
        busy = self.rpc.busy_peers()
        transient = sorted((p.last_active, i) for i, p in self.peers.items()
                           if p.connected and not p.kept and not p.held and i not in busy)
        # Held connections count against pubsub's own limits, pinned ones (a bridge's
        # relayed nodes) against the relay's: not these.
        connected = sum(1 for p in self.peers.values()
                        if p.connected and not p.held and not p.pinned)
        excess = connected - cfg.conn_cap
        shed = connected - cfg.conn_max
        for last_active, peer_id in transient:
            peer = self.peers[peer_id]
            if excess > 0:
                reason = "over_capacity"
            elif peer.outbound and last_active + cfg.idle_timeout <= now:
                reason = "idle"
            elif (shed > 0 and not peer.outbound and peer.info.role in ("node", "bridge")
                  and last_active + 1.0 <= now):  # quiet for a second: no exchange is cut short
                reason = "over_target"
            else:
                continue
            excess -= 1
            shed -= 1
            peer.connected = False
            self._out.append(Close(peer_id, reason))

