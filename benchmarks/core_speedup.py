"""Compiled versus pure-Python speed of yzcore's hot paths, measured in one run.

    python benchmarks/core_speedup.py [--json] [--repeat N] [--check]

Both implementations run the same seeded workload in the same process,
alternating, and the best of ``--repeat`` runs of each is compared, so the
ratio holds even when the machine's speed drifts. ``--check`` exits 1 when a
ratio misses its target. Needs the compiled modules (``pip install .``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import WORKLOADS  # noqa: E402


def best_of(run, repeat: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(repeat: int) -> dict[str, object]:
    results: dict[str, object] = {}
    for name, (module, builder, target) in WORKLOADS.items():
        try:
            compiled = importlib.import_module(f"yzcore.{module}")
        except ImportError as exc:
            raise SystemExit(f"yzcore.{module} is not compiled ({exc}); build it with `pip install .`")
        pure = importlib.import_module(f"yzcore.{module}_py")
        run_c, run_py = builder(compiled), builder(pure)
        if repr(_digest(run_c())) != repr(_digest(run_py())):
            raise SystemExit(f"{name}: the two implementations disagree; not timing them")
        c_times, py_times = [], []
        for _ in range(repeat):  # alternate, so drift hits both alike
            c_times.append(best_of(run_c, 1))
            py_times.append(best_of(run_py, 1))
        c, py = min(c_times), min(py_times)
        results[name] = {
            "compiled_s": round(c, 6),
            "pure_s": round(py, 6),
            "ratio": round(py / c, 2),
            "target": target,
            "ok": py / c >= target,
        }
    return results


def _digest(result: object) -> object:
    """A comparable summary of a workload's result (tables become their contents)."""
    if hasattr(result, "contacts"):
        return [c.as_tuple() for c in result.contacts()]  # type: ignore[attr-defined]
    if isinstance(result, list):
        return [_digest(r) for r in result]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each implementation")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio misses its target")
    args = parser.parse_args()
    results = measure(args.repeat)
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeat": args.repeat,
        "results": results,
        "all_ok": all(r["ok"] for r in results.values()),  # type: ignore[index]
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{'hot path':28} {'compiled':>10} {'pure':>10} {'ratio':>7} {'target':>7}")
        for name, r in results.items():
            print(f"{name:28} {r['compiled_s'] * 1e3:8.2f}ms {r['pure_s'] * 1e3:8.2f}ms "  # type: ignore[index]
                  f"{r['ratio']:6.1f}x {r['target']:6.0f}x{'' if r['ok'] else '  MISSED'}")  # type: ignore[index]
    return 1 if args.check and not report["all_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
