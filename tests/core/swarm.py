"""Swarm(n): the simulator's bare network (no roles, no recovery) for engine tests."""

from yzcore.sim.network import Network as Swarm

__all__ = ["Swarm"]
