"""The hot paths of the core under pytest-benchmark, both implementations.

Group by workload to read the compiled/pure ratio off one table:
``pytest benchmarks --benchmark-group-by=group``.
"""

from __future__ import annotations

import importlib

import pytest
from workloads import WORKLOADS

CASES = [(name, impl) for name in WORKLOADS for impl in ("c", "py")]


@pytest.mark.parametrize(("workload", "impl"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_hot_path(benchmark, workload, impl):
    module_name, builder, _target = WORKLOADS[workload]
    suffix = "" if impl == "c" else "_py"
    try:
        module = importlib.import_module(f"yzcore.{module_name}{suffix}")
    except ImportError:
        pytest.fail(f"yzcore.{module_name} is not compiled; run `make bench` after `make test`")
    benchmark.group = workload
    benchmark.pedantic(builder(module), rounds=5, warmup_rounds=1)
