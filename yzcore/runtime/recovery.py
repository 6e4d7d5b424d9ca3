"""Joining, and getting back: cached peers, bridges, bootstrap servers (A1.3, A7.1–A7.3).

A mixin of :class:`~yzcore.runtime.node.Node`, apart to keep each module to
one job. Joining tries peers cached on disk, then the ``--peer`` URLs, then
each ``--bootstrap`` URL in turn for introductions. After losing every
connection, :class:`~yzcore.protocol.recovery.RecoveryPolicy` (the one the
simulator drives too) runs ARCHITECTURE §4's order: the routing table's
contacts and the cached peers, then bridges (asked to ``reconnect`` us with
fresh live peers), then the bootstrap servers, with backoff between attempts.

A node that has peers never needs the bootstrap server (A1.2). A node with
no listener gets its address from a bridge that relays for it (A1.5), and
moves to the next bridge when that one fails (A5.5).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

import anyio

from yzcore import wire
from yzcore.protocol.recovery import SOURCES
from yzcore.runtime import peercache
from yzcore.runtime.peer import PeerConnection
from yzcore.transport import relay_address, transport_for
from yzcore.wire import ErrorCode, NodeInfo

__all__ = ["Recovery"]

log = logging.getLogger("yzcore.node")

INTRODUCTIONS = 8  # peers asked for at once
MAX_RELAY_ANSWERS = 16  # relayed dials answered at once
MAX_SEED_DIALS = 8  # peers dialled at once when (re)joining
MAX_BRIDGES = 16  # bridges remembered (each dead one costs a failed dial a recovery)
BRIDGE_KEEPALIVE = (2.0, 3.0)  # ping the relaying bridge when quiet 2 s; 3 s to answer
HEALTHY_POLL = 5.0  # seconds between looks at a connected node's table (the last close wakes it)


class Recovery:
    """Join and reconnect (mixed into the node)."""

    #: The peers the peer cache on disk names: read once at start (:meth:`_recall`),
    #: then what each save wrote. Only ever replaced, never changed in place.
    _remembered: list[NodeInfo] = []
    #: A bootstrap server said this is the network's first node (healthy alone).
    _first = False

    # -- joining ------------------------------------------------------------------

    async def _join(self) -> None:  # type: ignore[misc]
        delay = self.recovery.start(anyio.current_time())
        if delay:
            await anyio.sleep(delay)
        for link in self.links:  # not before: a fleet restarted at once must not beat at once
            self._tg.start_soon(self._heartbeat_loop, link)  # type: ignore[union-attr]
        intro = None
        if self._listen is None and self.role == "node" and self.links:
            intro = await self._introductions()  # a bridge first: it gives us our address
            await self._use_bridge()
        cached = self._remembered
        self._learn_bridges((p for p in cached if p.role == "bridge"), fresh=False)
        seeds = await self._dial_all([p for p in cached if p.id != self._relay_bridge])
        if self._relay_bridge in self.conns:  # the bridge is a node too: join through it
            seeds.append(self.conns[self._relay_bridge].info)
        seeds += await self._dial_all([NodeInfo(bytes(32), url) for url in self._peers], by_url=True)
        if not seeds and self.links:
            intro = intro or await self._introductions()
            if intro is not None and intro.genesis:
                self._first = True
                log.info("the bootstrap server knows no other node: this is the first one")
                self.recovery.joined(True, anyio.current_time())
                self._set_joined()
                return
            if intro is not None:
                seeds = await self._dial_all(self._intro_seeds(intro))
        self.recovery.joined(bool(seeds), anyio.current_time())  # a failed join backs off too
        if seeds:
            self._engine.bootstrap(seeds, anyio.current_time())
            self._process()
        else:
            if self._peers or cached or self.links:
                self._record(str(ErrorCode.NO_PEERS), None,
                             f"none of {len(cached)} cached peers, {len(self._peers)} --peer URLs "
                             "and the bootstrap introductions answered; retrying with backoff")
            self._set_joined()

    def _intro_seeds(self, intro: wire.Introductions) -> list[NodeInfo]:
        peers = list(intro.peers)
        if len(peers) < 3:  # a young network: the bridges are nodes too
            peers += [b for b in intro.bridges if b.id not in (self._relay_bridge, self.id)]
        return peers

    async def _introductions(self) -> wire.Introductions | None:
        for link in self.links:
            intro = await link.introduce(INTRODUCTIONS)
            if intro is not None:
                self._learn_bridges(intro.bridges)
                return intro
        return None

    def _learn_bridges(self, bridges: Iterable[NodeInfo], *, fresh: bool = True) -> None:
        """Remember bridges. From an introduction (``fresh``), one that moved (same id, a
        new address: a rescheduled container with its key) is followed to its new
        address, and past ``MAX_BRIDGES`` the ones learnt longest ago are forgotten.
        From the cache (not ``fresh``), only bridges not known yet, while there is room."""
        known = {b.id: i for i, b in enumerate(self._bridges)}
        for b in bridges:
            if b.id == self.id or not b.addr or (not fresh and len(known) >= MAX_BRIDGES):
                continue
            if b.id not in known:
                known[b.id] = len(self._bridges)
                self._bridges.append(b)
            elif fresh and self._bridges[known[b.id]].addr != b.addr:
                self._bridges[known[b.id]] = b
        del self._bridges[:-MAX_BRIDGES]

    async def _dial_all(self, infos: list[NodeInfo], *, by_url: bool = False) -> list[NodeInfo]:
        """Dial up to ``MAX_SEED_DIALS`` of ``infos`` at once; those that answered."""
        out: list[NodeInfo] = []
        held = {pc.info.addr for pc in self.conns.values()}  # URLs we are connected to
        todo = [i for i in infos
                if i.addr and (i.addr not in held if by_url else i.id not in self.conns)]

        async def one(info: NodeInfo) -> None:
            got = await self._dial(info, by_url=by_url)
            if got is not None:
                out.append(got)

        while todo and len(out) < 3 and not self._stopping:
            batch, todo = todo[:MAX_SEED_DIALS], todo[MAX_SEED_DIALS:]
            async with anyio.create_task_group() as tg:
                for info in batch:
                    tg.start_soon(one, info)
        return out

    # -- after losing everything ----------------------------------------------------

    def _look(self, *, recover: float | None = None, probe: float | None = None) -> None:
        """Have the timer loop look at the recovery policy or the probe at these times."""
        if recover is not None:
            self._recover_at = min(self._recover_at, recover)
        if probe is not None:
            self._probe_at = min(self._probe_at, probe)
        if min(self._recover_at, self._probe_at) < self._sleep_until:
            self._wake.set()  # it sleeps past them: wake it

    def _set_joined(self) -> None:
        """The join ended (whether or not it found peers): the looks begin."""
        if self._joined.is_set():
            return  # a lookup of our own id ended it already: the looks have begun
        self._joined.set()
        self._look(recover=anyio.current_time(), probe=anyio.current_time())

    def _recovery_look(self, now: float) -> float:
        """The timer loop's look at how connected the node is: starts an attempt to
        reconnect when the shared policy says (A1.3, A7.1); returns when to look next.

        Connected, a node has nothing to do until its last connection closes
        (which makes the timer loop look at once) or, seldom, its table
        shrinks: it looks every ``HEALTHY_POLL`` seconds, not each second (a
        thousand nodes in one process woke a thousand times a second). No task
        waits in between: a waiting anyio task is ~4 KiB, a node's memory.
        """
        if self._recovering:
            return float("inf")  # the attempt asks for the next look when it ends
        policy = self.recovery
        policy.observe(now, len(self.conns), len(self._engine.table))
        step = policy.next_step(now)
        if step is not None and not self._stopping:
            self._recovering = True
            self._tg.start_soon(self._recover, step, now)  # type: ignore[union-attr]
            return float("inf")
        poll = HEALTHY_POLL if policy.lost_since is None else 1.0
        return now + min(poll, max(0.05, policy.get_timer() - now))

    async def _recover(self, step: str | None, began: float) -> None:
        """One attempt: the policy's sources in order until one gives peers."""
        policy = self.recovery
        try:
            while step is not None and not self._stopping:
                seeds = await self._recover_from(step)
                if seeds:
                    self._engine.bootstrap(seeds, anyio.current_time())
                    self._process()
                    log.info("reconnected through %s after %.1f s", step,
                             anyio.current_time() - (policy.lost_since or began),
                             extra={"source": step, "peers": len(seeds)})
                step = policy.step_done(step, bool(seeds), anyio.current_time())
        finally:
            self._recovering = False
            self._look(recover=anyio.current_time() + 0.05)  # attempts never back to back

    async def _recover_from(self, source: str) -> list[NodeInfo]:
        """One step of an attempt: the peers of ``source`` that answered."""
        if self._needs_relay():
            await self._use_bridge()
        if source == "cache":
            known = [NodeInfo(c.id, c.address, (c.meta or {}).get("role", "node"))  # type: ignore[arg-type]
                     for c in self._engine.table.contacts()]
            known += self._remembered
            random.Random(self._seed ^ len(known)).shuffle(known)
            return await self._dial_all(known)
        if source == "bridges":
            return await self._ask_bridges()
        intro = await self._introductions() if self.links else None
        return await self._dial_all(self._intro_seeds(intro)) if intro is not None else []

    async def _reconnect(self) -> bool:
        """One whole attempt, every source in turn; whether it found peers."""
        for source in SOURCES:
            seeds = await self._recover_from(source)
            if seeds:
                self._engine.bootstrap(seeds, anyio.current_time())
                self._process()
                return True
        return False

    async def _ask_bridges(self) -> list[NodeInfo]:
        """Ask each known bridge in turn for fresh peers (its reconnection service)."""
        for bridge in list(self._bridges):
            if bridge.id not in self.conns and await self._dial(bridge) is None:
                continue
            pc = self.conns.get(bridge.id)
            reply = await self._replies.ask(pc, lambda rid: wire.Reconnect(rid, INTRODUCTIONS),
                                            5.0) if pc is not None else None
            if isinstance(reply, wire.Introductions):
                seeds = await self._dial_all(list(reply.peers))
                return seeds + [bridge] if bridge.id in self.conns else seeds
            if isinstance(reply, wire.Error):  # refused at once: the next bridge, with no wait
                self._record(str(reply.code), bridge.id,
                             f"bridge {bridge.addr} refused to reconnect us: {reply.message}")
        return []

    # -- relayed through a bridge ----------------------------------------------------

    def _needs_relay(self) -> bool:
        return (self._listen is None and self.role == "node" and not self._stopping
                and (self._relay_bridge is None or self._relay_bridge not in self.conns))

    async def _use_bridge(self) -> bool:
        """Take the first bridge that answers as our relay; our address becomes its relay URL.

        One at a time (a lock), and the address changes only once the bridge
        answered: the hello to it already claims the relayed address, so the
        bridge learns whom it relays for and its table learns where we are.
        """
        async with self._relay_lock:
            if not self._needs_relay():
                return True
            candidates = list(self._bridges)
            random.Random(self._seed).shuffle(candidates)
            candidates.sort(key=lambda b: b.id == self._relay_bridge)  # the one that failed: last
            for bridge in candidates:
                address = relay_address(bridge.addr, self.id)  # type: ignore[arg-type]
                old = self.conns.get(bridge.id)
                if old is not None:  # its hello named our old address: say hello again (A4.5)
                    self.conns.pop(bridge.id)
                    self._engine.connection_closed(bridge.id, anyio.current_time())
                    await old.close()
                if await self._dial(bridge, advertise=address) is None:
                    continue  # A5.5: the next one
                self._moved_to(bridge, address)
                return True
            self._record(str(ErrorCode.RELAY_UNAVAILABLE), None,
                         f"no bridge of {len(candidates)} answered; this node has no listener and "
                         "cannot be dialled until one does")
            return False

    def _moved_to(self, bridge: NodeInfo, address: str) -> None:
        moved = self.address is not None
        self._relay_bridge = bridge.id
        self._engine.pin(bridge.id)
        tighten = getattr(self.conns[bridge.id].conn, "tighten_keepalive", None)
        if tighten is not None:  # a hung bridge: the next one within 5 s, not 20 (A5.5)
            tighten(*BRIDGE_KEEPALIVE)
        log.info("reachable through bridge %s as %s", bridge.id.hex()[:16], address,
                 extra={"peer_id": bridge.id.hex(), "transport": "bridge"})
        self._readdress(address, hello_again=moved, keep=bridge.id)  # type: ignore[attr-defined]

    def _relay_lost(self) -> None:
        if not self._stopping:
            self._tg.start_soon(self._use_bridge)  # type: ignore[union-attr]

    async def _relay_loop(self) -> None:
        """A node without a listener keeps looking for a bridge while it has none (A5.5)."""
        await self._joined.wait()
        delay = 1.0
        while True:
            await anyio.sleep(delay)
            if not self._needs_relay():
                delay = 1.0
                continue
            if not await self._use_bridge():
                await self._introductions()  # fresher bridges, if the server knows any
                delay = min(30.0, delay * 2)

    async def _relay_accept(self, token: bytes, via: bytes | None) -> None:
        """A peer dials us through a relay (our bridge, or a node we hold a connection to):
        connect back to it, at the address we dialled it at (the one its hello claims
        could be anyone's), and say hello as the listener."""
        pc = self.conns.get(via) if via else None
        url = pc.dialled if pc is not None else None
        if not url or self._relay_answers >= MAX_RELAY_ANSWERS:
            return  # each answer is a connection: a flood of relay requests gets no more
        self._relay_answers += 1
        conn = None
        try:
            conn = await transport_for(url).connect(url, timeout=self.dial_timeout)
            await conn.send(wire.encode(wire.RelayAccept(token)))
            carried_by = getattr(conn, "carried_by", None)
            if carried_by is not None:
                carried_by("bridge")
            accepted = await self._accepted(conn)
        except Exception as exc:  # noqa: BLE001
            self._record(str(ErrorCode.RELAY_UNAVAILABLE), pc.peer.id,  # type: ignore[union-attr]
                         f"could not answer a relayed dial through {url}: {exc}")
            accepted = False
        finally:
            self._relay_answers -= 1
        if not accepted and conn is not None:  # not ours to keep: nobody else would close it
            with anyio.CancelScope(shield=True):
                await conn.close()

    # -- service messages on DHT connections ---------------------------------------------

    def _service(self, pc: PeerConnection, msg: wire.Message) -> None:
        """Non-DHT messages on a peer connection: relay requests and their replies, pubsub."""
        if isinstance(msg, wire.RelayOpen):
            # Our bridge; or, for a browser-class peer, a server node it dialled over WebSocket
            # (a role claimed on any other connection is only a claim).
            if pc.peer.id == self._relay_bridge or (
                    self.role == "browser" and pc.outbound  # type: ignore[attr-defined]
                    and pc.info.role in ("node", "bridge") and pc.conn.transport in ("ws", "wss")):
                self._tg.start_soon(self._relay_accept, msg.token, pc.peer.id)  # type: ignore[union-attr]
        elif isinstance(msg, wire.Signal):
            self.managers.on_signal(pc, msg)  # type: ignore[attr-defined]
        elif isinstance(msg, wire.Reconnect):
            pc.send(wire.Error(msg.rid, ErrorCode.WRONG_ROLE, "this is a node, not a bridge: "
                               "it offers no reconnection service. "
                               + wire.advice(ErrorCode.WRONG_ROLE)))
        elif isinstance(msg, wire.Introductions):
            self._replies.answer(msg, pc.peer.id)
        elif isinstance(msg, wire.PUBSUB_TYPES):
            self._pubsub(pc, msg)  # type: ignore[attr-defined]

    # -- the peer cache ---------------------------------------------------------------

    def _recall(self) -> None:
        """Read the peer cache, once, at start: the peers it names, and the addresses
        host names last resolved to (before any dial: for a name that no longer
        resolves, A6.4)."""
        if self.data_dir:
            peercache.load_addresses(self.data_dir)
            self._remembered = peercache.load(self.data_dir)

    def _cache_peers(self) -> None:
        if not self.data_dir or self.engine is None:
            return
        live = [pc.info for pc in self.conns.values() if pc.info.role in ("node", "bridge")]
        table = [NodeInfo(c.id, c.address, (c.meta or {}).get("role", "node"))  # type: ignore[arg-type]
                 for c in self.engine.table.nearest(self.id, 32)]
        try:  # what is on disk last: known now first, but nothing dropped for knowing nobody
            self._remembered = peercache.save(self.data_dir, [*live, *self._bridges, *table,
                                                              *self._remembered])
        except OSError as exc:
            log.warning("could not write the peer cache: %s", exc, extra={"code": "PEER_CACHE_UNWRITABLE"})

    async def _cache_loop(self) -> None:
        while True:
            await anyio.sleep(self.cache_interval)
            self._cache_peers()

    async def _heartbeat_loop(self, link: object) -> None:
        while True:
            if await link.connect():  # type: ignore[attr-defined]
                link.heartbeat()  # type: ignore[attr-defined]
            await anyio.sleep(self.heartbeat_interval)
