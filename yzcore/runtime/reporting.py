"""The errors a node keeps for ``/status`` and logs with their codes (A2.1), a mixin of
:class:`~yzcore.runtime.node.Node`."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from yzcore import wire
from yzcore.exceptions import ConnectionClosed
from yzcore.metrics import KNOWN_CODES, MAX_UNKNOWN_CODES
from yzcore.protocol.actions import Limited
from yzcore.runtime.peer import FLOOD_GRACE, FRAME_RATE

if TYPE_CHECKING:
    from yzcore.runtime.peer import PeerConnection

__all__ = ["DIAL_LOG_EVERY", "Reporting", "limit_fields", "throttled"]

log = logging.getLogger("yzcore.node")
DIAL_LOG_EVERY = 1.0  # seconds between two log lines of one failed-dial code


class Reporting:
    """``_record``: one place where an error becomes an entry, a metric and a log line."""

    def _record(self, code: str, peer: bytes | None, message: str, *,
                 transport: str | None = None, throttle: bool = False,
                 fields: dict[str, object] | None = None) -> None:
        """Keep a recent error for /status and log it with its code (A2.1).

        ``throttle`` (failed dials, and what a peer can send at will: bad frames,
        error notices): one log line per code a second, saying how many like it
        went unlogged since; /status and the metrics still count each. A node
        whose cached peers all died dials dozens of them a second; with 750
        nodes in one process, logging each failed dial took 23% of the CPU.
        ``fields``: more for the log line's JSON (a rate limit's limit and wait).
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
            kind = (code, (fields or {}).get("operation"))  # a pubsub flood hides no lookup's
            said = throttled(self._dial_logged, kind, message)
            if said is None:
                return
            message, unlogged = said
        log.warning(message, extra={"code": code, "peer_id": entry["peer"], "node_id": self.id.hex(),
                                    "transport": transport, "unlogged": unlogged, **(fields or {})})

    def _went_silent(self, pc: PeerConnection, exc: ConnectionClosed) -> None:
        """A peer stopped answering and a timeout dropped its connection (A4.2): say which,
        and how it was found (the kernel's timeout, or an unanswered ping)."""
        where = pc.info.addr or pc.conn.remote_address
        self._record(str(wire.ErrorCode.PEER_UNREACHABLE), pc.peer.id,
                     f"{where} stopped answering and left the active connections: {exc.args[0]}",
                     transport=pc.conn.transport, throttle=True)

    def _admitted(self, pc: PeerConnection, msg: wire.Message | None) -> bool:
        """Charge a frame to ``pc``'s budget (``FRAME_RATE``): True to handle it. A channel's
        deliveries from one of its homes cost a tenth of a frame: a busy channel carries
        more than the budget (up to its homes' own limits), but not without end. A peer
        over budget for too long is dropped here."""
        delivery = type(msg) is wire.Delivery and self._ps_home(  # type: ignore[attr-defined]
            pc.peer.id, msg.channel)  # type: ignore[union-attr]
        admitted = pc.admit(0.1 if delivery else 1.0)
        return admitted is True or (admitted is False and self._flooded(pc))

    def _flooded(self, pc: PeerConnection) -> bool:
        """A peer stayed over its frame budget (``FRAME_RATE``): record it and drop it, without
        a goodbye (a flood leaves no room for the close handshake); False."""
        self._record(str(wire.ErrorCode.RATE_LIMITED), pc.peer.id,
                     f"dropped: over {FRAME_RATE:g} frames/s on one connection for "
                     f"{FLOOD_GRACE:g} s", transport=pc.conn.transport, throttle=True)
        pc.abort()
        return False

    def _limited(self, action: Limited) -> None:
        """The engine refused a peer's request for its rate limit: say the limit and the wait.
        Or let a joining node's through on the bypass budget: say so (A3.2's audit)."""
        if action.bypassed:  # no error: at most the budget's 5, then one each 10 s
            log.info("%s from joining peer %s let through on the emergency bypass budget: the %s "
                     "limit was reached", action.operation, action.peer.hex()[:16], action.scope,
                     extra={"code": "RATE_LIMIT_BYPASSED", "peer_id": action.peer.hex(),
                            "node_id": self.id.hex(), "operation": action.operation,
                            "scope": action.scope})
            return
        self._record("RATE_LIMITED", action.peer,
                     f"{action.operation} from this peer refused: {action.scope} limit of "
                     f"{action.limit:g}/s (burst {action.burst:g}); it may ask again in "
                     f"{action.retry_after:.3f} s", throttle=True,
                     fields=limit_fields(action.operation, action.scope, action.limit,
                                         action.burst, action.retry_after))


def throttled(state: dict[Any, tuple[float, int]], kind: tuple[str, Any],
              message: str) -> tuple[str, int] | None:
    """At most one log line a second of ``kind`` (its code first): None when this one is
    not logged, else the line, saying how many went unlogged before it, and their count.
    ``state`` keeps each kind's count."""
    now = time.monotonic()
    if (kind not in state and kind[0] not in KNOWN_CODES  # a peer may send any code
            and sum(k[0] not in KNOWN_CODES for k in state) >= MAX_UNKNOWN_CODES):
        kind = ("OTHER", kind[1])
    last, unlogged = state.get(kind, (-DIAL_LOG_EVERY, 0))
    if now - last < DIAL_LOG_EVERY:
        state[kind] = (last, unlogged + 1)
        return None
    state[kind] = (now, 0)
    if unlogged:
        message += f" ({unlogged} more {kind[0]} not logged in the last {now - last:.1f} s)"
    return message, unlogged


def limit_fields(operation: str, scope: str, limit: float, burst: float,
                 retry_after: float) -> dict[str, object]:
    """A rate limit's figures, as every log line of a limit hit carries them (A2.2)."""
    return {"operation": operation, "limit_scope": scope, "limit_per_s": limit,
            "limit_burst": burst, "retry_after": round(retry_after, 3)}
