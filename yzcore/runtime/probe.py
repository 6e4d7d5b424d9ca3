"""The health probe of a node (ARCHITECTURE §4), a mixin of :class:`~yzcore.runtime.node.Node`."""

from __future__ import annotations

import random
import time

import anyio

__all__ = ["Probing"]


class Probing:
    """Keeps ``last_probe``: whether a find_node finished within 2 s lately."""

    _rng: random.Random

    async def _probe_loop(self) -> None:
        """Health (ARCHITECTURE §4): a find_node for a random id must finish within 2 s.

        A lookup the node finished anyway within the last interval is the
        evidence when there is one; only an idle node probes, and with a
        small lookup (``refresh_k`` closest), which proves the same routing
        at a third of the cost — it matters when many nodes share a machine.
        """
        await self._joined.wait()
        while True:
            now = anyio.current_time()
            recent = self._last_lookup
            if recent is not None and now - recent[0] < self.probe_interval and recent[1] <= 2.0:
                self.last_probe = {"ok": True, "seconds": round(recent[1], 3), "at": time.time(),
                                   "source": "lookup"}
            else:
                with anyio.move_on_after(2.0) as scope:
                    self._probe_op = self._engine.find_node(self._rng.randbytes(32), now,
                                                            self._config.refresh_k)
                    await self._wait(self._probe_op)
                took = anyio.current_time() - now
                self.last_probe = {"ok": not scope.cancelled_caught, "seconds": round(took, 3),
                                   "at": time.time(), "source": "probe"}
            # Jittered: nodes that started together must not probe together.
            await anyio.sleep(self.probe_interval * self._rng.uniform(0.8, 1.2))
