"""Data-transfer metrics: messages, bytes and errors per transport and message type.

Recording a metric must never get in the way of a message (B5.1–B5.4): every
hook is a guarded call; one that raises is counted
(``yz_metric_failures_total``), logged once per kind of failure, and
swallowed, and the message goes on. Sizes are the lengths of the frames the
node already has: nothing is serialised again to be measured (B5.2).

Metrics are optional (B5.4, B8.1): ``yz node --no-metrics`` or
``YZ_METRICS=0`` starts a node with no hook installed at all, so it behaves as
one built without metrics (B5.5); ``/metrics`` then serves only the gauges
read from the node's state, and says ``yz_metrics_enabled 0``.

Exposition is Prometheus text, written by ``prometheus_client`` from a
registry of the node's own (never the process-wide default one).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from yzcore import exceptions
from yzcore.messages import ErrorCode

__all__ = ["CONTENT_TYPE", "TransferMetrics", "enabled", "exposition"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Codes a node may see or log that peers cannot invent: the wire's, the exceptions',
#: the log-only ones. Any other code (a peer may send anything) is "unknown".
KNOWN_CODES: frozenset[str] = frozenset(
    {str(code) for code in ErrorCode}
    | {c.code for c in vars(exceptions).values()
       if isinstance(c, type) and isinstance(getattr(c, "code", None), str)}
    | {"METRIC_FAILED", "ADDRESS_CHANGED", "SLOW_READER", "PEER_CACHE_UNREADABLE",
       "PEER_CACHE_UNWRITABLE", "HEALTH_BELOW_BASELINE", "BRIDGE_DOWN", "DATA_DIR_UNLOCKED",
       "RATE_LIMIT_BYPASSED", "OUT_OF_RESOURCES"})
MAX_UNKNOWN_CODES = 32  #: unknown codes with a series (or log kind) of their own; more: OTHER

log = logging.getLogger("yzcore.metrics")


def enabled(flag: bool | None = None) -> bool:
    """Whether metrics are on: ``flag`` when given, else not ``YZ_METRICS=0``."""
    if flag is not None:
        return flag
    return os.environ.get("YZ_METRICS", "1").strip().lower() not in ("0", "false", "no", "off")


class TransferMetrics:
    """What went over a node's connections, counted.

    Attributes:
        messages: ``(transport, direction, type) -> count``; direction is
            ``"in"`` or ``"out"``, type the wire type or ``"invalid"`` for a
            frame that did not decode.
        bytes: The same keys, summed frame lengths.
        errors: ``(transport, code) -> count``.
        failures: Hook calls that raised and were swallowed.
    """

    def __init__(self) -> None:
        self.messages: Counter[tuple[str, str, str]] = Counter()
        self.bytes: Counter[tuple[str, str, str]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self._unknown = 0  # series of codes not in KNOWN_CODES
        self.failures = 0
        self._reported: set[str] = set()

    # -- hooks: each guarded, none can raise ----------------------------------------

    def sent(self, transport: str, msg_type: str, size: int) -> None:
        """A message went out as a frame of ``size`` bytes."""
        try:
            self._count(transport, "out", msg_type, size)
        except Exception as exc:  # noqa: BLE001 - B5.3: a metric never breaks a send
            self._failed("sent", exc)

    def received(self, transport: str, msg_type: str, size: int) -> None:
        """A frame of ``size`` bytes came in (``msg_type`` "invalid" if it did not decode)."""
        try:
            self._count(transport, "in", msg_type, size)
        except Exception as exc:  # noqa: BLE001 - B5.3: a metric never breaks a receive
            self._failed("received", exc)

    def error(self, transport: str, code: str) -> None:
        """An error with a code was seen on a connection of ``transport``.

        A peer may send any code, and must not add a series a frame: past
        ``MAX_UNKNOWN_CODES`` codes not in :data:`KNOWN_CODES`, the next ones
        count as ``OTHER``. Known codes always have their own.
        """
        try:
            key = (transport, code)
            if key not in self.errors and code not in KNOWN_CODES:
                if self._unknown >= MAX_UNKNOWN_CODES:
                    key = (transport, "OTHER")
                else:
                    self._unknown += 1
            self.errors[key] += 1
        except Exception as exc:  # noqa: BLE001
            self._failed("error", exc)

    # -- internals ------------------------------------------------------------------

    def _count(self, transport: str, direction: str, msg_type: str, size: int) -> None:
        key = (transport, direction, msg_type)
        self.messages[key] += 1
        self.bytes[key] += size

    def _failed(self, hook: str, exc: Exception) -> None:
        try:
            self.failures += 1
            kind = f"{hook}:{type(exc).__name__}"
            if kind not in self._reported:  # once per kind: a broken metric must not flood the log
                self._reported.add(kind)
                log.warning("a metrics hook failed and was skipped; messages are unaffected: %s: %s",
                            kind, exc, extra={"code": "METRIC_FAILED"})
        except Exception:  # noqa: BLE001, S110 - even reporting the failure must not raise
            pass


class _Collector(Collector):
    def __init__(self, gauges: Iterable[tuple[str, str, dict[str, str], float]],
                 transfer: TransferMetrics | None, hooks: bool) -> None:
        self._gauges = list(gauges)
        self._transfer = transfer
        self._hooks = hooks

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, doc, labels, value in self._gauges:
            family = families.get(name)
            if family is None:
                kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
                family = families[name] = kind(name.removesuffix("_total"), doc, labels=sorted(labels))
            family.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()
        if not self._hooks:
            return
        t = self._transfer
        yield GaugeMetricFamily("yz_metrics_enabled", "1 when transfer metrics are recorded",
                                value=0 if t is None else 1)
        if t is None:
            return
        labels = ["transport", "direction", "type"]
        messages = CounterMetricFamily("yz_messages", "Messages by transport, direction and type",
                                       labels=labels)
        sizes = CounterMetricFamily("yz_bytes", "Frame bytes by transport, direction and type",
                                    labels=labels)
        for key in sorted(t.messages):
            messages.add_metric(list(key), t.messages[key])
            sizes.add_metric(list(key), t.bytes[key])
        errors = CounterMetricFamily("yz_errors", "Errors with a code, by transport",
                                     labels=["transport", "code"])
        for key in sorted(t.errors):
            errors.add_metric(list(key), t.errors[key])
        yield messages
        yield sizes
        yield errors
        yield CounterMetricFamily("yz_metric_failures", "Metric hook calls that raised and were skipped",
                                  value=t.failures)


def exposition(gauges: Iterable[tuple[str, str, dict[str, str], float]],
               transfer: TransferMetrics | None, *, hooks: bool = True) -> bytes:
    """Prometheus text for ``gauges`` (name, help, labels, value; a name ending in
    ``_total`` is a counter) and, where there are ``hooks``, the transfer counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(gauges, transfer, hooks))
    return generate_latest(registry)
