"""The HTTP endpoints a node serves on its WebSocket port.

``/healthz`` (200 healthy / 503 not, with the reasons), ``/status`` (JSON),
``/metrics`` (Prometheus text). Anything else falls through to the
transport's defaults: 426 with a hint on the WebSocket path, 404 elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from yzcore import USE_EXTENSIONS, __version__
from yzcore.config import overrides
from yzcore.metrics import CONTENT_TYPE, exposition
from yzcore.transport import HttpResponse
from yzcore.web import asset
from yzcore.wire import PROTOCOL_VERSION

if TYPE_CHECKING:
    from yzcore.runtime.node import Node

__all__ = ["HttpEndpoints", "health", "read_only"]


def read_only(method: str, route: str) -> HttpResponse | None:
    """405 for a page that only serves reads (None for OPTIONS: the transport answers it)."""
    if method == "OPTIONS":
        return None
    return HttpResponse.json(405, {"error": "METHOD_NOT_ALLOWED",
                                   "message": f"{route} answers GET and HEAD, not {method}."},
                             (("Allow", "GET, HEAD, OPTIONS"),))


def health(node: Node) -> dict[str, Any]:
    """The node's health by ARCHITECTURE §4: enough live connections, lookups answering."""
    engine = node.engine
    connections = len(node.conns)
    size = engine.network_size_estimate() if engine else 1
    if size < 2 and _knows_others(node):  # alone by its table, but it had a network
        size = 2
    need = min(3, max(size - 1, 0))
    reasons = []
    if engine is None:
        reasons.append("not started")
    if connections < need:
        reasons.append(f"{connections} live connections, needs {need}")
    if engine is not None and not node._joined.is_set():
        reasons.append("still joining the network")
    probe = node.last_probe
    if need and probe is None:
        reasons.append("no find_node probe has finished yet")
    elif need and probe is not None and not probe["ok"]:
        reasons.append(f"last find_node probe failed or took over 2 s ({probe['seconds']:.2f}s)")
    return {"healthy": not reasons, "connections": connections, "needed": need,
            "network_size_estimate": size, "probe": probe, "reasons": reasons}


def _knows_others(node: Node) -> bool:
    """Whether the node knows of other nodes: given as --peer, in its routing table
    (stale ones too) or in its peer cache, or has a bootstrap server that did not
    call it the first node. A node that lost them all (or never reached any) would
    estimate a network of one, itself, and call itself healthy alone; only a first
    node is."""
    engine = node.engine
    return bool(node._peers or (engine is not None and len(engine.table)) or node._remembered
                or (node.links and not node._first))


def _peer(node: Node, pc: Any) -> dict[str, Any]:
    """One connection as /status shows it: who, how, and whether the node keeps it."""
    state = node.engine.peers.get(pc.peer.id) if node.engine else None
    now = anyio.current_time()
    return {"id": pc.peer.id.hex(), "role": pc.peer.role, "address": pc.peer.advertise,
            "transport": pc.conn.transport, "outbound": pc.outbound,
            "kept": bool(state and state.kept),
            "idle_s": round(now - state.last_active, 1) if state else None}


def _by_transport(node: Node) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pc in node.conns.values():
        counts[pc.conn.transport] = counts.get(pc.conn.transport, 0) + 1
    return counts or {"ws": 0}


class HttpEndpoints:
    """The node's HTTP hook for the transport (sync and cheap: no awaits)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def __call__(self, method: str, path: str, headers: Mapping[str, str]) -> HttpResponse | None:
        route = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):  # a page here: 405, else the transport's default
            known = route in ("/healthz", "/status", "/metrics") or asset(route) is not None
            return read_only(method, route) if known else None
        if route == "/healthz":
            h = health(self.node)
            return HttpResponse.json(200 if h["healthy"] else 503, h)
        if route == "/status":
            return HttpResponse.json(200, self.status())
        served = asset(route)
        if served is not None:  # the browser client and its demo page (CORS: the transport's default)
            body, content_type = served
            return HttpResponse(200, (("content-type", content_type),), body)
        if route == "/metrics":
            return HttpResponse(200, (("content-type", CONTENT_TYPE),), self.metrics())
        return None

    def status(self) -> dict[str, Any]:
        node, engine = self.node, self.node.engine
        return {
            "id": node.id.hex(),
            "role": node.role,
            "address": node.address,
            "pid": os.getpid(),
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "compiled_core": USE_EXTENSIONS,
            "metrics": node.metrics is not None,
            "config": overrides(node.settings) if node.settings else {},
            "history": node.history,
            "uptime_s": round(time.time() - node.started_at, 1),
            "connections": _by_transport(node),
            "peers": [_peer(node, pc) for pc in node.conns.values()],
            "routing_table": len(engine.table) if engine else 0,
            "values": len(engine.store) if engine else 0,
            "health": health(node),
            "recent_errors": list(node.errors),
            "bootstrap": [{"url": link.target, "urls": link.urls, "connected": link.pc is not None,
                           "registered": link.registered} for link in node.links],
            "managers": node.managers.status(),
            "relay": node.relay_status(),
            "pubsub": node.pubsub_status(),
        }

    def metrics(self) -> bytes:
        """Prometheus text: gauges read from the node's state, and the transfer counters."""
        node, engine = self.node, self.node.engine
        gauges = [
            *(("yz_connections", "Open verified connections", {"transport": t}, float(n))
              for t, n in _by_transport(node).items()),
            ("yz_routing_table_size", "Contacts in the routing table", {},
             float(len(engine.table) if engine else 0)),
            ("yz_values", "Values held", {}, float(len(engine.store) if engine else 0)),
            ("yz_frames_sent", "Frames sent on the open connections", {},
             float(sum(pc.sent for pc in node.conns.values()))),
            ("yz_frames_received", "Frames received on the open connections", {},
             float(sum(pc.received for pc in node.conns.values()))),
            ("yz_errors_recent", "Errors kept for /status", {}, float(len(node.errors))),
            ("yz_healthy", "1 when the node is healthy (ARCHITECTURE 4)", {},
             float(health(node)["healthy"])),
        ]
        return exposition(gauges, node.metrics)
