"""Debian's Chromium for the browser tests, through Playwright (never ``playwright install``)."""

from __future__ import annotations

import os
from typing import Any

import pytest

__all__ = ["ARGS", "CHROMIUM", "WEBRTC_ARGS", "launch", "require"]

CHROMIUM = "/usr/bin/chromium"
ARGS = ("--no-sandbox", "--disable-gpu")
#: For WebRTC: host candidates by address, not as mDNS ``.local`` names.
WEBRTC_ARGS = (*ARGS, "--disable-features=WebRtcHideLocalIpsWithMdns")


def require() -> None:
    """Fail in CI (``.ci/run`` installs Chromium), skip elsewhere, when it is missing."""
    if not os.path.exists(CHROMIUM):
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{CHROMIUM} is not installed")


def launch(playwright: Any, args: tuple[str, ...] = ARGS) -> Any:
    """A headless Chromium from a ``sync_playwright()`` handle."""
    require()
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(args))
