"""The comparison table of peer_compare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any



SIDES = ("kademlia", "yzcore")
MEMORY_METHOD = "VmRSS from /proc/self/status (after gc.collect + malloc_trim at the baseline)"



def fmt(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def cell(r: dict[str, Any], phase: str, render: Callable[[dict[str, Any]], str]) -> str:
    slot = r.get(phase)
    if not isinstance(slot, dict):
        return "-"
    status = slot.get("status", "")
    if status == "timeout":
        return "timeout (" + render(slot) + ")"
    if status.startswith("error"):
        return status[:60]
    return render(slot)


def table(report: dict[str, Any]) -> str:
    res = report["results"]
    names = list(res)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [fn(res[n]) for n in names]))

    row("status", lambda r: r.get("status", "-"))
    row("version / id bits", lambda r: f"{r.get('version', '-')} / {r.get('id_bits', '-')}")
    row("1 formation time", lambda r: cell(r, "formation", lambda s: fmt(s.get("seconds"), " s", 2)))
    row("  joined / probes ok", lambda r: cell(
        r, "formation",
        lambda s: f"{s.get('joined')}/{s.get('nodes')} / {s.get('probes_ok')}/{s.get('probes')}"))
    row("  cpu s", lambda r: cell(r, "formation", lambda s: fmt(s.get("cpu_s"), " s", 2)))
    row("2 find_node p50 / p99", lambda r: cell(
        r, "find_node", lambda s: f"{fmt(s.get('p50_ms'), ' ms')} / {fmt(s.get('p99_ms'), ' ms')}"))
    row("4 exact k closest", lambda r: cell(
        r, "find_node",
        lambda s: f"{pct(s.get('exact_k_share'))} (recall {pct(s.get('mean_recall'))})"))
    row("3 put ok / p50", lambda r: cell(
        r, "put", lambda s: f"{s.get('ok')}/{s.get('count')} / {fmt(s.get('p50_ms'), ' ms')}"))
    row("3 get p50 / p99", lambda r: cell(
        r, "get", lambda s: f"{fmt(s.get('p50_ms'), ' ms')} / {fmt(s.get('p99_ms'), ' ms')}"))
    row("3 get success", lambda r: cell(r, "get", lambda s: pct(s.get("success_rate"))))
    row("5 churn: killed (in s)", lambda r: cell(
        r, "churn", lambda s: f"{fmt(s.get('killed'))} ({fmt(s.get('kill_s'), ' s', 2)})"))
    row("5 churn get p50 / p95", lambda r: cell(
        r, "churn", lambda s: f"{fmt(s.get('p50_ms'), ' ms')} / {fmt(s.get('p95_ms'), ' ms')}"))
    row("5 churn get success", lambda r: cell(r, "churn", lambda s: pct(s.get("success_rate"))))
    row("loop lag p99 form/lookup", lambda r: " / ".join(
        fmt(((r.get(ph) or {}).get("loop_lag_ms") or {}).get("p99"), " ms")
        for ph in ("formation", "find_node")))
    row("6 memory per node", lambda r: fmt((r.get("memory") or {}).get("per_node_kib"), " KiB"))
    row("7 concurrent gets/s", lambda r: cell(
        r, "concurrent_gets",
        lambda s: f"{fmt(s.get('per_second'))} (success {pct(s.get('success_rate'))})"))

    width = [max(len(label) for label, _ in rows)] + [
        max(len(n), *(len(vals[i]) for _, vals in rows)) for i, n in enumerate(names)]
    p = report["params"]
    lines = [
        (f"peer_compare: {report['nodes']} nodes per implementation in one process on "
         f"127.0.0.1, seed {report['seed']}, k={p['k']} alpha={p['alpha']}"),
        (f"joins in waves of up to {p['join_batch']}, "
         f"{p['lookups']} lookups, {p['values']} values, {p['concurrent']} concurrent gets "
         f"({p['in_flight']} in flight), {int(p['kill_fraction'] * 100)}% killed "
         f"(churn gets {p['churn_in_flight']} in flight), op timeout {p['op_timeout']} s"),
        f"memory: {report['memory_method']}",
        f"cyclic GC thresholds (both sides): {report.get('gc_thresholds', 'Python default')}",
        "",
        "  ".join(["metric".ljust(width[0])] + [n.ljust(width[i + 1]) for i, n in enumerate(names)]),
        "  ".join("-" * w for w in width),
    ]
    for label, vals in rows:
        lines.append("  ".join([label.ljust(width[0])]
                               + [v.ljust(width[i + 1]) for i, v in enumerate(vals)]))
    lines.append("")
    lines.append("kademlia: 160-bit ids, keys placed at sha1(key); yzcore: 256-bit ids, keys as given.")
    for n in names:
        if res[n].get("kill_method"):
            lines.append(f"{n} kill: {res[n]['kill_method']}")
        for note in res[n].get("notes") or ():
            lines.append(f"{n}: {note}")
        warn = res[n].get("log_warnings") or {}
        if warn.get("total"):
            lines.append(f"{n} logged {warn['total']} warnings (see --json or --show-logs)")
    return "\n".join(lines)
