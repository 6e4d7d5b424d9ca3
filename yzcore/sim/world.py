"""The simulated world: nodes with roles, recovery, health, and the things that go wrong.

On top of :class:`~yzcore.sim.network.Network` (engines, links, a virtual
clock) a :class:`World` adds what the runtime adds around the engine, using
the same sans-I/O parts the runtime uses:

* bootstrap servers: each a :class:`~yzcore.bootstrap.directory.Directory`,
  fed by the heartbeats of the nodes linked to it (every ``heartbeat``
  seconds); each can be taken down and up, and a node whose server is down
  links to the next one, in the order of its ``--bootstrap`` URLs;
* bridges: nodes (role ``bridge``) through which NAT nodes are reachable;
* recovery: one :class:`~yzcore.protocol.recovery.RecoveryPolicy` per node;
  its steps (cache, bridges, bootstrap) are carried out here as the runtime
  carries them out over sockets; a new node joins the same way;
* health as ARCHITECTURE §4 defines it: ``min(3, N-1)`` live connections and
  a find_node probe (every ``probe_interval``) that finished within 2 s;
* partitions between groups, NAT (no inbound connections), crashes and
  restarts with the peer cache a node persisted, and hangs: a node that stops
  answering without closing anything, whose connections its peers' keepalive
  closes (10–20 s, the WebSocket transport's defaults).

Every random choice comes from the world's seeded generator, and every event
that changes the network feeds :attr:`World.trace`: the same seed gives the
same digest.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field

from yzcore import ratelimit
from yzcore.bootstrap.directory import Directory
from yzcore.protocol.actions import Close, Done
from yzcore.protocol.engine import Engine, EngineConfig
from yzcore.protocol.recovery import SOURCES, RecoveryConfig, RecoveryPolicy
from yzcore.sim.network import Network
from yzcore.wire import NodeInfo

__all__ = ["Agent", "World"]

INTRODUCTIONS = 8  # peers a node asks for, as in the runtime
SEED_DIALS = 8  # peers dialled at once by one recovery step
KEEPALIVE = (10.0, 20.0)  # a hung peer's connection closes this long after it stopped answering


@dataclass(slots=True)
class Agent:
    """What the runtime keeps beside a node's engine."""

    recovery: RecoveryPolicy
    cache: list[bytes] = field(default_factory=list)  #: the peer cache "on disk"
    bridges: list[int] = field(default_factory=list)  #: bridges learnt from introductions
    step: str | None = None  #: the recovery step in flight
    probe_ok: bool = False  #: the last find_node probe finished within 2 s
    probe_op: int | None = None
    probe_started: float = 0.0
    next_probe: float = 0.0
    next_beat: float = 0.0
    joined: bool = False
    server: int | None = None  #: the bootstrap server its link is open to
    attempts: list[float] = field(default_factory=list)  #: when each recovery attempt started
    failed_at: list[float] = field(default_factory=list)  #: when each attempt that failed ended
    recovered_by: str | None = None  #: the source of the last attempt that worked
    next_relay: float = 0.0  #: a NAT node without a bridge asks for bridges again then
    relay_retry: float = 1.0


