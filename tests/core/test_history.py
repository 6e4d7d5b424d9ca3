"""The configuration history: each fix attempt a git commit in the data dir (B8.4).

git itself reads what yzcore writes: the objects must be ones any git accepts.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from yzcore.config import overrides, resolve
from yzcore.exceptions import HistoryError, InvalidConfig
from yzcore.history import ConfigHistory, snapshot

pytestmark = pytest.mark.req("B8.4")


def _config(version: str = "1.0.0", **kw: object) -> dict:
    return snapshot(overrides(resolve(environ={}, **kw)), version=version, protocol="1.1",
                    role="node")


def _git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def need_git() -> None:
    """git itself checks what yzcore writes (a skip here fails under CI=true)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the history is checked by git itself")


def test_each_changed_configuration_is_one_commit_and_git_reads_them(tmp_path):
    need_git()
    h = ConfigHistory(str(tmp_path))
    first, new = h.record(_config(), now=1_700_000_000, author="aa")
    assert new and first.number == 1 and first.message == "attempt 1: first start recorded: defaults"
    again, new = h.record(_config(), now=1_700_000_100, author="aa")
    assert not new and again == first  # a restart with the same values is no attempt
    second, new = h.record(_config(sets=["maintenance_interval_settled=2", "conn_target=5"]),
                           now=1_700_000_200, author="aa")
    assert new and second.message == ("attempt 2: conn_target default -> 5 (--set), "
                                       "maintenance_interval_settled default -> 2.0 (--set)")
    third, _ = h.record(_config(version="1.1.0", profile="minimal"), now=1_700_000_300, author="aa",
                        note="try the minimal profile")
    assert third.message.startswith("attempt 3: try the minimal profile; yzcore 1.0.0 -> 1.1.0, "
                                    "conn_target 5 -> 3 (profile minimal), ")
    assert "maintenance_interval_settled 2.0 -> 1.0" in third.message
    assert [a.number for a in h.attempts()] == [1, 2, 3]
    assert h.attempts()[1].settings() == {"conn_target": 5, "maintenance_interval_settled": 2.0}

    repo = h.path
    _git(repo, "fsck", "--strict")  # raises unless every object and ref is sound
    log = _git(repo, "log", "--format=%H %at %s").splitlines()
    assert log == [f"{a.commit} {a.time} {a.message}" for a in reversed(h.attempts())]
    shown = _git(repo, "show", f"{second.commit}:config.json")
    assert '"value": 5' in shown and '"source": "--set"' in shown
    diff = _git(repo, "diff", first.commit, second.commit)
    assert '+    "conn_target": {' in diff


def test_an_attempt_is_found_by_number_or_commit_prefix_and_nothing_else(tmp_path):
    h = ConfigHistory(str(tmp_path))
    with pytest.raises(InvalidConfig, match=r"no attempt '1' .* \(0 recorded\)") as err:
        h.find("1")
    assert "yz config history" in err.value.advice
    a1, _ = h.record(_config(), now=1, author="aa")
    a2, _ = h.record(_config(sets=["conn_target=5"]), now=2, author="aa")
    assert h.find("1") == a1 and h.find("2") == a2 and h.find(a2.commit[:7].upper()) == a2
    for bad in ("0", "3", a1.commit[:3], "zzzz", ""):
        with pytest.raises(InvalidConfig):
            h.find(bad)


def test_going_back_to_a_default_is_said_and_a_rollback_is_its_own_attempt(tmp_path):
    h = ConfigHistory(str(tmp_path))
    h.record(_config(sets=["conn_target=5"]), now=1, author="aa")
    h.record(_config(sets=["conn_target=6"]), now=2, author="aa")
    back = h.find("1").settings()
    rolled = resolve(environ={}, rollback=("rollback to attempt 1", back))
    assert (rolled["conn_target"].value, rolled["conn_target"].source) == (5, "rollback to attempt 1")
    third, new = h.record(snapshot(overrides(rolled), version="1.0.0", protocol="1.1", role="node"),
                          now=3, author="aa", note="rollback to attempt 1")
    assert new and third.message == ("attempt 3: rollback to attempt 1; "
                                     "conn_target 6 -> 5 (rollback to attempt 1)")
    fourth, _ = h.record(_config(), now=4, author="aa")
    assert fourth.message == "attempt 4: conn_target back to its default (was 5)"
    assert len(h.attempts()) == 4  # the history only grows


def test_a_rollback_refuses_what_it_cannot_honour():
    with pytest.raises(InvalidConfig, match="--profile minimal and --rollback"):
        resolve("minimal", environ={}, rollback=("rollback to attempt 1", {}))
    with pytest.raises(InvalidConfig, match="set gone_knob, which this release does not have") as err:
        resolve(environ={}, rollback=("rollback to attempt 1", {"gone_knob": 1}))
    assert "Run the release that attempt recorded" in err.value.advice
    # The recorded values still pass the usual checks, and --set still applies on top.
    s = resolve(environ={}, rollback=("rollback to attempt 1", {"conn_target": 5}),
                sets=["conn_target=6"])
    assert (s["conn_target"].value, s["conn_target"].source) == (6, "--set")


def test_a_damaged_or_unwritable_history_is_a_history_error(tmp_path):
    h = ConfigHistory(str(tmp_path))
    first, _ = h.record(_config(), now=1, author="aa")
    obj = os.path.join(h.path, "objects", first.commit[:2], first.commit[2:])
    os.chmod(obj, 0o644)
    with open(obj, "wb") as f:
        f.write(b"not zlib")
    with pytest.raises(HistoryError, match="missing or damaged") as err:
        h.attempts()
    assert err.value.code == "CONFIG_HISTORY" and "move it aside" in err.value.advice
    # (Tests run as root, so a file stands where a directory should be.)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the data dir should be")
    with pytest.raises(HistoryError, match="cannot read .*Not a directory"):
        ConfigHistory(str(blocked)).record(_config(), now=1, author="aa")
    (tmp_path / "other" / "history").mkdir(parents=True)
    (tmp_path / "other" / "history" / "objects").write_text("not a directory")
    with pytest.raises(HistoryError, match="cannot write"):
        ConfigHistory(str(tmp_path / "other")).record(_config(), now=1, author="aa")
