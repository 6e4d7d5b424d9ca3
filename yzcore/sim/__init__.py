"""The deterministic network simulator: the same engine and recovery policy as the runtime,
on a virtual clock, with latency, loss, partitions, NAT, crashes and the
bootstrap and bridge roles. ``yz sim`` runs its scenarios (:mod:`yzcore.sim.scenarios`).
"""
