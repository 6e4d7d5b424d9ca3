"""Rolling back: the effective configuration and its sources, the minimal profile, and
``yz health`` against a baseline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from yzcore.config import engine_config, resolve
from yzcore.exceptions import InvalidConfig

from .procs import get_json, wait_for

YZ = [sys.executable, "-m", "yzcore.cli"]


@pytest.mark.req("B8.2", "B8.3")
def test_each_value_comes_from_the_last_place_that_sets_it():
    s = resolve(environ={})
    assert s["maintenance_interval_settled"].value == 5.0 and s["metrics"].source == "default"
    s = resolve("minimal", environ={"YZ_METRICS": "1"}, flags={"probe_interval": 7.0},
                sets=["maintenance_interval_settled=2.5", "conn-target=5"])
    assert (s["metrics"].value, s["metrics"].source) == (True, "YZ_METRICS")  # env over profile
    assert (s["rate_limit"].value, s["rate_limit"].source) == (False, "profile minimal")
    assert (s["probe_interval"].value, s["probe_interval"].source) == (7.0, "--probe-interval")
    assert (s["maintenance_interval_settled"].value, s["maintenance_interval_settled"].source) == (2.5, "--set")
    assert engine_config(s).conn_target == 5 and engine_config(s).maintenance_interval_settled == 2.5
    assert resolve(role="bridge", environ={})["start_jitter"].value == 0.0
    assert engine_config(resolve(sets=["join_refresh_below=0"], environ={})).join_refresh_below == 0
    for bad in (["nope=1"], ["conn_target=x"], ["rpc_timeout=-1"], ["conn_target=20"], ["metrics"],
                ["probe_interval=0"], ["start_jitter=-1"], ["join_refresh_below=-1"]):
        with pytest.raises(InvalidConfig):
            resolve(sets=bad, environ={})
    with pytest.raises(InvalidConfig):
        resolve("tiny", environ={})


@pytest.mark.req("B8.2")
def test_yz_config_show_prints_every_knob_with_its_source():
    out = subprocess.run([*YZ, "config", "show", "--profile", "minimal", "--set", "refresh_interval=900",
                          "--json"], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    shown = json.loads(out.stdout)
    assert shown["refresh_interval"] == {"value": 900.0, "source": "--set"}
    assert shown["metrics"] == {"value": False, "source": "profile minimal"}
    assert shown["k"] == {"value": 20, "source": "default"}
    bad = subprocess.run([*YZ, "config", "show", "--set", "conn_target=x"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert bad.returncode == 1 and "[INVALID_CONFIG]" in bad.stderr


def _health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*YZ, "health", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.req("B8.3", "B8.5", "B8.1")
def test_a_minimal_network_and_health_back_to_its_baseline_after_a_rollback(procs, tmp_path):
    _, boot = procs.start("boot", "bootstrap", "--listen", "127.0.0.1:0", "--node-ttl", "3")
    url = boot["address"]
    names = [f"n{i}" for i in range(5)]
    infos = {name: procs.node(name, "--bootstrap", url, "--profile", "minimal")[1] for name in names}

    def network() -> dict | None:
        status = get_json(url, "/status")
        return status if status and status["network"]["nodes"] == 5 and status["network"]["share"] == 1.0 else None

    _, took = wait_for("5 healthy nodes with the minimal profile", network, 60)
    print(f"minimal profile: 5/5 healthy after {took:.1f} s")
    node = get_json(infos["n0"]["address"], "/status")
    assert node["metrics"] is False and node["config"]["rate_limit"] == {"value": False,
                                                                         "source": "profile minimal"}
    baseline = tmp_path / "baseline.json"
    saved = _health("--bootstrap", url, "--save-baseline", str(baseline))
    assert saved.returncode == 0 and "5/5 healthy (100%)" in saved.stdout, saved.stdout
    # A bad release: two nodes die. The comparison names what is below.
    for proc in procs.procs[-2:]:
        proc.kill()
    wait_for("the server notices", lambda: (s := get_json(url, "/status")) and s["network"]["nodes"] == 3, 30)
    below = _health("--bootstrap", url, "--compare", str(baseline))
    assert below.returncode == 1 and "[HEALTH_BELOW_BASELINE]" in below.stdout, below.stdout
    assert "nodes 3 < 90% of baseline 5" in below.stdout
    # Rolled back: the two come back with an earlier release's maintenance interval.
    for name in names[-2:]:
        procs.node(name, "--bootstrap", url, "--profile", "minimal", "--set", "maintenance_interval=2")
    wait_for("healthy again", network, 60)
    back = _health("--bootstrap", url, "--compare", str(baseline), "--json")
    verdict = json.loads(back.stdout)
    assert back.returncode == 0 and verdict["back_to_baseline"] and verdict["now"]["share"] == 1.0, verdict
    unreachable = _health("--bootstrap", "ws://127.0.0.1:9/dht")
    assert unreachable.returncode == 2 and "[BOOTSTRAP_UNREACHABLE]" in unreachable.stderr
    a_node = _health("--bootstrap", infos["n0"]["address"])  # it said "0/0 healthy", exit 0
    assert a_node.returncode == 2 and "[WRONG_ROLE]" in a_node.stderr, a_node.stdout


@pytest.mark.req("B8.4", "B8.2")
def test_each_fix_attempt_is_a_git_commit_and_a_node_starts_again_from_an_earlier_one(procs,
                                                                                    tmp_path):
    from tests.core.test_history import need_git

    need_git()
    data = tmp_path / "n"

    def start(name: str, *args: str) -> dict:
        proc, info = procs.node(name, *args)
        node = get_json(info["address"], "/status")
        proc.terminate()
        proc.wait(timeout=10)
        # A running node says which attempt it runs, as its first line did.
        assert (node["history"]["attempt"], node["history"]["commit"]) == (info["attempt"],
                                                                            info["commit"])
        return {**info, "config": node["config"], "message": node["history"]["message"]}

    first = start("n")
    assert first["attempt"] == 1
    assert start("n")["attempt"] == 1  # restarted unchanged: no new attempt
    fix = start("n", "--set", "maintenance_interval_settled=2", "--no-metrics")
    assert fix["attempt"] == 2
    assert fix["config"]["metrics"] == {"value": False, "source": "--no-metrics"}
    back = start("n", "--rollback", "1")
    # Every value attempt 1 ran with, defaults included, comes back.
    assert back["attempt"] == 3
    assert back["config"]["maintenance_interval_settled"] == {"value": 5.0,
                                                              "source": "rollback to attempt 1"}
    assert back["config"]["metrics"] == {"value": True, "source": "rollback to attempt 1"}

    listed = subprocess.run([*YZ, "config", "history", "--data-dir", str(data), "--json"],
                            capture_output=True, text=True, timeout=30, check=True)
    attempts = json.loads(listed.stdout)
    assert [a["commit"] for a in attempts] == [first["commit"], fix["commit"], back["commit"]]
    assert attempts[1]["message"] == ("attempt 2: maintenance_interval_settled 5.0 -> 2.0 "
                                      "(--set), metrics True -> False (--no-metrics)")
    assert attempts[2]["message"].startswith("attempt 3: rollback to attempt 1; ")
    assert back["message"] == attempts[2]["message"]
    git = ["git", "--git-dir", str(data / "history")]
    subprocess.run([*git, "fsck", "--strict"], check=True, timeout=30, capture_output=True)
    log = subprocess.run([*git, "log", "--format=%s"], capture_output=True, text=True, timeout=30,
                         check=True).stdout.splitlines()
    assert log == [a["message"] for a in reversed(attempts)]
    wrong = subprocess.run([*YZ, "node", "--listen", "127.0.0.1:0", "--data-dir", str(data),
                            "--rollback", "9"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 1 and "[INVALID_CONFIG] no attempt '9'" in wrong.stderr
    assert "yz config history --data-dir DIR" in wrong.stderr
    as_bridge = subprocess.run([*YZ, "config", "show", "--role", "bridge", "--data-dir", str(data),
                                "--rollback", "1"], capture_output=True, text=True, timeout=30)
    assert as_bridge.returncode == 1
    assert "attempt 1 configured a node, and this is a bridge" in as_bridge.stderr
