"""The engine's configuration: every protocol knob, with the documented defaults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's knobs (all times in seconds).

    Attributes:
        k: Bucket size and replication factor.
        alpha: Lookup concurrency.
        rpc_timeout: Hard timeout of a request.
        initial_rto: Soft timeout towards a peer never measured.
        min_rto: Floor of the adaptive soft timeout.
        conn_target: Long-lived connections the node dials up to.
        conn_max: Most long-lived connections (inbound ones count).
        conn_cap: Most connections of any kind; above it idle transients close.
        idle_timeout: A transient connection idle this long is closed.
        full_backoff: A peer that shed the connection we kept with it
            (``OVER_CAPACITY``: it is over ``conn_max``) is not chosen for a
            long-lived connection again for this long (B7.2).
        declined_wait: A peer that declined our new connection as a duplicate
            (it keeps another with us, still opening or just closed) is asked
            again this long after, on whichever connection there is then.
        max_dials: Most dials in flight at once; more wait for a free slot
            (a node joining a busy network must not flood it, or itself).
        dormant_interval: How often one contact evicted from the routing
            table (kept in a dormant cache of ``dormant_max``, for a day) is
            dialled again; each waits ``dormant_interval`` after its eviction,
            then twice as long after each dial, up to 10 minutes. After a
            partition heals, these are the way back (A7.5).
        dormant_max: Most evicted contacts remembered.
        ping_quiet: A full bucket's oldest contact is pinged (to evict it if
            dead) only when it has not been heard from for this long: BEP 5's
            15 minutes. A dead one is also found when a lookup or a refresh
            asks it (stale marks, then eviction).
        maintenance_interval: How often housekeeping runs while the node is
            short of (or over) its connection target, and soon after any
            connection opens, closes or fails to open.
        maintenance_interval_settled: How often it runs while the node is
            settled: kept connections within target, no other connection
            and no dial in flight.
        refresh_interval: A bucket untouched this long is refreshed by a lookup.
        self_lookup_interval: A join whose lookup of its own id found fewer
            than k nodes (a young network, or seeds that knew few) looks
            itself up again this long after, then twice as long each time up
            to ``refresh_interval``, until one finds k: nodes that joined
            since may be its neighbours, and none of them would know of it.
        refresh_k: How many closest nodes a refresh lookup waits for (it
            meets live nodes in a bucket's range; it need not find all k).
        join_refresh_below: After a join's lookup of its own id, each bucket
            farther than its closest neighbour that holds fewer contacts than
            this is refreshed at once (the Kademlia paper's join refreshes
            them all; 0: none). Lower, a join costs less and lookups right
            after formation cost more: at 1,000 nodes, 1 instead of 5 made
            a seventh of the refreshes, formation 31–36% faster and find_node
            5–21% slower (the CHANGELOG has the figures). Buckets a join left
            short fill from passing lookups and ``refresh_interval``.
        value_ttl: Default lifetime of a stored value.
        max_ttl: Longest lifetime a peer may ask us to keep a value.
        republish_interval: How often a published value is pushed again.
        replicate_interval: How often a held replica is pushed again.
        max_values: Most values held.
        max_value_bytes: What the values held may take, bytes (UTF-8; each
            counts at least ``max_value_bytes / max_values``). When a new one
            does not fit, the replicas of the peer whose replicas take the
            most go first: one peer's flood pushes out only its own.
        rate_limit: Whether incoming lookups are rate limited.
    """

    k: int = 20
    alpha: int = 3
    rpc_timeout: float = 5.0
    initial_rto: float = 1.0
    min_rto: float = 0.1
    conn_target: int = 4
    conn_max: int = 8
    conn_cap: int = 16
    idle_timeout: float = 5.0
    full_backoff: float = 120.0
    declined_wait: float = 1.0
    max_dials: int = 8
    ping_quiet: float = 900.0
    dormant_interval: float = 20.0
    dormant_max: int = 64
    maintenance_interval: float = 1.0
    maintenance_interval_settled: float = 5.0
    refresh_interval: float = 600.0
    self_lookup_interval: float = 5.0
    refresh_k: int = 5
    join_refresh_below: int = 5
    value_ttl: float = 3600.0
    max_ttl: float = 86400.0
    republish_interval: float = 3600.0
    replicate_interval: float = 3600.0
    max_values: int = 10_000
    max_value_bytes: int = 64 * 1024 * 1024
    rate_limit: bool = True
