"""The simulator's network: many engines wired together in memory, on a virtual clock.

No sockets and no real time: every message, dial and close is an event on a
heap, delivered after a random latency drawn from a seeded generator, so a
run is reproducible from its seed. Handshakes are the runtime's business;
here a dial simply opens a verified connection on both sides.

:class:`Network` carries the engines' actions and nothing else;
:class:`yzcore.sim.world.World` adds the roles (bootstrap server, bridges),
recovery, partitions, NAT, crashes and health on top.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from yzcore import wire
from yzcore.protocol.actions import Close, Dial, Done, Send
from yzcore.protocol.engine import Engine, EngineConfig
from yzcore.wire import NodeInfo

__all__ = ["Network"]

TCP_MIN_RTO = 0.2  # Linux's floor of the retransmission timeout, seconds
TCP_SYN_RTO = 1.0  # and its initial one, which a lost SYN waits
HANDSHAKE_TIMEOUT = 5.0  # the runtime's: a dial to a node that accepts but never answers fails then
DIAL_TIMEOUT = 5.0  # the runtime's: a dial whose SYNs nobody answers (the host is gone) fails then
# A host that vanished is dropped by each peer's kernel once nothing was acknowledged for
# 4 s (the ws transport's dead_peer_timeout); it last heard from it up to 1 s before
# (probes once a second after 1 s of quiet), so 3-4 s after the host went; with data
# in flight 4-4.5 s (measured: tests/runtime/test_dead_peers.py).
DEAD_HOST_CLOSE = (3.0, 4.5)


class Network:
    """``n`` engines, their links, and a virtual clock.

    Args:
        n: Number of nodes.
        seed: Seeds ids, latencies, losses and every engine's rng.
        latency: (low, high) one-way latency in seconds, uniform.
        loss: Probability that a packet is lost. Every yzcore transport is a
            reliable stream, so, as TCP does, a lost packet is resent after a
            retransmission timeout (200 ms, doubling each time) and nothing
            behind it on its connection overtakes it; a lost SYN costs a dial
            a second, then two, then four.
        config: Engine configuration for every node.
        codec: Round-trip every message through the wire codec.
    """

    def __init__(self, n: int, seed: int = 0, latency: tuple[float, float] = (0.005, 0.02),
                 loss: float = 0.0, config: EngineConfig | None = None, codec: bool = False) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency = latency
        self.loss = loss
        self.codec = codec
        self.config = config or EngineConfig()
        self.engines: list[Engine] = []
        self.alive: list[bool] = []
        # Bumped when a node dies: an event scheduled for an earlier life of a
        # node (a message, a dial's outcome, a close) never reaches a later one.
        self.epoch: list[int] = []
        self.index: dict[bytes, int] = {}
        self.adj: list[set[int]] = []  #: open connections: j in adj[i] iff i and j are linked
        # A hung node (since when, else None) is up but does nothing: it reads
        # nothing, answers nothing, fires no timer (World.hang, World.resume).
        self.hung: list[float | None] = []
        self.vanished: set[int] = set()  #: nodes whose host is gone without closing anything
        self.done: dict[tuple[int, int], Done] = {}
        self.messages = 0
        self.refused = 0  #: RATE_LIMITED answers sent
        self._in_order: dict[tuple[int, int], float] = {}  # with loss: last delivery on each connection
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._timer_at: dict[int, float] = {}
        for _ in range(n):
            self.add_node()

    # -- building -------------------------------------------------------------

    def add_node(self) -> int:
        i = len(self.engines)
        node_id = self.rng.randbytes(32)
        info = NodeInfo(node_id, f"mem://{i}", "node")
        self.engines.append(Engine(info, self.now, random.Random(self.rng.random()), self.config))
        self.alive.append(True)
        self.epoch.append(0)
        self.adj.append(set())
        self.hung.append(None)
        self.index[node_id] = i
        self._schedule_timer(i)
        return i

    def join_all(self, spread: float = 1.0) -> None:
        """Node 0 starts alone; every other joins through a random earlier node."""
        for i in range(1, len(self.engines)):
            via = self.rng.randrange(i)
            at = self.now + spread * i / len(self.engines)
            self._at(at, lambda i=i, via=via: self.bootstrap(i, via))
        self.run(spread + 5.0)

    def bootstrap(self, i: int, via: int) -> None:
        self.engines[i].bootstrap([self.engines[via].info], self.now)
        self._flush(i)

    # -- running --------------------------------------------------------------

    def run(self, duration: float) -> None:
        """Process events for ``duration`` virtual seconds."""
        end = self.now + duration
        heap, pop = self._heap, heapq.heappop
        while heap and heap[0][0] <= end:
            at, _, fn = pop(heap)
            if at > self.now:
                self.now = at
            fn()
        self.now = end

    def op(self, i: int, kind: str, *args: object, limit: float = 60.0) -> Done:
        """Start ``engine.kind(*args, now)`` on node ``i`` and run until it is done."""
        op_id = getattr(self.engines[i], kind)(*args, self.now)
        self._flush(i)
        end = self.now + limit
        while (i, op_id) not in self.done:
            if not self._heap or self._heap[0][0] > end:
                raise AssertionError(f"{kind} on node {i} did not finish within {limit}s")
            at, _, fn = heapq.heappop(self._heap)
            self.now = max(self.now, at)
            fn()
        return self.done.pop((i, op_id))

    def kill(self, i: int) -> None:
        """Node ``i``'s process dies: its host resets the connections, dials to it are refused."""
        self._die(i, self._delay)

    def vanish(self, i: int) -> None:
        """Node ``i``'s host is gone (power lost, the path cut): nothing is closed. Each
        peer's kernel drops its connection 3-4.5 s later (``DEAD_HOST_CLOSE``); meanwhile
        what it sends is lost, and dials to it time out (``DIAL_TIMEOUT``)."""
        self._die(i, lambda: self.rng.uniform(*DEAD_HOST_CLOSE))
        self.vanished.add(i)

    def _die(self, i: int, noticed: Callable[[], float]) -> None:
        self.alive[i] = False
        self.epoch[i] += 1
        for b in sorted(self.adj[i]):
            self._unlink(i, b)
            self._at(self.now + noticed(), self._once(b, lambda o=b: o not in self.adj[i]
                                                      and self._closed(o, i, error=True)))

    # -- queries ----------------------------------------------------------------

    def live(self) -> list[int]:
        return [i for i, ok in enumerate(self.alive) if ok]

    def oracle(self, target: bytes, k: int, asker: int | None = None) -> list[bytes]:
        """The k live ids closest to ``target`` by brute force, the asker excluded."""
        t = int.from_bytes(target, "big")
        ids = [self.engines[i].info.id for i in self.live() if i != asker]
        return sorted(ids, key=lambda x: int.from_bytes(x, "big") ^ t)[:k]

    def connections(self, i: int) -> int:
        return len(self.engines[i].connected())

    def linked(self, i: int, j: int) -> bool:
        """Whether a connection between ``i`` and ``j`` is open."""
        return j in self.adj[i]

    def _link(self, i: int, j: int) -> None:
        self.adj[i].add(j)
        self.adj[j].add(i)

    def _unlink(self, i: int, j: int) -> None:
        self.adj[i].discard(j)
        self.adj[j].discard(i)
        if self.loss:
            self._in_order.pop((i, j), None)
            self._in_order.pop((j, i), None)

    # -- internals ----------------------------------------------------------------

    def _delay(self) -> float:
        low, high = self.latency  # random.uniform's formula, without its call
        return low + (high - low) * self.rng.random()

    def _at(self, at: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, fn))

    def _schedule_timer(self, i: int) -> None:
        at = self.engines[i].get_timer()
        if self._timer_at.get(i) != at:
            self._timer_at[i] = at
            self._at(at, lambda: self._fire(i, at))

    def _fire(self, i: int, at: float) -> None:
        if self._timer_at.get(i) != at or not self.alive[i] or self.hung[i] is not None:
            return
        del self._timer_at[i]
        self.engines[i].handle_timer(self.now)
        self._flush(i)

    def _flush(self, i: int) -> None:
        """Carry out node ``i``'s actions."""
        if not self.alive[i] or self.hung[i] is not None:
            return
        engine = self.engines[i]
        while True:
            batch = engine.actions()
            if not batch:
                break
            self._carry_out(i, batch)
        self._schedule_timer(i)

    def _carry_out(self, i: int, batch: list) -> None:
        for action in batch:
            kind = type(action)  # actions are final classes: no isinstance chain on the hot path
            if kind is Send:
                self._send(i, action)  # type: ignore[arg-type]
            elif kind is Dial:
                self._dial(i, action.node)  # type: ignore[attr-defined]
            elif kind is Close:
                self._close(i, action.peer)  # type: ignore[attr-defined]
            elif kind is Done:
                self.done[(i, action.op)] = action  # type: ignore[index]

    def _send(self, i: int, action: Send) -> None:
        j = self.index[action.peer]
        if j not in self.adj[i]:
            return
        self.messages += 1
        if type(action.message) is wire.Error and action.message.code == wire.ErrorCode.RATE_LIMITED:
            self.refused += 1
        msg = wire.decode(wire.encode(action.message)) if self.codec else action.message
        at = self.now + self._delay()
        if self.loss:
            at = self._resent(i, j, at)
        ei, ej = self.epoch[i], self.epoch[j]  # one closure a message: this is the hot path
        self._at(at,  # not delivered into another life of either end
                 lambda: ei == self.epoch[i] and ej == self.epoch[j] and self._deliver(j, i, msg))

    def _resent(self, i: int, j: int, at: float) -> float:
        """When a message sent on the connection i -> j arrives, packets being lost."""
        rto = TCP_MIN_RTO
        while self.rng.random() < self.loss:
            at += rto
            rto *= 2
        at = max(at, self._in_order.get((i, j), 0.0))  # in order: behind whatever is resent
        self._in_order[(i, j)] = at
        return at

    def _deliver(self, j: int, i: int, msg: wire.Message) -> None:
        if not self.alive[j] or i not in self.adj[j] or self.hung[j] is not None:
            return
        self.engines[j].receive(self.engines[i].info.id, msg, self.now)
        self._flush(j)

    def _once(self, i: int, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn``, run only if node ``i`` is still in the life it was in when scheduled."""
        epoch = self.epoch[i]
        return lambda: fn() if self.epoch[i] == epoch else None

    def reachable(self, i: int, j: int) -> bool:
        """Whether node ``i`` can open a connection to node ``j`` (World: partitions, NAT)."""
        return self.alive[j]

    def _dial(self, i: int, node: NodeInfo) -> None:
        j = self.index.get(node.id)
        rtt = 2 * self._delay()
        syn_rto = TCP_SYN_RTO
        while self.loss and self.rng.random() < self.loss:  # the SYN or its answer lost
            rtt += syn_rto
            syn_rto *= 2
        if j is None or not self.reachable(i, j) or self.hung[j] is not None:
            if j in self.vanished:
                wait = DIAL_TIMEOUT  # its SYNs go unanswered
            elif j is not None and self.hung[j] is not None:
                wait = HANDSHAKE_TIMEOUT  # accepted, but no hello back
            else:
                wait = rtt  # refused
            self._at(self.now + wait, self._once(i, lambda: self._dial_failed(i, node.id)))
            return
        self._at(self.now + rtt, self._once(i, lambda: self._open(i, j)))

    def _dial_failed(self, i: int, peer: bytes) -> None:
        if self.alive[i] and self.hung[i] is None:
            self.engines[i].dial_failed(peer, self.now)
            self._flush(i)

    def _open(self, i: int, j: int) -> None:
        if self.hung[i] is not None:
            return  # the dialer hangs: it never finishes its hello (resume() fails the dial)
        if not (self.alive[i] and self.reachable(i, j)) or self.hung[j] is not None:
            if self.alive[i]:
                self._dial_failed(i, self.engines[j].info.id)
            return
        fresh = j not in self.adj[i]
        self.opened(i, j)
        self._link(i, j)
        self.engines[i].connection_opened(self.engines[j].info, self.now, outbound=True)
        if fresh:
            self.engines[j].connection_opened(self.engines[i].info, self.now, outbound=False)
            self._flush(j)
        self._flush(i)

    def opened(self, i: int, j: int) -> None:
        """A connection from ``i`` to ``j`` opened (a hook for the trace)."""

    def _close(self, i: int, peer: bytes) -> None:
        j = self.index[peer]
        self._unlink(i, j)
        self.engines[i].connection_closed(peer, self.now)
        self._at(self.now + self._delay(), self._once(j, lambda: self._closed(j, i, error=False)))

    def _closed(self, j: int, i: int, error: bool) -> None:
        if self.alive[j] and self.hung[j] is None:
            self.engines[j].connection_closed(self.engines[i].info.id, self.now, error=error)
            self._flush(j)
