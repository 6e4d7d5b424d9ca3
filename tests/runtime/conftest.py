"""Fixtures for the real-socket tests: anyio on asyncio, loopback only."""

from __future__ import annotations

import pytest

from tests.runtime.procs import Procs


@pytest.fixture
def anyio_backend() -> str:
    # The ws transport is websockets' asyncio implementation: asyncio only.
    return "asyncio"


@pytest.fixture
def procs(tmp_path):
    """Real `yz` processes for one test; every one of them is gone when it ends."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()
