"""yzcore against its de-facto Python peer, the `kademlia` package, in one run.

    python benchmarks/peer_compare.py --nodes N [--seed S] [--json]
                                      [--only yzcore|kademlia] [--isolate]

Each implementation runs as N nodes in this one process on 127.0.0.1, one
after the other (kademlia first, then yzcore), each fully torn down before
the next, with the same N, the same seed and the same seeded operation plan
(who bootstraps from whom, who looks up what, who puts and gets which key,
who is killed). Per implementation it measures:

1. formation: wall time from the first node created until every node has
   started and bootstrapped (joined in waves, each node from up to 3 random
   nodes of earlier waves) and a probe find_node from each of 20 random
   nodes has completed;
2. find_node latency p50/p99 over ``--lookups`` sequential lookups of random
   targets from random nodes;
3. put ``--values`` values (keys sha256("key-i")) from random nodes, one at a
   time, then get each from a random other node: get p50/p99 and success;
4. exact-k: share of the lookups of (2) whose k results are exactly the k
   closest live ids, by brute force over every node's id, the asking node
   excluded (kademlia: its 160-bit ids and target[:20]);
5. churn: 20% of the nodes are killed abruptly (no goodbye), then every
   stored key is got from a random survivor (``--churn-in-flight`` at once):
   get p95 and success;
6. memory per node: (VmRSS after formation - VmRSS before the first node)
   / N (/ the nodes started, if formation stopped short), VmRSS read from
   /proc/self/status, the same for both;
7. concurrent gets/s: ``--concurrent`` gets of stored keys from random nodes,
   at most ``--in-flight`` at once, divided by their wall time (before churn).

Each phase also reports its CPU seconds and the event loop's lag (how late
a 50 ms sleep wakes), since all N nodes share one loop. Both sides run with
Python's cyclic garbage collector at ``--gc-thresholds`` (100000,50,100, as
``yz sim`` does; ``default`` keeps Python's 700,10,10): a process holding N
nodes holds millions of objects, and at the default each full pass rescans
them all (300 yzcore nodes formed in 270 s of CPU instead of 74 s). Every
phase has a time limit and reports "timeout" instead of hanging; every
operation has one too (``--op-timeout``) and counts as failed, with that
time as its latency, when it runs out. Progress goes to stderr; the table
(or with --json one JSON object) to stdout. Needs `pip install kademlia`
for the kademlia side.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import platform
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import (  # noqa: E402
    LogCounter, Op, Progress, _await, bounded, first_errors, latency_stats, ms, raise_nofile, rss_kib, timed, trim_heap,
)
from _oracle import Oracle, percentile  # noqa: E402
from _plan import Plan, make_plan  # noqa: E402
from _report import table  # noqa: E402

SIDES = ("kademlia", "yzcore")
MEMORY_METHOD = "VmRSS from /proc/self/status (after gc.collect + malloc_trim at the baseline)"



def load_side(name: str, seed: int, k: int, alpha: int) -> Any:
    if name == "kademlia":
        from _kademlia_side import KademliaSide

        return KademliaSide(seed, k=k, alpha=alpha)
    from _yzcore_side import YzcoreSide

    return YzcoreSide(seed, k=k, alpha=alpha)


class Run:
    """The phases of one implementation over one plan."""

    def __init__(self, side: Any, plan: Plan, args: argparse.Namespace, log: Progress) -> None:
        self.side, self.plan, self.args, self.log = side, plan, args, log
        self.scale = args.timeout_scale
        self.op_timeout = args.op_timeout
        self.res: dict[str, Any] = {
            "status": "ok",
            "version": side.version,
            "id_bits": side.id_bits,
            "kill_method": side.kill_method,
            "notes": list(getattr(side, "notes", ())),
        }
        self.started: set[int] = set()
        self.lags: list[float] = []
        self.oracle: Oracle | None = None

    async def phase(self, name: str, limit: float,
                    body: Callable[[dict[str, Any]], Awaitable[None]]) -> bool:
        slot: dict[str, Any] = {"status": "running", "limit_s": round(limit * self.scale, 1)}
        self.res[name] = slot
        self.log(f"{name}: start (limit {limit * self.scale:.0f}s)")
        start, cpu = time.perf_counter(), time.process_time()
        first_lag = len(self.lags)
        with anyio.move_on_after(limit * self.scale) as scope:
            try:
                await body(slot)
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                slot["status"] = f"error: {type(exc).__name__}: {exc}"
                traceback.print_exc(file=sys.stderr)
        if scope.cancelled_caught:
            slot["status"] = "timeout"
        elif slot["status"] == "running":
            slot["status"] = "ok"
        slot["wall_s"] = round(time.perf_counter() - start, 3)
        slot["cpu_s"] = round(time.process_time() - cpu, 3)
        lags = self.lags[first_lag:]
        slot["loop_lag_ms"] = {"p50": ms(percentile(lags, 50)), "p99": ms(percentile(lags, 99)),
                               "max": ms(max(lags, default=None))}
        self.log(f"{name}: {slot['status']} in {slot['wall_s']:.1f}s "
                 f"(cpu {slot['cpu_s']:.1f}s, loop lag p99 {slot['loop_lag_ms']['p99']} ms)")
        return slot["status"] == "ok"

    async def _watch_loop(self) -> None:
        """Event-loop lag: how late a 50 ms sleep wakes (all N nodes share one loop)."""
        while True:
            start = time.perf_counter()
            await anyio.sleep(0.05)
            self.lags.append(max(0.0, time.perf_counter() - start - 0.05))

    async def op(self, fn: Callable[[], Awaitable[Any]]) -> Op:
        return await timed(fn, self.op_timeout)

    # 1 + 6
    async def form(self, slot: dict[str, Any]) -> None:
        plan, side = self.plan, self.side
        slot.update(nodes=plan.n, started=0, joined=0, probes=len(plan.probes), probes_ok=0,
                    formed=False)
        start = time.perf_counter()
        last_log = start
        for w, wave in enumerate(plan.waves):
            for i in wave:
                await side.start_node(i, plan.bootstrap[i])
                self.started.add(i)
                slot["started"] += 1

            async def join(i: int) -> Op:
                return await self.op(lambda: side.join_node(i, self.op_timeout))

            ops = await bounded([lambda i=i: join(i) for i in wave], len(wave))
            ok = [o for o in ops if o is not None and o.done and o.value]
            slot["joined"] += len(ok)
            if len(ok) < len(wave):
                slot.setdefault("join_failures", []).extend(first_errors(ops))
            if time.perf_counter() - last_log > 2 or w == len(plan.waves) - 1:
                last_log = time.perf_counter()
                self.log(f"formation: wave {w + 1}/{len(plan.waves)}, "
                         f"{slot['joined']}/{plan.n} joined")
        slot["join_s"] = round(time.perf_counter() - start, 3)
        probes = await bounded(
            [lambda a=a, t=t: self.op(lambda: side.find_node(a, t)) for a, t in plan.probes],
            len(plan.probes))
        slot["probes_ok"] = sum(1 for o in probes if o is not None and o.done)
        slot["seconds"] = round(time.perf_counter() - start, 3)
        slot["formed"] = slot["joined"] == plan.n and slot["probes_ok"] == len(plan.probes)
        if slot["probes_ok"] < len(plan.probes):
            slot["probe_failures"] = first_errors(probes)

    # 2 + 4
    async def lookups(self, slot: dict[str, Any]) -> None:
        assert self.oracle is not None
        ops: list[Op] = []
        exact = recall = 0.0
        slot.update(count=len(self.plan.lookups))
        for n, (asker, target) in enumerate(self.plan.lookups):
            o = await self.op(lambda a=asker, t=target: self.side.find_node(a, t))
            ops.append(o)
            if o.done:
                hit, rec = self.oracle.check(o.value, self.side.target_id(target),
                                             self.plan.k, asker)
                exact += hit
                recall += rec
            self._fill_lookups(slot, ops, exact, recall)
            if (n + 1) % 50 == 0:
                self.log(f"find_node: {n + 1}/{len(self.plan.lookups)}")

    @staticmethod
    def _fill_lookups(slot: dict[str, Any], ops: list[Op], exact: float, recall: float) -> None:
        slot["done"] = sum(o.done for o in ops)
        slot.update(latency_stats(ops, 50, 99))
        slot["exact_k_share"] = round(exact / len(ops), 4)
        slot["mean_recall"] = round(recall / len(ops), 4)
        if slot["done"] < len(ops):
            slot["errors"] = first_errors(ops)

    # 3
    async def puts(self, slot: dict[str, Any]) -> None:
        plan = self.plan
        ops: list[Op] = []
        slot["count"] = len(plan.keys)
        for key, value, putter in zip(plan.keys, plan.values, plan.putters):
            ops.append(await self.op(
                lambda p=putter, k=key, v=value: self.side.put(p, k, v)))
            slot["ok"] = sum(1 for o in ops if o.done and o.value)
            slot.update(latency_stats(ops, 50, 99))
        if slot.get("ok", 0) < len(ops):
            slot["errors"] = first_errors(ops)

    async def gets(self, slot: dict[str, Any]) -> None:
        plan = self.plan
        ops: list[Op] = []
        slot["count"] = len(plan.keys)
        for i, getter in enumerate(plan.getters):
            ops.append(await self.op(lambda g=getter, k=plan.keys[i]: self.side.get(g, k)))
            self._fill_gets(slot, ops, plan.values)

    @staticmethod
    def _fill_gets(slot: dict[str, Any], ops: Sequence[Op | None], values: Sequence[str]) -> None:
        done = [o for o in ops if o is not None]
        good = sum(1 for i, o in enumerate(ops) if o is not None and o.value == values[i])
        slot["returned"] = sum(o.done for o in done)
        slot["found"] = good
        slot["success_rate"] = round(good / len(ops), 4) if ops else None
        slot.update(latency_stats(done, 50, 95, 99))
        errs = first_errors(ops)
        if errs:
            slot["errors"] = errs

    # 7
    async def concurrent(self, slot: dict[str, Any]) -> None:
        plan = self.plan
        slot.update(count=len(plan.concurrent), in_flight=self.args.in_flight)
        jobs = [lambda g=g, k=k: self.op(lambda: self.side.get(g, plan.keys[k]))
                for g, k in plan.concurrent]
        start = time.perf_counter()
        ops = await bounded(jobs, self.args.in_flight)
        wall = time.perf_counter() - start
        returned = sum(1 for o in ops if o is not None and o.done)
        want = [plan.values[k] for _, k in plan.concurrent]
        good = sum(1 for o, v in zip(ops, want) if o is not None and o.value == v)
        slot.update(wall_s_gets=round(wall, 3), returned=returned,
                    success_rate=round(good / len(ops), 4) if ops else None,
                    per_second=round(returned / wall, 1) if wall > 0 else None,
                    found_per_second=round(good / wall, 1) if wall > 0 else None)
        slot.update(latency_stats([o for o in ops if o is not None], 50, 99))

    # 5
    async def churn(self, slot: dict[str, Any]) -> None:
        plan = self.plan
        assert self.oracle is not None
        # All at once, as a crash of 20% of the network would be.
        start = time.perf_counter()
        pending = []
        for i in plan.killed:
            res = self.side.kill(i)
            if inspect.isawaitable(res):
                pending.append(res)
            self.oracle.kill(i)
        if pending:
            with anyio.move_on_after(self.op_timeout):
                async with anyio.create_task_group() as tg:
                    for aw in pending:
                        tg.start_soon(_await, aw)
        slot.update(killed=len(plan.killed), count=len(plan.keys),
                    in_flight=self.args.churn_in_flight,
                    kill_s=round(time.perf_counter() - start, 3))
        self.log(f"churn: killed {len(plan.killed)} nodes, getting {len(plan.keys)} keys "
                 f"({self.args.churn_in_flight} at once)")
        ops: list[Op | None] = [None] * len(plan.keys)
        limiter = anyio.CapacityLimiter(self.args.churn_in_flight)

        async def one(i: int) -> None:
            async with limiter:
                ops[i] = await self.op(
                    lambda: self.side.get(plan.churn_getters[i], plan.keys[i]))
                self._fill_gets(slot, ops, plan.values)

        async with anyio.create_task_group() as tg:
            for i in range(len(plan.keys)):
                tg.start_soon(one, i)
        self._fill_gets(slot, ops, plan.values)

    async def run(self) -> dict[str, Any]:
        a, n = self.args, self.plan.n
        trim_heap()
        rss_before = rss_kib()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_loop)
            await self.side.setup(tg)
            try:
                formed = await self.phase("formation", a.formation_timeout or 60 + 0.3 * n,
                                          self.form)
                gc.collect()  # no malloc_trim here: we measure what the nodes hold
                rss_after = rss_kib()
                counted = len(self.started) or 1  # N, unless formation stopped short
                self.res["memory"] = {
                    "method": MEMORY_METHOD, "rss_before_kib": rss_before,
                    "rss_after_kib": rss_after, "nodes": counted,
                    "per_node_kib": round((rss_after - rss_before) / counted, 1),
                }
                if len(self.started) < n:
                    self.res["status"] = "formation failed: not every node started"
                    return self.res
                if not formed:
                    self.res["status"] = "formation incomplete"
                self.oracle = Oracle([self.side.node_id(i) for i in range(n)])
                await self.phase("find_node", a.phase_timeout, self.lookups)
                await self.phase("put", a.phase_timeout, self.puts)
                await self.phase("get", a.phase_timeout, self.gets)
                await self.phase("concurrent_gets", a.phase_timeout, self.concurrent)
                await self.phase("churn", a.phase_timeout, self.churn)
            finally:
                self.log("teardown")
                with anyio.CancelScope(shield=True), anyio.move_on_after(90):
                    try:
                        await self.side.aclose()
                    except Exception as exc:  # noqa: BLE001
                        self.res["teardown"] = f"error: {type(exc).__name__}: {exc}"
                tg.cancel_scope.cancel()
        return self.res


# -- the whole run ------------------------------------------------------------------


class LoopErrors:
    """Counts exceptions the event loop would print (kademlia's late RPC replies)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        what = f"{type(exc).__name__}: {exc}" if exc else str(context.get("message", "?"))
        self.counts[what[:100]] += 1

    def take(self) -> dict[str, int]:
        out = dict(self.counts.most_common(5))
        self.counts.clear()
        return out


async def run_all(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    loop_errors = LoopErrors()
    asyncio.get_running_loop().set_exception_handler(loop_errors)
    logs = LogCounter(args.show_logs)
    logs.install()
    results: dict[str, Any] = {}
    for name in args.sides:
        log = Progress(name, args.quiet)
        try:
            side = load_side(name, args.seed, args.k, args.alpha)
        except Exception as exc:  # noqa: BLE001 - ImportError, or a runtime half written
            results[name] = {"status": f"unavailable: {type(exc).__name__}: {exc}"}
            log(f"unavailable: {type(exc).__name__}: {exc}")
            continue
        log(f"{plan.n} nodes, seed {plan.seed}")
        run = Run(side, plan, args, log)
        try:
            results[name] = await run.run()
        except Exception as exc:  # noqa: BLE001 - the other side still runs
            traceback.print_exc(file=sys.stderr)
            run.res["status"] = f"error: {type(exc).__name__}: {exc}"
            results[name] = run.res
        results[name]["loop_errors"] = loop_errors.take()
        results[name]["log_warnings"] = logs.take()
        del run, side
        trim_heap()
        await anyio.sleep(0.5)
    return results


def run_isolated(args: argparse.Namespace) -> dict[str, Any]:
    """Each side in its own child process (cleanest memory figure), merged here."""
    results: dict[str, Any] = {}
    base = [a for a in sys.argv[1:] if a not in ("--isolate", "--json")]
    drop = {"--only"}
    cleaned: list[str] = []
    skip = False
    for a in base:
        if skip:
            skip = False
            continue
        if a in drop:
            skip = True
            continue
        if a.startswith("--only="):
            continue
        cleaned.append(a)
    for name in args.sides:
        cmd = [sys.executable, str(Path(__file__).resolve()), *cleaned, "--only", name, "--json"]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        try:
            results[name] = json.loads(proc.stdout)["results"][name]
        except (ValueError, KeyError):
            results[name] = {"status": f"error: child exited {proc.returncode}"}
    return results


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, required=True, help="nodes per implementation")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--only", choices=SIDES, help="run one implementation")
    ap.add_argument("--isolate", action="store_true",
                    help="run each implementation in its own child process")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--show-logs", action="store_true",
                    help="echo the implementations' warnings to stderr (else only counted)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--alpha", type=int, default=3)
    ap.add_argument("--lookups", type=int, default=200)
    ap.add_argument("--values", type=int, default=100)
    ap.add_argument("--concurrent", type=int, default=500)
    ap.add_argument("--in-flight", type=int, default=100, help="bound of the concurrent gets")
    ap.add_argument("--churn-in-flight", type=int, default=20,
                    help="churn gets at once (bounds the phase's time)")
    ap.add_argument("--kill-fraction", type=float, default=0.2)
    ap.add_argument("--probes", type=int, default=20)
    # Waves of 50 at 1,000 nodes starved the one CPU both sides share: yzcore's
    # joins (each dials ~50 peers) lagged the loop by seconds, soft timeouts
    # fired and widened every lookup, and formation never finished (807 of
    # 1,000 after 783 s, out of file descriptors). Waves of 20 formed it in
    # 216-288 s. Both implementations get the same waves.
    ap.add_argument("--join-batch", type=int, default=20, help="largest join wave")
    ap.add_argument("--bootstrap-peers", type=int, default=3)
    ap.add_argument("--op-timeout", type=float, default=30.0, help="seconds per operation")
    ap.add_argument("--phase-timeout", type=float, default=180.0, help="seconds per phase")
    ap.add_argument("--formation-timeout", type=float, default=None,
                    help="seconds for formation (default 60 + 0.3 N)")
    ap.add_argument("--timeout-scale", type=float, default=1.0, help="multiplies phase limits")
    ap.add_argument("--gc-thresholds", default="100000,50,100",
                    help="the cyclic collector's thresholds for both sides, or 'default'")
    args = ap.parse_args(argv)
    if args.nodes < 2:
        ap.error("--nodes must be at least 2")
    args.sides = [args.only] if args.only else list(SIDES)
    if args.gc_thresholds == "default":
        args.gc_thresholds = "700,10,10"  # Python's own
    try:
        args.gc = tuple(int(x) for x in args.gc_thresholds.split(","))
        if len(args.gc) != 3:
            raise ValueError(args.gc_thresholds)
    except ValueError:
        ap.error("--gc-thresholds takes three integers, like 100000,50,100, or 'default'")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    nofile = raise_nofile()
    gc.set_threshold(*args.gc)
    plan = make_plan(args)
    if args.isolate:
        results = run_isolated(args)
    else:
        results = anyio.run(run_all, args, plan, backend="asyncio")
    report = {
        "nodes": args.nodes,
        "seed": args.seed,
        "host": "127.0.0.1",
        "python": platform.python_version(),
        "nofile_limit": list(nofile),
        "gc_thresholds": list(args.gc),
        "memory_method": MEMORY_METHOD,
        "isolated": args.isolate,
        "params": {k: getattr(args, k) for k in (
            "k", "alpha", "lookups", "values", "concurrent", "in_flight", "churn_in_flight",
            "kill_fraction", "probes", "join_batch", "bootstrap_peers", "op_timeout",
            "phase_timeout", "timeout_scale")},
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
