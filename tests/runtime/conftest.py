"""Fixtures for the real-socket tests: anyio on asyncio, loopback only."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # The ws transport is websockets' asyncio implementation: asyncio only.
    return "asyncio"
