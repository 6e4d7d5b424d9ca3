"""pytest-benchmark suite: run with `make bench` (never part of `make test`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "req(*ids): the requirement criteria (A1.4, B7.3, ...) this test proves"
    )
