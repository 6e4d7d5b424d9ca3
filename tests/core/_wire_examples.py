"""Good frames of every message type for the wire tests: ``good(name)`` is one,
``good(name, field=value)`` changes a field and ``field=_DROP`` leaves it out."""

from __future__ import annotations

import orjson

from yzcore.wire import PROTOCOL_VERSION

HEX32 = "ab" * 32
NODE = {"id": HEX32, "addr": "ws://a/dht", "role": "node"}
GOOD = {
    "ping": {"t": "ping", "rid": 1},
    "pong": {"t": "pong", "rid": 1},
    "find_node": {"t": "find_node", "rid": 1, "target": HEX32},
    "nodes": {"t": "nodes", "rid": 1, "nodes": [NODE]},
    "find_value": {"t": "find_value", "rid": 1, "key": HEX32},
    "value": {"t": "value", "rid": 1, "value": None, "nodes": [NODE]},
    "store": {"t": "store", "rid": 1, "key": HEX32, "value": "v", "ttl": 60},
    "stored": {"t": "stored", "rid": 1},
    "error": {"t": "error", "rid": 1, "code": "NOT_FOUND", "message": "m", "retry_after": None},
    "hello": {"t": "hello", "key": HEX32, "nonce": "00" * 16, "role": "node",
              "listen": ["ws://0.0.0.0:9000/dht"], "advertise": "ws://a:9000/dht",
              "caps": ["ws"], "agent": "yzcore/1.0"},
    "auth": {"t": "auth", "sig": "cd" * 64},
    "keep": {"t": "keep"},
}


def good(name: str, **changes: object) -> bytes:
    obj = {"v": PROTOCOL_VERSION, **GOOD[name], **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not _DROP})


_DROP = object()
