"""``yz health``: the network's health as a bootstrap server sees it, against a baseline.

Before a change (an upgrade, a rollback), ``--save-baseline FILE`` records the
network's health; after it, ``--compare FILE`` says whether health is back to
those levels (B8.5) and exits 1, naming what is below, when it is not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from yzcore.transport import http_base

__all__ = ["compare", "run_health", "snapshot"]


def snapshot(bootstrap: str, timeout: float = 5.0) -> dict[str, Any]:
    """The network's health now, from the bootstrap server's ``/status``.

    Raises:
        OSError: the server could not be reached.
        ValueError: it answered no JSON (WrongRole: it is no bootstrap server).
    """
    with urllib.request.urlopen(http_base(bootstrap) + "/status", timeout=timeout) as resp:
        status = json.loads(resp.read())
    if not isinstance(status, dict) or status.get("role") != "bootstrap":  # a node's: 0/0
        role = status.get("role") if isinstance(status, dict) else None
        raise WrongRole(f"{bootstrap} is a {role or 'server of another kind'}, "
                        "not a bootstrap server")
    nodes = status.get("nodes", [])
    conns = [n.get("connections") or 0 for n in nodes]
    return {
        "time": round(time.time(), 1),
        "bootstrap": bootstrap,
        "nodes": len(nodes),
        "healthy": sum(1 for n in nodes if n.get("healthy")),
        "share": status.get("network", {}).get("share", 0.0),
        "connections_mean": round(statistics.fmean(conns), 2) if conns else 0.0,
        "bridges_healthy": sum(1 for b in status.get("bridges", []) if b.get("healthy")),
    }


def compare(now: dict[str, Any], base: dict[str, Any], tolerance: float = 0.05) -> list[str]:
    """What is below the baseline (empty when health is back to its levels)."""
    below = []
    if now["share"] < base["share"] - tolerance:
        below.append(f"healthy share {now['share']:.0%} < baseline {base['share']:.0%}")
    if now["nodes"] < 0.9 * base["nodes"]:
        below.append(f"nodes {now['nodes']} < 90% of baseline {base['nodes']}")
    if now["bridges_healthy"] < base["bridges_healthy"]:
        below.append(f"healthy bridges {now['bridges_healthy']} < baseline {base['bridges_healthy']}")
    return below


def _line(h: dict[str, Any]) -> str:
    return (f"{h['healthy']}/{h['nodes']} healthy ({h['share']:.0%}), connections {h['connections_mean']} "
            f"on average, bridges {h['bridges_healthy']} healthy")


class WrongRole(ValueError):
    """The URL answers, but not as a bootstrap server."""


def run_health(args: argparse.Namespace) -> int:
    """The ``yz health`` command."""
    try:
        now = snapshot(args.bootstrap)
    except WrongRole as exc:
        print(f"error [WRONG_ROLE] {exc}: `yz health` reads a bootstrap server's /status "
              "(--bootstrap ws://HOST:PORT/dht of a `yz bootstrap`).", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error [BOOTSTRAP_UNREACHABLE] {args.bootstrap}: {exc}. Check the URL and that the "
              "bootstrap server runs (`yz diagnose --bootstrap URL` tests each step).",
              file=sys.stderr)
        return 2
    out: dict[str, Any] = {"now": now}
    code = 0
    if args.save_baseline:
        with open(args.save_baseline, "w", encoding="utf-8") as f:
            json.dump(now, f, indent=1)
    if args.compare:
        try:
            with open(args.compare, encoding="utf-8") as f:
                base = json.load(f)
            below = compare(now, base, args.tolerance)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error [INVALID_ARGUMENT] {args.compare} is not a baseline `yz health "
                  f"--save-baseline` wrote: {exc}", file=sys.stderr)
            return 2
        out.update(baseline=base, below=below, back_to_baseline=not below)
        code = 1 if below else 0
    if args.json:
        print(json.dumps(out))
        return code
    print(f"now:      {_line(now)}")
    if args.save_baseline:
        print(f"saved as the baseline in {args.save_baseline}")
    if args.compare:
        print(f"baseline: {_line(out['baseline'])} (saved {time.ctime(out['baseline']['time'])})")
        if out["below"]:
            print("error [HEALTH_BELOW_BASELINE] " + "; ".join(out["below"]) +
                  ". Give the network a minute; if it stays below, roll back further "
                  "(docs/howto/roll-back.md).")
        else:
            print("health is back to the baseline's levels")
    return code
