"""Every configuration a node was started with, kept as git commits in its data dir (B8.4).

A start whose configuration differs from the last one recorded is a *fix
attempt*: a commit in ``<data_dir>/history`` (a bare git repository, branch
``main``, see :mod:`yzcore.gitstore`) holding one file, ``config.json``: the
yzcore and protocol versions, the role, and every knob's value with its
source, defaults included, so a release that changed a default shows it. A
restart with the same configuration adds nothing. The commit's message says
what changed, e.g. ``attempt 3: maintenance_interval_settled 5.0 -> 2.0 (--set)``.

Rolling back is starting with an earlier attempt's values
(``yz node --rollback N``), itself recorded as the next attempt, so the
history only grows. ``yz config history`` lists the attempts; ``git
--git-dir <data_dir>/history log -p`` shows each change as a diff.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from yzcore.exceptions import HistoryError, InvalidConfig
from yzcore.gitstore import GitStore

__all__ = ["LIST_THEM", "Attempt", "ConfigHistory", "snapshot"]

LIST_THEM = "`yz config history --data-dir DIR` lists the attempts recorded in DIR."

_FILE = b"config.json"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One recorded configuration."""

    number: int  #: 1 for the first start recorded
    commit: str  #: the git commit id (40 hex digits)
    time: int  #: seconds since the epoch
    message: str  #: "attempt N: what changed"
    config: dict[str, Any]  #: the recorded ``config.json``

    def settings(self) -> dict[str, Any]:
        """Every knob's value, by name (what ``--rollback`` restores)."""
        return {k: v["value"] for k, v in self.config["config"].items()}


def snapshot(settings: Mapping[str, Any], *, version: str, protocol: str,
             role: str) -> dict[str, Any]:
    """What an attempt records: versions, role, and each knob's value and source
    (``settings``: :func:`yzcore.config.resolve`'s result)."""
    return {"yzcore": version, "protocol": protocol, "role": role,
            "config": {k: {"value": s.value, "source": s.source}
                       for k, s in sorted(settings.items())}}


def _valid(config: object) -> bool:
    """Whether ``config`` has the shape :func:`snapshot` gives (a newer release may not)."""
    if not isinstance(config, dict) or not all(
            isinstance(config.get(k), str) for k in ("yzcore", "protocol", "role")):
        return False
    knobs = config.get("config")
    return isinstance(knobs, dict) and all(
        isinstance(v, dict) and isinstance(v.get("source"), str)
        and isinstance(v.get("value"), (bool, int, float)) for v in knobs.values())


def _changes(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """One line saying how ``new`` differs from ``old`` (values only: the diff shows sources)."""
    if old is None:
        set_ = ", ".join(f"{k}={v['value']} ({v['source']})" for k, v in new["config"].items()
                         if not v["source"].startswith("default"))
        return "first start recorded: " + (set_ or "defaults")
    parts = [f"{key} {old[key]} -> {new[key]}" for key in ("yzcore", "protocol", "role")
             if old[key] != new[key]]
    before, after = old["config"], new["config"]
    for k in sorted(set(before) | set(after)):
        was, now = before.get(k), after.get(k)
        if now is None:
            parts.append(f"{k} gone (was {was['value']})")  # type: ignore[index]
        elif was is None or was["value"] != now["value"]:
            before_value = was["value"] if was else "new"
            parts.append(f"{k} {before_value} -> {now['value']} ({now['source']})")
    return ", ".join(parts) or "the same values, set another way"


class ConfigHistory:
    """The attempts recorded in ``<data_dir>/history``."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, "history")
        self._git = GitStore(self.path)

    def attempts(self) -> list[Attempt]:
        """Every recorded attempt, the first first."""
        out: list[Attempt] = []
        commit = self._git.head()
        try:
            while commit is not None:
                head, _, message = self._git.read(commit, "commit").decode().partition("\n\n")
                fields = dict(line.split(" ", 1) for line in head.splitlines())
                config = orjson.loads(self._git.read(self._file_in(fields["tree"]), "blob"))
                if not _valid(config):
                    raise ValueError(f"config.json of {commit[:12]} has another shape")
                out.append(Attempt(0, commit, int(fields["committer"].split()[-2]),
                                   message.strip(), config))
                commit = fields.get("parent")
        except (KeyError, ValueError, IndexError, UnicodeDecodeError) as exc:
            unreadable = f"{self.path} is not a history this release can read ({exc})."
            raise HistoryError(unreadable) from None
        out.reverse()
        return [Attempt(i, a.commit, a.time, a.message, a.config) for i, a in enumerate(out, 1)]

    def find(self, rev: str) -> Attempt:
        """The attempt ``rev`` names: its number, or 4+ hex digits its commit id starts with."""
        attempts = self.attempts()
        hits = []
        if re.fullmatch(r"[1-9][0-9]*", rev) and int(rev) <= len(attempts):
            hits.append(attempts[int(rev) - 1])
        if re.fullmatch(r"[0-9a-fA-F]{4,40}", rev):
            hits += [a for a in attempts if a.commit.startswith(rev.lower()) and a not in hits]
        if len(hits) == 1:
            return hits[0]
        if hits:
            named = ", ".join(f"attempt {a.number} ({a.commit[:12]})" for a in hits)
            raise InvalidConfig(f"{rev!r} names more than one attempt: {named}.",
                                advice="Give the attempt's number, or more of its commit id.")
        raise InvalidConfig(f"no attempt {rev!r} in {self.path} ({len(attempts)} recorded).",
                            advice=LIST_THEM)

    def record(self, config: dict[str, Any], *, now: int, author: str,
               note: str | None = None) -> tuple[Attempt, bool]:
        """Record ``config`` (a :func:`snapshot`) unless it is the last one recorded.

        Returns the attempt it is and whether it is new. ``note`` goes first in
        a new attempt's message (e.g. "rollback to attempt 2").
        """
        try:
            with self._git.updating() as set_head:  # read and extend the branch under its lock
                attempts = self.attempts()
                last = attempts[-1] if attempts else None
                if last is not None and last.config == config:
                    return last, False
                body = orjson.dumps(config, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                blob = self._git.write("blob", body + b"\n")
                tree = self._git.write("tree", b"100644 " + _FILE + b"\0" + bytes.fromhex(blob))
                summary = _changes(last.config if last else None, config)
                message = (f"attempt {len(attempts) + 1}: "
                           + (f"{note}; {summary}" if note else summary))
                who = f"yzcore <{author}@yzcore> {now} +0000"
                lines = [f"tree {tree}"] + ([f"parent {last.commit}"] if last else [])
                lines += [f"author {who}", f"committer {who}", "", message, ""]
                commit = self._git.write("commit", "\n".join(lines).encode())
                set_head(commit)
        except OSError as exc:
            raise HistoryError(f"cannot write {self.path}: {exc.strerror or exc}.") from None
        return Attempt(len(attempts) + 1, commit, now, message, config), True

    def _file_in(self, tree: str) -> str:
        """The blob id of ``config.json`` in ``tree``."""
        body = self._git.read(tree, "tree")
        while body:
            entry, _, rest = body.partition(b"\0")
            if entry.split(b" ", 1)[1] == _FILE:
                return rest[:20].hex()
            body = rest[20:]
        raise ValueError(f"tree {tree[:12]} holds no config.json")
