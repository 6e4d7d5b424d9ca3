"""Every configuration a node was started with, kept as git commits in its data dir (B8.4).

A start whose configuration differs from the last one recorded is a *fix
attempt*: a commit in ``<data_dir>/history`` (a bare git repository, branch
``main``) holding one file, ``config.json``: the yzcore and protocol
versions, the role and every value that is not a default, with its source.
A restart with the same configuration adds nothing. The commit's message
says what changed, e.g. ``attempt 3: maintenance_interval_settled 5.0 ->
2.0 (--set)``.

Rolling back is starting with an earlier attempt's values
(``yz node --rollback N``), itself recorded as the next attempt, so the
history only grows. ``yz config history`` lists the attempts; ``git
--git-dir <data_dir>/history log -p`` shows each change as a diff.

The objects are written here (zlib-compressed loose objects, as git writes
them): a node needs no git program, and any git can read the history.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from yzcore.exceptions import HistoryError, InvalidConfig

__all__ = ["LIST_THEM", "Attempt", "ConfigHistory", "snapshot"]

LIST_THEM = "`yz config history --data-dir DIR` lists the attempts recorded in DIR."

_FILE = b"config.json"
_BRANCH = "refs/heads/main"
_GIT_CONFIG = b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One recorded configuration."""

    number: int  #: 1 for the first start recorded
    commit: str  #: the git commit id (40 hex digits)
    time: int  #: seconds since the epoch
    message: str  #: "attempt N: what changed"
    config: dict[str, Any]  #: the recorded ``config.json``

    def settings(self) -> dict[str, Any]:
        """The knobs this attempt set, by name (what ``--rollback`` starts from)."""
        return {k: v["value"] for k, v in self.config.get("config", {}).items()}


def snapshot(overrides: Mapping[str, Mapping[str, Any]], *, version: str, protocol: str,
             role: str) -> dict[str, Any]:
    """What an attempt records: versions, role, and the non-default values with their sources."""
    return {"yzcore": version, "protocol": protocol, "role": role,
            "config": {k: dict(v) for k, v in sorted(overrides.items())}}


