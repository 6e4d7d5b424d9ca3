"""Pubsub on a node: subscribe, publish, and hold channels as one of their homes.

How channels work is in :mod:`yzcore.pubsub`. A mixin of
:class:`~yzcore.runtime.node.Node`: it uses the node's connections, lookups and
error log. Nothing is made until the node first sees or uses pubsub, so a
node that never does pays one attribute for it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio

from yzcore import wire
from yzcore.exceptions import InvalidArgument, PubSubFailed
from yzcore.pubsub import (
    DEFAULT_TTL, MAX_TTL, MIN_TTL, ChannelHomes, Publication, Seen, channel_key, homes_for,
)
from yzcore.ratelimit import RateLimiter
from yzcore.runtime.peer import PeerConnection
from yzcore.runtime.replies import PUBSUB_RIDS, Replies
from yzcore.runtime.reporting import limit_fields
from yzcore.runtime.subscription import Channel, PublishResult, Subscription
from yzcore.wire import MAX_PUBLICATION, ErrorCode, NodeInfo, publication_fits

__all__ = ["PubSub", "PublishResult", "Subscription"]

log = logging.getLogger("yzcore.pubsub")

REPLY_TIMEOUT = 5.0  #: seconds a home has to answer
HOMES_TTL = 5.0  #: seconds one lookup of a channel's homes serves the publishes on it
RETRY_MAX = 30.0  #: longest wait between two attempts to find a home again
_SERVER_ROLES = ("node", "bridge")


def _limiter() -> RateLimiter:
    """Subscribes and publishes one peer may ask of a home: 50/s, bursts of 100."""
    return RateLimiter(rate=50.0, burst=100.0, global_rate=2000.0, global_burst=4000.0,
                       bypass_rate=0.0, bypass_burst=0.0, max_keys=4096)


class _State:
    __slots__ = ("channels", "homes", "seen", "replies", "limiter", "expiring", "looked",
                 "looking", "home_refs")

    def __init__(self) -> None:
        self.channels: dict[bytes, Channel] = {}  # what this node subscribes to
        self.looked: dict[bytes, tuple[float, list[NodeInfo] | PubSubFailed]] = {}  # (until, homes)
        self.looking: dict[bytes, anyio.Event] = {}  # key -> set when its lookup is over
        self.home_refs: dict[bytes, int] = {}  # home -> how many of our channels it is home of
        self.homes = ChannelHomes()  # what it holds for others
        self.seen = Seen()  # messages its subscriptions have had
        self.replies = Replies(first=PUBSUB_RIDS)
        self.limiter = _limiter()
        self.expiring = False  # the loop that lets expired subscriptions go runs


class PubSub:
    """Pubsub channels (a mixin of :class:`~yzcore.runtime.node.Node`)."""

    id: bytes
    role: str
    address: str | None
    conns: dict[bytes, PeerConnection]
    engine: Any
    _tg: Any
    _stopping: bool
    _ps: _State | None = None  # made when first needed

    # -- the user's side ---------------------------------------------------------

    async def subscribe(self, name: str, *, buffer: int = 256,
                        ttl: float = DEFAULT_TTL) -> Subscription:
        """Subscribe to the channel ``name``; returns once a home holds the subscription.

        The first subscription anywhere creates the channel (B7.5). The node
        keeps it up by itself: it renews it every ``ttl / 2`` seconds, looking
        the homes up afresh, and at once when a home's connection closes.
        More subscriptions to a channel this node already subscribes to share
        its network subscription, and return as soon as the first one has.

        Raises:
            PubSubFailed: no home could be found or none took the subscription.
            InvalidArgument: a bad channel name, ``buffer`` or ``ttl``.
        """
        key = channel_key(name)
        if type(buffer) is not int or buffer < 1 or not MIN_TTL <= ttl <= MAX_TTL:
            raise InvalidArgument(f"buffer must be an integer >= 1 and ttl from {MIN_TTL:g} to "
                                  f"{MAX_TTL:g} s, got {buffer!r} and {ttl!r}.")
        if self.engine is None:
            raise RuntimeError("the node is not started; call `await node.start(task_group)` first")
        ps = self._ps_state()
        ch = ps.channels.get(key)
        if ch is None:
            ch = Channel(name, key)
            self._tg.start_soon(self._ps_channel, ch, ttl)
            ps.channels[key] = ch
        sub = Subscription(self, ch, buffer)
        ch.subs.add(sub)
        try:
            await ch.ready.wait()
        except BaseException:  # cancelled: nobody will read it
            self._ps_leave(sub)
            raise
        if ch.error is not None:
            ch.subs.discard(sub)
            raise ch.error
        return sub

    async def publish(self, name: str, data: str) -> PublishResult:
        """Publish ``data`` on the channel ``name``: every subscriber receives it once.

        Raises:
            PubSubFailed: no home could be found or none took the message.
            InvalidArgument: a bad channel name, or ``data`` that is not a
                string of at most 16 KiB as JSON.
        """
        key = channel_key(name)
        if not publication_fits(data):
            size = f" of {len(data)} characters" if isinstance(data, str) else ""
            raise InvalidArgument(f"data must be a string of at most {MAX_PUBLICATION} bytes "
                                  "as JSON (UTF-8, escapes counted), got "
                                  f"{type(data).__name__}{size}.")
        homes = await self._ps_homes(key, name)
        mid = os.urandom(16)
        self._ps_local(key, mid, self.id, data)  # this node's own subscriptions
        counts: dict[bytes, int] = {}
        errors: list[wire.Message | None] = []

        async def one(home: NodeInfo) -> None:
            if home.id == self.id:
                counts[home.id] = self._ps_fanout(key, mid, self.id, data)
                return
            reply = await self._ps_ask(home, lambda rid: wire.Publish(rid, key, mid, data))
            if isinstance(reply, wire.PubSubOk):
                counts[home.id] = reply.count
            else:
                errors.append(reply)

        async with anyio.create_task_group() as tg:
            for home in homes:
                tg.start_soon(one, home)
        if not counts:
            raise self._ps_failure(f"no home of channel {name!r} took the message", errors)
        return PublishResult(mid, len(counts), max(counts.values()))

    # -- keeping a subscription up ----------------------------------------------------

    async def _ps_channel(self, ch: Channel, ttl: float) -> None:
        """Subscribe at the channel's homes, and again whenever it is due or one is lost."""
        ps = self._ps_state()
        retry = 1.0
        try:
            while ch.subs and not self._stopping:
                ch.wake = anyio.Event()
                try:
                    error = await self._ps_round(ch, ttl)
                except Exception as exc:  # a bug here must not take the node down  # noqa: BLE001
                    log.exception("pubsub round for %r failed", ch.name,
                                  extra={"code": ErrorCode.INTERNAL})
                    error = PubSubFailed(ErrorCode.INTERNAL, f"subscribing failed: {exc}")
                if not ch.ready.is_set():
                    ch.error = error
                    ch.ready.set()
                    if error is not None:
                        return
                if error is None:
                    retry, wait = 1.0, min(ttl / 2, 5.0) if ch.hurry else ttl / 2
                else:  # every home lost: look again soon, then less and less often
                    log.warning("%s", error, extra={"code": error.code})
                    wait, retry = retry, min(2 * retry, RETRY_MAX)
                with anyio.move_on_after(wait):
                    await ch.wake.wait()
                if ch.subs and ch.wake.is_set():
                    await anyio.sleep(0.2)  # a lost home: let the lookup learn it is gone
        finally:
            if ps.channels.get(ch.key) is ch:
                del ps.channels[ch.key]
            if not ch.ready.is_set():  # stopped before the first round was over
                ch.error = PubSubFailed(ErrorCode.SHUTTING_DOWN, f"the node stopped before "
                                        f"channel {ch.name!r} was subscribed")
            ch.ready.set()
            for sub in list(ch.subs):
                sub._send.close()
            for peer in list(ch.homes):
                self._ps_set_home(ch, peer, False)
                self._ps_let_go(peer, ch.key)

    async def _ps_round(self, ch: Channel, ttl: float) -> PubSubFailed | None:
        """One look for the homes and one subscribe at each; None when one holds it."""
        try:
            homes = await self._ps_homes(ch.key, ch.name, fresh=True)
        except PubSubFailed as exc:
            return exc  # (the homes it has keep it meanwhile)
        took: set[bytes] = set()
        errors: list[wire.Message | None] = []
        before = set(ch.homes)
        ch.hurry = False

        async def one(home: NodeInfo) -> None:
            reply = await self._ps_ask(home, lambda rid: wire.Subscribe(rid, ch.key, ttl))
            if isinstance(reply, wire.PubSubOk) and home.id in self.conns:
                took.add(home.id)
                self._ps_set_home(ch, home.id, True)  # at once: its deliveries count, it is held
                self._ps_hold(home.id)
            elif (isinstance(reply, wire.Error) and reply.code == ErrorCode.RATE_LIMITED
                  and home.id in before and home.id in self.conns):
                took.add(home.id)  # busy, and it holds us till the ttl: not a lost home
                ch.hurry = True
            else:
                errors.append(reply)

        async with anyio.create_task_group() as tg:
            for home in homes:
                if home.id != self.id:
                    tg.start_soon(one, home)
        ch.local = any(h.id == self.id for h in homes)
        for peer in before - took:  # no longer a home: let it go
            self._ps_set_home(ch, peer, False)
            self._ps_let_go(peer, ch.key)
        if ch.homes or ch.local:
            return None
        return self._ps_failure(f"no home of channel {ch.name!r} took the subscription", errors)

    async def _ps_homes(self, key: bytes, name: str, *, fresh: bool = False) -> list[NodeInfo]:
        """The channel's homes: the server nodes closest to its key, this one among them if
        it is one. A lookup serves the publishes of the next ``HOMES_TTL`` seconds (one that
        failed, of the next second), and publishes at once wait for one lookup (``fresh``:
        look again, for a subscription): a lookup each held a node to 12 publishes a
        second, its peers refusing the rest."""
        ps = self._ps_state()
        while not fresh and (pending := ps.looking.get(key)) is not None:
            await pending.wait()
        cached = None if fresh else ps.looked.get(key)
        if cached is None or cached[0] <= anyio.current_time():
            done = ps.looking[key] = anyio.Event()
            try:
                found: list[NodeInfo] | PubSubFailed = await self._ps_lookup(key, name)
            except PubSubFailed as exc:
                found = exc
            finally:
                if ps.looking.get(key) is done:
                    del ps.looking[key]
                done.set()
            now = anyio.current_time()
            if len(ps.looked) >= 1024:  # one entry a channel published on lately
                ps.looked = {k: v for k, v in ps.looked.items() if v[0] > now}
            cached = ps.looked[key] = (now + (1.0 if isinstance(found, PubSubFailed)
                                              else HOMES_TTL), found)
        if isinstance(cached[1], PubSubFailed):  # each caller its own (a traceback each)
            raise PubSubFailed(cached[1].code, cached[1].args[0])
        return cached[1]

    async def _ps_lookup(self, key: bytes, name: str) -> list[NodeInfo]:
        found = await self.find_node(key)  # type: ignore[attr-defined]
        candidates = list(found.nodes)
        if not candidates and found.failed:  # this node alone is no home: nobody answered
            limited = found.limited == found.failed
            raise PubSubFailed(
                ErrorCode.RATE_LIMITED if limited else ErrorCode.PEER_UNREACHABLE,
                f"no peer asked for the homes of channel {name!r} answered ({found.failed} "
                + ("refused for their rate limits" if limited else "failed") + "); retry shortly")
        if self.role in _SERVER_ROLES and self.address:  # this node may be a home itself
            candidates.append(NodeInfo(self.id, self.address, self.role))
        homes = homes_for(key, candidates)
        if not homes:
            raise PubSubFailed(ErrorCode.NO_PEERS, f"no server node found to hold channel "
                               f"{name!r}: this node has no peers yet")
        return homes

    async def _ps_ask(self, home: NodeInfo, make: Any) -> wire.Message | None:
        pc = self.conns.get(home.id)
        if pc is None:
            await self._dial(home)  # type: ignore[attr-defined]
            pc = self.conns.get(home.id)
            if pc is None:
                return None
        return await self._ps_state().replies.ask(pc, make, REPLY_TIMEOUT)

    @staticmethod
    def _ps_failure(what: str, errors: list[wire.Message | None]) -> PubSubFailed:
        refusal = next((e for e in errors if isinstance(e, wire.Error)), None)
        if refusal is not None:
            return PubSubFailed(refusal.code, f"{what}: {refusal.message}")
        return PubSubFailed(ErrorCode.TIMEOUT, f"{what}: no home answered within "
                            f"{REPLY_TIMEOUT:g} s")

    def _ps_let_go(self, home: bytes, key: bytes) -> None:
        """Withdraw from ``home`` (nobody waits for its reply); release its connection
        unless something else holds it. The caller has taken it out of the homes."""
        pc = self.conns.get(home)
        if pc is not None:
            pc.send(wire.Unsubscribe(self._ps_state().replies.next_rid(), key))
        self._ps_hold(home)

    def _ps_leave(self, sub: Subscription) -> None:
        ps = self._ps
        ch = sub._channel
        if ps is not None and sub in ch.subs:
            ch.subs.discard(sub)
            if not ch.subs:
                ch.wake.set()

    # -- messages ------------------------------------------------------------------

    def _pubsub(self, pc: PeerConnection, msg: wire.Message) -> None:
        """A pubsub message from a verified peer."""
        ps = self._ps_state()
        peer = pc.peer.id
        if isinstance(msg, wire.PubSubOk):
            ps.replies.answer(msg, peer)
            return
        if isinstance(msg, wire.Delivery):
            ch = ps.channels.get(msg.channel)
            if ch is not None and peer in ch.homes:  # only a home we asked may push
                self._ps_local(msg.channel, msg.mid, msg.sender, msg.data)
            return
        assert isinstance(msg, (wire.Subscribe, wire.Unsubscribe, wire.Publish))
        if self.role not in _SERVER_ROLES:
            pc.send(wire.Error(msg.rid, ErrorCode.WRONG_ROLE, "this is a browser-class peer: it "
                               "holds no channels; ask the server nodes closest to the channel"))
            return
        now = anyio.current_time()
        d = ps.limiter.check(peer, "pubsub", now)
        if not d.allowed:
            text = (f"{d.scope} limit of {d.limit:g} pubsub requests/s (burst {d.burst:g}) "
                    f"reached; retry in {d.retry_after:.3f}s")
            self._record(ErrorCode.RATE_LIMITED, peer, text,  # type: ignore[attr-defined]
                         throttle=True,  # a flood: a log line a second, each one counted
                         fields=limit_fields("pubsub", d.scope, d.limit, d.burst, d.retry_after))
            pc.send(wire.Error(msg.rid, ErrorCode.RATE_LIMITED, text, d.retry_after))
            return
        if isinstance(msg, wire.Subscribe):
            held = ps.homes.subscribe(peer, msg.channel, msg.ttl, now)
            if isinstance(held, tuple):
                pc.send(wire.Error(msg.rid, held[0], held[1]))
                return
            pc.send(wire.PubSubOk(msg.rid, held))
            if not ps.expiring:
                ps.expiring = True
                self._tg.start_soon(self._ps_expire)
        elif isinstance(msg, wire.Unsubscribe):
            pc.send(wire.PubSubOk(msg.rid, ps.homes.unsubscribe(peer, msg.channel)))
        else:
            pc.send(wire.PubSubOk(msg.rid, self._ps_fanout(msg.channel, msg.mid, peer, msg.data)))
        self._ps_hold(peer)

    async def _ps_expire(self) -> None:
        """While this node holds subscriptions: every second, let go of those that ran out."""
        ps = self._ps_state()
        try:
            while ps.homes.holding():
                await anyio.sleep(1.0)
                for freed in ps.homes.expire(anyio.current_time()):
                    self._ps_hold(freed)
        finally:
            ps.expiring = False

    def _ps_fanout(self, key: bytes, mid: bytes, sender: bytes, data: str) -> int:
        """As a home: pass a message on to the subscribers held here; how many."""
        ps = self._ps_state()
        now = anyio.current_time()
        if not ps.homes.seen.add(mid, now):
            return 0  # a copy (the publisher retried)
        self._ps_local(key, mid, sender, data)
        delivery = wire.Delivery(key, mid, sender, data)
        sent = 0
        for peer in ps.homes.subscribers(key, now):
            pc = self.conns.get(peer)
            if peer != sender and pc is not None and pc.send(delivery):
                sent += 1
        return sent

    def _ps_local(self, key: bytes, mid: bytes, sender: bytes, data: str) -> None:
        """Hand a message to this node's own subscriptions, once."""
        ps = self._ps_state()
        ch = ps.channels.get(key)
        if ch is not None and ch.subs and ps.seen.add(mid, anyio.current_time()):
            pub = Publication(ch.name, data, sender, mid)
            for sub in list(ch.subs):
                sub._deliver(pub)

    # -- connections -----------------------------------------------------------------

    def _ps_answer(self, msg: wire.Error, peer: bytes) -> bool:
        """An error reply to one of pubsub's requests (False: someone else's)."""
        return self._ps is not None and self._ps.replies.answer(msg, peer)

    def _ps_hold(self, peer: bytes) -> None:
        """Hold the connection to ``peer`` open while pubsub needs it, and only then."""
        ps = self._ps
        if ps is None or self.engine is None:
            return
        held = ps.homes.holds(peer) or any(peer in ch.homes for ch in ps.channels.values())
        self.engine.hold(peer, held)

    def _ps_closed(self, peer: bytes) -> None:
        """``peer``'s connection closed: its subscriptions here go; ours there are lost."""
        ps = self._ps
        if ps is None:
            return
        ps.homes.drop_peer(peer)
        ps.replies.wake_peer(peer)
        for ch in ps.channels.values():
            if peer in ch.homes:
                self._ps_set_home(ch, peer, False)
                ch.wake.set()

    def _ps_home(self, peer: bytes, key: bytes | None = None) -> bool:
        """Whether ``peer`` is a home of the channel ``key`` (None: of any) this node
        subscribes to."""
        if self._ps is None:
            return False
        if key is not None:
            ch = self._ps.channels.get(key)
            return ch is not None and peer in ch.homes
        return peer in self._ps.home_refs  # (on every frame: no pass over the channels)

    def _ps_set_home(self, ch: Channel, peer: bytes, home: bool) -> None:
        """Make ``peer`` one of ``ch``'s homes, or no longer, counting each peer's channels."""
        refs = self._ps_state().home_refs
        if home and peer not in ch.homes:
            ch.homes.add(peer)
            refs[peer] = refs.get(peer, 0) + 1
        elif not home and peer in ch.homes:
            ch.homes.discard(peer)
            if refs[peer] > 1:
                refs[peer] -= 1
            else:
                del refs[peer]

    def _ps_state(self) -> _State:
        if self._ps is None:
            self._ps = _State()
        return self._ps

    def pubsub_status(self) -> dict[str, int]:
        """Channels this node subscribes to, and what it holds as a home (``/status``)."""
        ps = self._ps
        if ps is None:
            return {"subscribed": 0, "home_channels": 0, "home_subscriptions": 0}
        channels, subscriptions = ps.homes.stats()
        return {"subscribed": len(ps.channels), "home_channels": channels,
                "home_subscriptions": subscriptions}

