"""The health probe of a node (ARCHITECTURE §4), a mixin of :class:`~yzcore.runtime.node.Node`."""

from __future__ import annotations

import random
import time

import anyio

__all__ = ["Probing"]


class Probing:
    """Keeps ``last_probe``: whether a find_node finished within 2 s lately."""

    _rng: random.Random

    def _probe_look(self, now: float) -> float:
        """Health (ARCHITECTURE §4): a find_node for a random id must finish within 2 s.

        The timer loop's look, every ``probe_interval`` (jittered: nodes that
        started together must not probe together). A lookup the node finished
        anyway within the last interval is the evidence when there is one;
        only an idle node probes, and with a small lookup (``refresh_k``
        closest), which proves the same routing at a third of the cost — it
        matters when many nodes share a machine. Returns when to look next.
        """
        if self._stopping:
            return float("inf")
        recent = self._last_lookup
        if recent is not None and now - recent[0] < self.probe_interval and recent[1] <= 2.0:
            self.last_probe = {"ok": True, "seconds": round(recent[1], 3), "at": time.time(),
                               "source": "lookup"}
            return now + self.probe_interval * self._rng.uniform(0.8, 1.2)
        self._tg.start_soon(self._probe, now)
        return float("inf")  # the probe asks for the next look when it ends

    async def _probe(self, now: float) -> None:
        with anyio.move_on_after(2.0) as scope:
            self._probe_op = self._engine.find_node(self._rng.randbytes(32), now,
                                                    self._config.refresh_k)
            await self._wait(self._probe_op)
        end = anyio.current_time()
        self.last_probe = {"ok": not scope.cancelled_caught, "seconds": round(end - now, 3),
                           "at": time.time(), "source": "probe"}
        self._look(probe=end + self.probe_interval * self._rng.uniform(0.8, 1.2))
