"""Shared test fixtures.

Every compiled module is tested against its pure-Python twin: the fixtures
``xor``, ``kbucket`` and ``ratelimit`` are parametrised over the two (ids
``c`` and ``py``). The ``c`` variant fails loudly when the extension is not
built, unless ``YZCORE_NO_EXTENSIONS=1`` says the twins are all there is.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

# No deadlines (shared CI machines are noisy) and a bound on shrinking, so a
# failure is reported in seconds rather than minutes.
settings.register_profile(
    "yz", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
settings.register_profile("yz-ci", parent=settings.get_profile("yz"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "yz-ci" if os.environ.get("CI") else "yz"))

NO_EXTENSIONS = os.environ.get("YZCORE_NO_EXTENSIONS", "").strip() not in ("", "0")


def load_impl(name: str, which: str) -> ModuleType:
    """Import ``yzcore.<name>`` (``c``) or ``yzcore.<name>_py`` (``py``)."""
    if which == "py":
        return importlib.import_module(f"yzcore.{name}_py")
    if NO_EXTENSIONS:
        pytest.skip("YZCORE_NO_EXTENSIONS=1: only the pure-Python twins are tested")
    try:
        return importlib.import_module(f"yzcore.{name}")
    except ImportError as exc:
        pytest.fail(
            f"compiled yzcore.{name} is not built ({exc}); run `make test`, or set "
            "YZCORE_NO_EXTENSIONS=1 to test only the twins",
            pytrace=False,
        )


@pytest.fixture(scope="session", params=["c", "py"])
def xor(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl("_xor", request.param)


@pytest.fixture(scope="session", params=["c", "py"])
def kbucket(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl("_kbucket", request.param)


@pytest.fixture(scope="session", params=["c", "py"])
def ratelimit(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl("_ratelimit", request.param)


def impl_pair(name: str) -> tuple[ModuleType, ModuleType]:
    """(compiled, pure) modules of ``name`` for differential tests; skips without extensions."""
    return load_impl(name, "c"), load_impl(name, "py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--req-json FILE``, write {criterion: [test ids]} for `make req-report`."""
    path = config.getoption("--req-json")
    if not path:
        return
    import json

    table: dict[str, list[str]] = {}
    for item in items:
        for mark in item.iter_markers("req"):
            for crit in mark.args:
                table.setdefault(str(crit), []).append(item.nodeid)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(table, fh, indent=1, sort_keys=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "req(*ids): the requirement criteria (A1.4, B7.3, ...) this test proves"
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--req-json", default=None, help="write the criteria -> tests table here")


#: Tests that must run in CI, never skip: the browser and WebRTC paths (issue: "make
#: .ci/run fail if they are skipped") and the ones git checks. Elsewhere a missing Chromium
#: or git may skip them.
MUST_RUN_IN_CI = ("test_browser_ws.py", "test_browser_rtc.py", "test_webrtc.py", "test_history.py",
                  "test_rollback.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and item.path.name in MUST_RUN_IN_CI:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} was skipped in CI ({report.longrepr}); it must run there"