class World(Network):
    """A simulated network with a bootstrap server, bridges and recovering nodes.

    Args:
        n: Nodes to create (none joined yet: see :meth:`start`).
        seed: The only randomness.
        latency: One-way latency bounds in seconds, uniform.
        loss: Probability that a packet is lost (resent as TCP does: see Network).
        config: Every engine's configuration.
        recovery: Every node's recovery configuration.
        bridges: How many of the nodes are bridges (the first ones).
        servers: How many bootstrap servers (a node's URLs, in this order).
        limits: Every node's rate limits (:class:`~yzcore.ratelimit.RateLimiter`
            arguments) instead of the defaults.
        nat: How many of the nodes accept no inbound connections (the last ones).
        heartbeat: Seconds between a node's heartbeats to the bootstrap server.
        probe_interval: Seconds between a node's health probes.
    """

    def __init__(self, n: int, seed: int = 0, *, latency: tuple[float, float] = (0.03, 0.07),
                 loss: float = 0.0, config: EngineConfig | None = None,
                 recovery: RecoveryConfig | None = None, bridges: int = 0, nat: int = 0,
                 servers: int = 1, limits: dict[str, float] | None = None,
                 heartbeat: float = 5.0, probe_interval: float = 30.0) -> None:
        self.recovery_config = recovery or RecoveryConfig()
        self.limits = limits
        self.heartbeat = heartbeat
        self.probe_interval = probe_interval
        self.agents: list[Agent] = []
        self.group: list[int] = []
        self.nat: list[bool] = []
        self.bridges: set[int] = set()
        self._trace = hashlib.sha256()
        self.bootstrap_hits: list[float] = []  # when a node reached a bootstrap server
        super().__init__(0, seed=seed, latency=latency, loss=loss, config=config)
        self.directories = [Directory(random.Random(self.rng.random()), node_ttl=3 * heartbeat)
                            for _ in range(servers)]
        self.server_up = [True] * servers
        self._need = 0  # min(3, live nodes - 1), once a tick
        self.keepalive_closed: list[tuple[int, int]] = []  #: (node, hung peer) it gave up on
        for i in range(n):
            self.add_node(role="bridge" if i < bridges else "node", nat=i >= n - nat)
        self._at(1.0, self._tick)

    # -- building -------------------------------------------------------------

    def add_node(self, role: str = "node", nat: bool = False) -> int:  # type: ignore[override]
        i = len(self.engines)
        node_id = self.rng.randbytes(32)
        addr = f"sim-nat://{i}" if nat else f"sim://{i}"  # NAT: reachable through a bridge only
        info = NodeInfo(node_id, addr, role)
        self.engines.append(self._engine(info))
        self.alive.append(False)  # until started
        self.epoch.append(0)
        self.adj.append(set())
        self.hung.append(None)
        self.index[node_id] = i
        self.group.append(0)
        self.nat.append(nat)
        if role == "bridge":
            self.bridges.add(i)
        self.agents.append(Agent(RecoveryPolicy(self.recovery_config,
                                                random.Random(self.rng.random()))))
        return i

    def _engine(self, info: NodeInfo) -> Engine:
        engine = Engine(info, self.now, random.Random(self.rng.random()), self.config)
        if self.limits is not None and engine.limiter is not None:
            engine.limiter = ratelimit.RateLimiter(**self.limits)
        return engine

    def start(self, i: int) -> None:
        """Node ``i`` starts: it joins as the runtime does, through its recovery steps."""
        self.alive[i] = True
        self.vanished.discard(i)  # its host is back
        agent = self.agents[i]
        delay = agent.recovery.start(self.now)
        agent.next_beat = self.now + delay + self.rng.uniform(0, self.heartbeat)
        agent.next_probe = self.now + self.rng.uniform(0, self.probe_interval)
        self._note("start", i)
        self._schedule_timer(i)
        self._at(self.now + delay, lambda: self._join(i, agent))

    def _join(self, i: int, agent: Agent) -> None:
        """Joining is the first attempt, whatever comes in meanwhile."""
        if self.alive[i] and self.agents[i] is agent and agent.step is None:
            agent.recovery.lost_since = self.now - self.recovery_config.lost_grace
            step = agent.recovery.next_step(self.now)
            if step is not None:
                self._step(i, step)

    def start_among(self, nodes: list[int]) -> None:
        """Start ``nodes`` as a network of their own: each joins through the first, as
        ``--peer`` does, without asking the bootstrap server (they still heartbeat)."""
        self.start(nodes[0])
        for i in nodes[1:]:
            self.start(i)
            agent = self.agents[i]
            agent.recovery.joined(True, self.now)
            self._open(i, nodes[0])
            self.engines[i].bootstrap([self.engines[nodes[0]].info], self.now)
            self._flush(i)

    def crash(self, i: int) -> None:
        """Node ``i`` dies at once; its peers see the connections drop."""
        self._note("crash", i)
        self.kill(i)
        self.agents[i].step = None

    def vanish(self, i: int) -> None:
        """Node ``i``'s host is gone without closing anything (see Network.vanish)."""
        self._note("vanish", i)
        super().vanish(i)
        self.agents[i].step = None

    def restart(self, i: int) -> None:
        """Node ``i`` comes back with its key and its peer cache, nothing else."""
        old = self.engines[i].info
        self.engines[i] = self._engine(old)
        old_agent = self.agents[i]
        self.agents[i] = Agent(RecoveryPolicy(self.recovery_config, random.Random(self.rng.random())),
                               cache=old_agent.cache, bridges=old_agent.bridges)
        self._timer_at.pop(i, None)
        self.start(i)

    def hang(self, i: int) -> None:
        """Node ``i`` stops answering without closing anything (a frozen process, whose
        kernel still answers TCP's probes): its peers' keepalive pings close each
        connection after 10–20 s. (A host that vanishes is found sooner, by the
        kernel's 4 s timeout; the runtime's test of it is in tests/runtime.)"""
        self._note("hang", i)
        since = self.hung[i] = self.now
        for b in sorted(self.adj[i]):
            self._at(self.now + self.rng.uniform(*KEEPALIVE),
                     lambda b=b: self.hung[i] == since and self._keepalive_closed(i, b))

    def _keepalive_closed(self, i: int, b: int) -> None:
        if b in self.adj[i]:
            self._unlink(i, b)
            if self.hung[b] is None:  # a hung one finds out when it goes on (resume)
                self.keepalive_closed.append((b, i))
            self._closed(b, i, error=True)

    def resume(self, i: int) -> None:
        """A hung node goes on: it finds the connections closed meanwhile closed, and the
        dials it had in flight failed."""
        self._note("resume", i)
        self.hung[i] = None
        engine = self.engines[i]
        for peer_id in engine.connected():
            if self.index[peer_id] not in self.adj[i]:
                engine.connection_closed(peer_id, self.now, error=True)
        for peer_id, peer in list(engine.peers.items()):
            if peer.dialing:
                engine.dial_failed(peer_id, self.now)
        self.agents[i].step = None
        self._timer_at.pop(i, None)
        self._flush(i)

    @property
    def bootstrap_up(self) -> bool:
        """Whether any bootstrap server is up; setting it takes every one down or up."""
        return any(self.server_up)

    @bootstrap_up.setter
    def bootstrap_up(self, up: bool) -> None:
        self.server_up = [up] * len(self.server_up)

    def _server_of(self, agent: Agent) -> int | None:
        """The server the node's link is open to: its own while that is up, else the next
        one up in URL order (each a new connection, counted in ``bootstrap_hits``)."""
        if agent.server is not None and self.server_up[agent.server]:
            return agent.server
        count = len(self.server_up)
        first = 0 if agent.server is None else agent.server + 1
        for s in (x % count for x in range(first, first + count)):
            if self.server_up[s]:
                agent.server = s
                self.bootstrap_hits.append(self.now)
                return s
        agent.server = None
        return None

    def partition(self, groups: list[list[int]]) -> None:
        """Split the network: nodes in different groups cannot reach each other."""
        for g, members in enumerate(groups):
            for i in members:
                self.group[i] = g
        for a, near in enumerate(self.adj):
            for b in sorted(near):
                if a < b and self.group[a] != self.group[b]:
                    self._cut(a, b)
        self._note("partition", len(groups))

    def heal(self) -> None:
        self.group = [0] * len(self.group)
        self._note("heal", 0)

    def _cut(self, a: int, b: int) -> None:
        self._unlink(a, b)
        for x, y in ((a, b), (b, a)):
            self._at(self.now + self._delay(), lambda x=x, y=y: self._closed(x, y, error=True))

    # -- reachability -------------------------------------------------------------

    def reachable(self, i: int, j: int) -> bool:
        if not self.alive[j] or self.group[i] != self.group[j]:
            return False
        if not self.nat[j]:
            return True
        # Behind NAT: only through a bridge both can reach.
        return any(b in self.adj[j] and self.alive[b] and self.group[b] == self.group[i]
                   for b in self.bridges)

    # -- queries ---------------------------------------------------------------------

    def maintained(self, i: int) -> int:
        """Long-lived connections of node ``i``: kept by whoever dialled them (B7.2).

        Lookups open more for a few seconds (closed when idle); those are
        transient by design and not counted here.
        """
        engine = self.engines[i]
        count = 0
        for peer_id in engine.connected():
            mine = engine.peers[peer_id]
            theirs = self.engines[self.index[peer_id]].peers.get(engine.info.id)
            # Ours if we keep it; an inbound one if its dialer keeps it (a dialer's
            # transient lookup connection is transient whatever we think of it).
            count += mine.kept and (mine.outbound or theirs is None or theirs.kept) or (
                not mine.outbound and theirs is not None and theirs.kept)
        return count

    def healthy(self, i: int, need: int | None = None) -> bool:
        """ARCHITECTURE §4: joined, ``need`` (min(3, live nodes - 1)) connections, a good probe."""
        if not self.alive[i] or not self.agents[i].joined or self.hung[i] is not None:
            return False
        if need is None:
            need = min(3, sum(self.alive) - 1)
        return self.connections(i) >= need and (need == 0 or self.agents[i].probe_ok)

    def health_share(self) -> float:
        """Healthy nodes over all nodes of the world, up or down (a crashed node is not healthy)."""
        n = len(self.engines)
        need = min(3, sum(self.alive) - 1)
        return sum(1 for i in range(n) if self.healthy(i, need)) / n if n else 0.0

    @property
    def digest(self) -> str:
        """The trace digest so far: equal for equal seeds."""
        return self._trace.copy().hexdigest()[:16]

    def _note(self, kind: str, a: int, b: int = 0) -> None:
        self._trace.update(struct.pack("!d8sii", round(self.now, 6), kind.encode(), a, b))

    def opened(self, i: int, j: int) -> None:
        self._note("open", i, j)

    # -- the runtime's loop around each engine ------------------------------------------

    def _tick(self) -> None:
        """Once a virtual second, what the runtime's background tasks do."""
        for s, directory in enumerate(self.directories):
            directory.expire(self.now)
            for b in sorted(self.bridges):  # bridges register with every server, answer its checks
                bid = self.engines[b].info.id
                if self.alive[b] and self.hung[b] is None and self.server_up[s]:
                    if bid not in directory.bridges or not directory.bridges[bid].connected:
                        directory.bridge_registered(self.engines[b].info, self.now)
                    directory.bridge_answered(bid, self.now)
                else:
                    directory.bridge_closed(bid, self.now)
        self._need = min(3, sum(self.alive) - 1)
        for i, agent in enumerate(self.agents):
            if self.alive[i] and self.hung[i] is None:
                self._agent(i, agent)
        self._at(self.now + 1.0, self._tick)

    def _agent(self, i: int, agent: Agent) -> None:
        engine = self.engines[i]
        if self.nat[i] and not self.adj[i] & self.bridges:
            self._use_bridge(i, agent)
        conns = self.connections(i)
        agent.recovery.observe(self.now, conns, len(engine.table))
        if agent.step is None:
            step = agent.recovery.next_step(self.now)
            if step is not None:
                self._step(i, step)
        if self.now >= agent.next_beat:
            agent.next_beat = self.now + self.heartbeat
            server = self._server_of(agent)
            if server is not None and engine.info.addr:
                self.directories[server].heartbeat(engine.info, self.now, healthy=self.healthy(i, self._need),
                                                   connections=conns, routing_table=len(engine.table),
                                                   probe=None)
            agent.cache = [p for p in engine.connected()][:32]  # persisted, as peers.json
        if agent.joined and agent.probe_op is None and self.now >= agent.next_probe:
            agent.probe_started = self.now
            agent.probe_op = engine.find_node(self.rng.randbytes(32), self.now, self.config.refresh_k)
            self._flush(i)
        if agent.probe_op is not None and self.now - agent.probe_started > 2.0:
            agent.probe_ok = False  # still running after 2 s: unhealthy until it is done

    def _carry_out(self, i: int, batch: list) -> None:
        for action in batch:  # as the runtime says it with OVER_CAPACITY: the dialer looks elsewhere
            if type(action) is Close and action.reason == "over_target":
                j = self.index[action.peer]
                me = self.engines[i].info.id
                self._at(self.now, lambda j=j, me=me: self.alive[j]  # before the close, as the
                         and self.engines[j].peer_full(me, self.now))  # runtime's error frame
        super()._carry_out(i, batch)
        agent = self.agents[i]
        own = self.engines[i].info.id
        for action in batch:
            if type(action) is not Done:
                continue
            if action.op == agent.probe_op:
                self.done.pop((i, action.op), None)
                agent.probe_ok = self.now - agent.probe_started <= 2.0
                agent.probe_op = None
                agent.next_probe = self.now + self.probe_interval * self.rng.uniform(0.8, 1.2)
            elif action.kind == "find_node" and action.result.target == own:  # type: ignore[union-attr]
                self.done.pop((i, action.op), None)  # the join's self-lookup
                self._joined(agent)

    def _joined(self, agent: Agent) -> None:
        if not agent.joined:
            agent.joined = True
            agent.next_probe = self.now  # the runtime probes as soon as it joined

    def _use_bridge(self, i: int, agent: Agent) -> None:
        """A NAT node keeps a connection to a bridge, as ``--no-listen`` does; while it has
        none it asks the bootstrap server for bridges again, backing off (the runtime's
        relay loop)."""
        for b in agent.bridges:
            if b != i and self.reachable(i, b):
                self._open(i, b)
                self.engines[i].pin(self.engines[b].info.id)
                self.engines[b].pin(self.engines[i].info.id)  # as a bridge pins whom it relays for
                self._flush(i)
                agent.relay_retry = 1.0
                return
        server = self._server_of(agent) if self.now >= agent.next_relay else None
        if server is not None:
            agent.next_relay = self.now + agent.relay_retry
            agent.relay_retry = min(30.0, 2 * agent.relay_retry)
            _, bridges, _ = self.directories[server].introduce(self.engines[i].info.id, INTRODUCTIONS)
            agent.bridges += [self.index[b.id] for b in bridges if self.index[b.id] not in agent.bridges]

    # -- recovery steps, carried out as the runtime does ------------------------------

    def _step(self, i: int, step: str) -> None:
        self.agents[i].step = step
        self._note("step:" + step, i)
        if step == SOURCES[0]:
            self.agents[i].attempts.append(self.now)
        engine = self.engines[i]
        targets: list[int] = []
        genesis = False
        if step == "cache":
            known = [c.id for c in engine.table.contacts()] + self.agents[i].cache
            targets = [self.index[x] for x in dict.fromkeys(known) if x in self.index]
        elif step == "bridges":
            for b in self.agents[i].bridges:
                if b != i and self.reachable(i, b):
                    near = [j for j in sorted(self.adj[b]) if j != i]
                    targets = [b, *near[:INTRODUCTIONS]]
                    break
        elif (server := self._server_of(self.agents[i])) is not None:  # the introduction's link
            directory = self.directories[server]
            directory.seen(engine.info, self.now)
            peers, bridges, genesis = directory.introduce(engine.info.id, INTRODUCTIONS)
            known = self.agents[i].bridges
            known += [self.index[b.id] for b in bridges if self.index[b.id] not in known]
            targets = [self.index[p.id] for p in peers]
            if len(targets) < 3:
                targets += [self.index[b.id] for b in bridges]
        targets = [j for j in targets if j != i and j not in self.adj[i]]
        self.rng.shuffle(targets)
        ok = [j for j in targets[:SEED_DIALS] if self.reachable(i, j)]
        rtt = 2 * self.latency[1]
        agent = self.agents[i]
        self._at(self.now + rtt, lambda: self._step_done(agent, i, step, ok, genesis))

    def _step_done(self, agent: Agent, i: int, step: str, ok: list[int], genesis: bool) -> None:
        if not self.alive[i] or self.agents[i] is not agent or agent.step != step or self.hung[i] is not None:
            return  # the node died, restarted or hangs: this step was another life's
        agent.step = None
        seeds = []
        for j in ok:
            if self.reachable(i, j):
                self._open(i, j)
                seeds.append(self.engines[j].info)
        if seeds:
            agent.recovered_by = step
            self.engines[i].bootstrap(seeds, self.now)
            self._flush(i)
        elif genesis:
            self._joined(agent)
        nxt = agent.recovery.step_done(step, bool(seeds) or genesis, self.now)
        if nxt is not None:
            self._step(i, nxt)
        elif not seeds:
            self._joined(agent)  # as the runtime: a join that found nobody still ends
            if not genesis and agent.recovery.lost_since is not None:  # a failed attempt
                agent.failed_at.append(self.now)
            # The next attempt starts when the backoff says, as the runtime's timer does.
            if (at := agent.recovery.get_timer()) < float("inf"):
                self._at(at, lambda: self._retry(i, agent))

    def _retry(self, i: int, agent: Agent) -> None:
        if self.alive[i] and self.hung[i] is None and self.agents[i] is agent and agent.step is None:
            agent.recovery.observe(self.now, self.connections(i), len(self.engines[i].table))
            step = agent.recovery.next_step(self.now)
            if step is not None:
                self._step(i, step)
