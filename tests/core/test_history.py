"""The configuration history: each fix attempt a git commit in the data dir (B8.4).

git itself reads what yzcore writes: the objects must be ones any git accepts, and
what git does to the repository (gc) must never make the history start over.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import orjson
import pytest

from yzcore.config import resolve
from yzcore.exceptions import HistoryError, InvalidConfig
from yzcore.gitstore import GitStore
from yzcore.history import ConfigHistory, snapshot

pytestmark = pytest.mark.req("B8.4")


def _config(version: str = "1.0.0", role: str = "node", **kw: object) -> dict:
    return snapshot(resolve(environ={}, role=role, **kw), version=version, protocol="1.1",
                    role=role)


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
    assert new and first.number == 1
    assert first.message == "attempt 1: first start recorded: defaults"
    assert first.config["config"]["conn_target"] == {"value": 4, "source": "default"}  # all knobs
    again, new = h.record(_config(), now=1_700_000_100, author="aa")
    assert not new and again == first  # a restart with the same values is no attempt
    second, new = h.record(_config(sets=["maintenance_interval_settled=2", "conn_target=5"]),
                           now=1_700_000_200, author="aa")
    assert new and second.message == ("attempt 2: conn_target 4 -> 5 (--set), "
                                       "maintenance_interval_settled 5.0 -> 2.0 (--set)")
    third, _ = h.record(_config(version="1.1.0", profile="minimal"), now=1_700_000_300,
                        author="aa", note="try the minimal profile")
    assert third.message.startswith("attempt 3: try the minimal profile; yzcore 1.0.0 -> 1.1.0, "
                                    "conn_target 5 -> 3 (profile minimal), ")
    assert "maintenance_interval_settled 2.0 -> 1.0" in third.message
    assert [a.number for a in h.attempts()] == [1, 2, 3]
    assert h.attempts()[1].settings()["conn_target"] == 5

    repo = h.path
    _git(repo, "fsck", "--strict")  # raises unless every object and ref is sound
    log = _git(repo, "log", "--format=%H %at %s").splitlines()
    assert log == [f"{a.commit} {a.time} {a.message}" for a in reversed(h.attempts())]
    shown = _git(repo, "show", f"{second.commit}:config.json")
    assert orjson.loads(shown)["config"]["conn_target"] == {"value": 5, "source": "--set"}
    diff = _git(repo, "diff", first.commit, second.commit)
    assert '-      "value": 4' in diff and '+      "value": 5' in diff


def test_what_git_gc_does_never_makes_the_history_start_over(tmp_path):
    need_git()
    h = ConfigHistory(str(tmp_path))
    first, _ = h.record(_config(), now=1, author="aa")
    _git(h.path, "pack-refs", "--all")  # the branch moves to packed-refs
    assert not os.path.exists(os.path.join(h.path, "refs", "heads", "main"))
    assert [a.commit for a in h.attempts()] == [first.commit]
    second, new = h.record(_config(sets=["conn_target=5"]), now=2, author="aa")
    assert new and second.number == 2 and _git(h.path, "rev-list", "--count", "main").strip() == "2"
    _git(h.path, "gc", "--quiet")  # objects packed: refused, not taken for an empty history
    with pytest.raises(HistoryError, match=r"git has packed .* \(git gc\)") as err:
        h.attempts()
    assert "unpack-objects" in err.value.advice
    with pytest.raises(HistoryError):
        h.record(_config(sets=["conn_target=6"]), now=3, author="aa")
    # Unpacked as the how-to says, it reads again, whole.
    packs = tmp_path / "packs"
    shutil.move(os.path.join(h.path, "objects", "pack"), packs)
    for pack in packs.glob("*.pack"):
        with open(pack, "rb") as f:
            subprocess.run(["git", "--git-dir", h.path, "unpack-objects", "-q"], stdin=f,
                           check=True, timeout=30)
    assert [a.commit for a in h.attempts()] == [first.commit, second.commit]


def test_an_attempt_is_found_by_number_or_commit_prefix_and_nothing_else(tmp_path):
    h = ConfigHistory(str(tmp_path))
    with pytest.raises(InvalidConfig, match=r"no attempt '1' .* \(0 recorded\)") as err:
        h.find("1")
    assert "yz config history" in err.value.advice
    a1, _ = h.record(_config(), now=1, author="aa")
    a2, _ = h.record(_config(sets=["conn_target=5"]), now=2, author="aa")
    assert h.find("1") == a1 and h.find("2") == a2 and h.find(a2.commit[:7].upper()) == a2
    for bad in ("0", "3", "01", "²", a1.commit[:3], "zzzz", "", " 1"):
        with pytest.raises(InvalidConfig):
            h.find(bad)
    # A number that is also the start of a commit id is ambiguous, not a silent choice.
    digits = next((a.commit[:4] for a in (a1, a2) if a.commit[:4].isdigit()), None)
    if digits is not None and int(digits) <= 2:  # (only with ids that happen to start so)
        with pytest.raises(InvalidConfig, match="more than one attempt"):
            h.find(digits)


def test_a_rollback_restores_every_value_and_is_its_own_attempt(tmp_path):
    h = ConfigHistory(str(tmp_path))
    h.record(_config(sets=["conn_target=5"]), now=1, author="aa")
    h.record(_config(sets=["conn_target=6", "ping_quiet=30"]), now=2, author="aa")
    rolled = resolve(environ={}, rollback=("rollback to attempt 1", h.find("1").settings()))
    conn_target = rolled["conn_target"]
    assert (conn_target.value, conn_target.source) == (5, "rollback to attempt 1")
    default = resolve(environ={})["ping_quiet"].value
    assert rolled["ping_quiet"].value == default  # attempt 1 ran with the default: restored too
    third, new = h.record(snapshot(rolled, version="1.0.0", protocol="1.1", role="node"),
                          now=3, author="aa", note="rollback to attempt 1")
    assert new and third.message == ("attempt 3: rollback to attempt 1; conn_target 6 -> 5 "
                                     f"(rollback to attempt 1), ping_quiet 30.0 -> {default} "
                                     "(rollback to attempt 1)")
    assert len(h.attempts()) == 3  # the history only grows
    # An older release's default is restored with the attempt (here: a changed ping_quiet).
    older = dict(h.find("1").settings(), ping_quiet=45.0)
    assert resolve(environ={}, rollback=("r", older))["ping_quiet"].value == 45.0


def test_a_rollback_refuses_what_it_cannot_honour():
    with pytest.raises(InvalidConfig, match="--profile minimal and --rollback"):
        resolve("minimal", environ={}, rollback=("rollback to attempt 1", {}))
    with pytest.raises(InvalidConfig, match="set gone_knob, which this release does not") as err:
        resolve(environ={}, rollback=("rollback to attempt 1", {"gone_knob": 1}))
    assert "Run the release that attempt recorded" in err.value.advice
    for bad in ({"conn_target": 2.5}, {"rate_limit": 1}, {"probe_interval": float("inf")},
                {"probe_interval": True}, {"conn_target": None}):
        with pytest.raises(InvalidConfig):
            resolve(environ={}, rollback=("rollback to attempt 1", bad))
    with pytest.raises(InvalidConfig, match="is not float"):
        resolve(environ={}, sets=["probe_interval=inf"])  # never recorded as null
    # The recorded values still pass the usual checks, and --set still applies on top.
    s = resolve(environ={}, rollback=("rollback to attempt 1", {"conn_target": 5}),
                sets=["conn_target=6"])
    assert (s["conn_target"].value, s["conn_target"].source) == (6, "--set")


def test_a_damaged_foreign_or_busy_history_is_a_history_error(tmp_path):
    h = ConfigHistory(str(tmp_path))
    first, _ = h.record(_config(), now=1, author="aa")
    obj = os.path.join(h.path, "objects", first.commit[:2], first.commit[2:])
    os.chmod(obj, 0o644)
    with open(obj, "wb") as f:
        f.write(b"not zlib")
    with pytest.raises(HistoryError, match="is damaged") as err:
        h.attempts()
    assert err.value.code == "CONFIG_HISTORY" and "move it aside" in err.value.advice
    # A config.json of another shape (a newer release, a hand edit): refused, not misread.
    other = ConfigHistory(str(tmp_path / "other"))
    git = GitStore(other.path)
    with git.updating() as set_head:
        blob = git.write("blob", orjson.dumps(dict(_config(), config={"conn_target": 5})))
        tree = git.write("tree", b"100644 config.json\0" + bytes.fromhex(blob))
        who = "x <x@x> 1 +0000"
        set_head(git.write("commit", f"tree {tree}\nauthor {who}\ncommitter {who}\n\nm\n"
                                     .encode()))
    with pytest.raises(HistoryError, match="another shape"):
        other.attempts()
    with pytest.raises(HistoryError, match="another shape"):  # nor written on top of
        other.record(_config(), now=2, author="aa")
    # A repository another git made (another branch): refused before anything is written.
    foreign = tmp_path / "foreign" / "history"
    foreign.mkdir(parents=True)
    (foreign / "HEAD").write_text("ref: refs/heads/master\n")
    (foreign / "config").write_text("[core]\n\tbare = true\n")
    with pytest.raises(HistoryError, match="not a history yzcore wrote"):
        ConfigHistory(str(tmp_path / "foreign")).record(_config(), now=1, author="aa")
    # Another start holds the branch's lock: this one says so and writes nothing.
    busy = ConfigHistory(str(tmp_path / "busy"))
    busy.record(_config(), now=1, author="aa")
    lock = os.path.join(busy.path, "refs", "heads", "main.lock")
    open(lock, "w").close()
    with pytest.raises(HistoryError, match="main.lock exists") as err:
        busy.record(_config(sets=["conn_target=5"]), now=2, author="aa")
    assert "remove that lock file" in err.value.advice and len(busy.attempts()) == 1
    os.unlink(lock)
    assert busy.record(_config(sets=["conn_target=5"]), now=2, author="aa")[1]
    assert not os.path.exists(lock)
    # (Tests run as root, so a file stands where a directory should be.)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the data dir should be")
    with pytest.raises(HistoryError):
        ConfigHistory(str(blocked)).record(_config(), now=1, author="aa")


def test_a_writer_never_removes_the_lock_another_writer_took_after_it(tmp_path):
    # set_head renames our lock onto the branch; a lock file there afterwards is the
    # next writer's, and removing it let two writers in at once (attempts were lost).
    from yzcore.gitstore import _BRANCH

    store = GitStore(str(tmp_path / "history.git"))
    lock = os.path.join(store.path, _BRANCH) + ".lock"
    with store.updating() as set_head:
        set_head(store.write("blob", b"x"))  # any object will do: only the ref moves
        with open(lock, "w"):  # the next writer takes the lock
            pass
    assert os.path.exists(lock)
    os.unlink(lock)
    with store.updating():  # and our own lock goes when we did not move the branch
        pass
    assert not os.path.exists(lock)
