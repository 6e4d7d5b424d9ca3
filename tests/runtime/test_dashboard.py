"""The bootstrap server's dashboard, in a real Chromium: it shows the running network.

Debian's Chromium through Playwright's Python API (``executable_path``; never
``playwright install``). The test saves a screenshot of the page.
"""

from __future__ import annotations

import os
import shutil

import pytest

from .chromium import launch
from .procs import get_json, http_url, wait_for


@pytest.mark.req("B1.1")
def test_the_dashboard_shows_the_running_network_and_its_graph(procs, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, boot = procs.start("boot", "bootstrap", "--listen", "127.0.0.1:0", "--bridges", "1")
    url = boot["address"]
    for i in range(6):
        procs.node(f"n{i}", "--bootstrap", url)
    wait_for("6 healthy nodes and a healthy bridge", lambda: (s := get_json(url, "/status"))
             and s["network"]["nodes"] == 6 and s["network"]["share"] == 1.0
             and any(b["healthy"] for b in s["bridges"]), 60)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(http_url(url) + "/")
        page.wait_for_function("document.querySelectorAll('#nodes tbody tr').length === 6", timeout=15000)
        page.wait_for_function("document.querySelector('#rate-now').textContent.includes('frames/s')",
                               timeout=15000)
        assert page.text_content("#share") == "100% healthy"
        assert "6/6 nodes healthy" in page.text_content("#summary")
        assert "1/1 bridges healthy" in page.text_content("#summary")
        assert page.locator("#nodes tbody tr td:nth-child(4)").all_text_contents() == ["healthy"] * 6
        assert page.locator("#graph circle").count() == 6
        assert int(page.get_attribute("#graph", "data-edges")) >= 6  # 3+ connections each, shared
        assert "ms" in page.text_content("#latency-now")
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("YZ_SCREENSHOT_DIR")
    if keep:  # CI keeps it beside its logs
        shutil.copy(shot, os.path.join(keep, "dashboard.png"))
    print(f"dashboard screenshot: {shot}")