def _changes(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """One line saying how ``new`` differs from ``old``."""
    if old is None:
        knobs = ", ".join(f"{k}={v['value']} ({v['source']})" for k, v in new["config"].items())
        return "first start recorded: " + (knobs or "defaults")
    parts = [f"{key} {old[key]} -> {new[key]}" for key in ("yzcore", "protocol", "role")
             if old.get(key) != new[key]]
    before, after = old.get("config", {}), new["config"]
    for k in sorted(set(before) | set(after)):  # values only: the diff shows the sources
        was, now = before.get(k), after.get(k)
        if now is None and was is not None:
            parts.append(f"{k} back to its default (was {was['value']})")
        elif now is not None and (was is None or was["value"] != now["value"]):
            before_value = was["value"] if was else "default"
            parts.append(f"{k} {before_value} -> {now['value']} ({now['source']})")
    return ", ".join(parts) or "the same values, set another way"


class ConfigHistory:
    """The bare git repository ``<data_dir>/history``."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, "history")

    # -- reading -----------------------------------------------------------------------

    def attempts(self) -> list[Attempt]:
        """Every recorded attempt, the first first."""
        out: list[Attempt] = []
        commit = self._head()
        try:
            while commit is not None:
                fields, message = self._commit(commit)
                blob = self._tree_file(fields["tree"])
                out.append(Attempt(0, commit, int(fields["committer"].split()[-2]), message,
                                   orjson.loads(self._object(blob, "blob"))))
                commit = fields.get("parent")
        except (KeyError, ValueError, IndexError, orjson.JSONDecodeError) as exc:
            raise HistoryError(f"{self.path} is not a history this node wrote ({exc}).") from None
        out.reverse()
        return [Attempt(i, a.commit, a.time, a.message, a.config) for i, a in enumerate(out, 1)]

    def find(self, rev: str) -> Attempt:
        """The attempt ``rev`` names: its number, or a prefix of its commit id (4+ hex digits)."""
        attempts = self.attempts()
        if rev.isdigit() and 1 <= int(rev) <= len(attempts):
            return attempts[int(rev) - 1]
        hits = [a for a in attempts if len(rev) >= 4 and a.commit.startswith(rev.lower())]
        if len(hits) == 1:
            return hits[0]
        raise InvalidConfig(f"no attempt {rev!r} in {self.path} ({len(attempts)} recorded).",
                            advice=LIST_THEM)

    # -- writing -----------------------------------------------------------------------

    def record(self, config: dict[str, Any], *, now: int, author: str,
               note: str | None = None) -> tuple[Attempt, bool]:
        """Record ``config`` (a :func:`snapshot`) unless it is the last one recorded.

        Returns the attempt it is and whether it is new. ``note`` goes first in
        a new attempt's message (e.g. "rollback to attempt 2").
        """
        attempts = self.attempts() if self._head() is not None else []
        last = attempts[-1] if attempts else None
        if last is not None and last.config == config:
            return last, False
        body = orjson.dumps(config, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        try:
            self._init()
            blob = self._write("blob", body)
            tree = self._write("tree", b"100644 " + _FILE + b"\0" + bytes.fromhex(blob))
            number = len(attempts) + 1
            summary = _changes(last.config if last else None, config)
            message = f"attempt {number}: " + (f"{note}; {summary}" if note else summary)
            who = f"yzcore <{author}@yzcore> {now} +0000"
            lines = [f"tree {tree}"] + ([f"parent {last.commit}"] if last else [])
            lines += [f"author {who}", f"committer {who}", "", message, ""]
            commit = self._write("commit", "\n".join(lines).encode())
            self._replace(os.path.join(self.path, _BRANCH), (commit + "\n").encode())
        except OSError as exc:
            raise HistoryError(f"cannot write {self.path}: {exc.strerror or exc}.") from None
        return Attempt(number, commit, now, message, config), True

    # -- git's object store ------------------------------------------------------------

    def _head(self) -> str | None:
        try:
            with open(os.path.join(self.path, _BRANCH), encoding="ascii") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise HistoryError(f"cannot read {self.path}: {exc}.") from None

    def _init(self) -> None:
        for sub in ("objects", "refs/heads", "refs/tags"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)
        head = os.path.join(self.path, "HEAD")
        if not os.path.exists(head):
            self._replace(os.path.join(self.path, "config"), _GIT_CONFIG)
            self._replace(head, b"ref: " + _BRANCH.encode() + b"\n")

    def _write(self, kind: str, body: bytes) -> str:
        raw = kind.encode() + b" " + str(len(body)).encode() + b"\0" + body
        sha = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
        path = os.path.join(self.path, "objects", sha[:2], sha[2:])
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._replace(path, zlib.compress(raw))
        return sha

    def _object(self, sha: str, kind: str) -> bytes:
        try:
            with open(os.path.join(self.path, "objects", sha[:2], sha[2:]), "rb") as f:
                raw = zlib.decompress(f.read())
        except (OSError, zlib.error) as exc:
            damaged = f"object {sha} of {self.path} is missing or damaged: {exc}."
            raise HistoryError(damaged) from None
        header, _, body = raw.partition(b"\0")
        if header.split(b" ")[0] != kind.encode():
            raise HistoryError(f"object {sha} of {self.path} is not a {kind}.")
        return body

    def _commit(self, sha: str) -> tuple[dict[str, str], str]:
        head, _, message = self._object(sha, "commit").decode().partition("\n\n")
        fields = dict(line.split(" ", 1) for line in head.splitlines())
        return fields, message.strip()

    def _tree_file(self, sha: str) -> str:
        """The blob id of ``config.json`` in tree ``sha``."""
        body = self._object(sha, "tree")
        while body:
            entry, _, rest = body.partition(b"\0")
            if entry.split(b" ", 1)[1] == _FILE:
                return rest[:20].hex()
            body = rest[20:]
        raise HistoryError(f"tree {sha} of {self.path} has no config.json.")

    @staticmethod
    def _replace(path: str, data: bytes) -> None:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
