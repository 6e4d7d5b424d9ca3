"""The errors a node keeps for ``/status`` and logs with their codes (A2.1), a mixin of
:class:`~yzcore.runtime.node.Node`."""

from __future__ import annotations

import logging
import time

__all__ = ["DIAL_LOG_EVERY", "Reporting"]

log = logging.getLogger("yzcore.node")
DIAL_LOG_EVERY = 1.0  # seconds between two log lines of one failed-dial code


class Reporting:
    """``_record``: one place where an error becomes an entry, a metric and a log line."""

    def _record(self, code: str, peer: bytes | None, message: str, *,
                 transport: str | None = None, throttle: bool = False) -> None:
        """Keep a recent error for /status and log it with its code (A2.1).

        ``throttle`` (failed dials): one log line per code a second, saying how
        many like it went unlogged since; /status and the metrics still count
        each. A node whose cached peers all died dials dozens of them a second;
        with 750 nodes in one process, logging each failed dial took 23% of the CPU.
        """
        if transport is None:
            pc = self.conns.get(peer) if peer else None
            transport = pc.conn.transport if pc is not None else "ws"
        entry = {"time": time.time(), "code": code, "peer": peer.hex() if peer else None,
                 "message": message, "transport": transport}
        self.errors.append(entry)
        if self.metrics is not None:
            self.metrics.error(transport, code)
        unlogged = 0
        if throttle:
            now = time.monotonic()
            last, unlogged = self._dial_logged.get(code, (-DIAL_LOG_EVERY, 0))
            if now - last < DIAL_LOG_EVERY:
                self._dial_logged[code] = (last, unlogged + 1)
                return
            self._dial_logged[code] = (now, 0)
            if unlogged:
                message += f" ({unlogged} more {code} not logged in the last {now - last:.1f} s)"
        log.warning(message, extra={"code": code, "peer_id": entry["peer"], "node_id": self.id.hex(),
                                    "transport": transport, "unlogged": unlogged})
