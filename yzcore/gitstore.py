"""The little of git that the configuration history needs: loose objects and one branch.

It writes what git writes (a bare repository, zlib-compressed loose objects, the branch
``main``), so any git reads it, and reads back what it wrote. What it cannot read is
refused with :class:`~yzcore.exceptions.HistoryError`, never taken for an empty history: a
repository another git made differently, or one ``git gc`` has packed. Every file is
written to a temporary name, synced and renamed into place; the branch is updated under
git's own lock file (``refs/heads/main.lock``), so two writers cannot both extend it.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from yzcore.exceptions import HistoryError

__all__ = ["GitStore"]

_BRANCH = "refs/heads/main"
_HEAD = b"ref: refs/heads/main\n"
# gc.auto = 0: git commands run in the repository never pack it behind yzcore's back.
_CONFIG = (b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"
           b"[gc]\n\tauto = 0\n")
UNPACK = ("Unpack it: move its objects/pack aside and run `git --git-dir DIR unpack-objects "
          "< FILE.pack` for each pack (docs/howto/roll-back.md), or move it aside to begin anew.")


class GitStore:
    """A bare git repository at ``path``, branch ``main``."""

    def __init__(self, path: str) -> None:
        self.path = path

    # -- reading -----------------------------------------------------------------------

    def head(self) -> str | None:
        """The branch's commit; None for a repository with none yet (or no repository)."""
        self._check_foreign()
        try:
            with open(os.path.join(self.path, _BRANCH), encoding="ascii") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            raise HistoryError(f"cannot read {self.path}: {exc}.") from None
        try:  # git gc moves refs here
            with open(os.path.join(self.path, "packed-refs"), encoding="ascii") as f:
                for line in f:
                    sha, _, name = line.strip().partition(" ")
                    if name == _BRANCH:
                        return sha
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            raise HistoryError(f"cannot read {self.path}: {exc}.") from None
        return None

    def read(self, sha: str, kind: str) -> bytes:
        """The body of object ``sha``, which must be a ``kind`` ("blob", "tree", "commit")."""
        try:
            with open(self._object_path(sha), "rb") as f:
                raw = zlib.decompress(f.read())
        except FileNotFoundError:
            if self._packed():
                raise HistoryError(f"git has packed {self.path} (git gc); yzcore reads loose "
                                   "objects only.", advice=UNPACK) from None
            raise HistoryError(f"object {sha} of {self.path} is missing.") from None
        except (OSError, zlib.error) as exc:
            raise HistoryError(f"object {sha} of {self.path} is damaged: {exc}.") from None
        header, _, body = raw.partition(b"\0")
        if header.split(b" ")[0] != kind.encode():
            raise HistoryError(f"object {sha} of {self.path} is not a {kind}.")
        return body

    def _packed(self) -> bool:
        try:
            return any(n.endswith(".pack") for n in os.listdir(os.path.join(self.path, "objects",
                                                                            "pack")))
        except OSError:
            return False

    def _check_foreign(self) -> None:
        """Refuse a repository another git made with another branch or object format."""
        try:
            with open(os.path.join(self.path, "HEAD"), "rb") as f:
                head = f.read()
            with open(os.path.join(self.path, "config"), "rb") as f:
                config = f.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise HistoryError(f"cannot read {self.path}: {exc}.") from None
        if head.strip() != _HEAD.strip() or b"objectformat" in config.lower():
            raise HistoryError(f"{self.path} is not a history yzcore wrote (its HEAD or object "
                               "format differ).")

    # -- writing -----------------------------------------------------------------------

    def write(self, kind: str, body: bytes) -> str:
        """Store an object; its id. One left damaged (a crash mid-write) is written again."""
        raw = kind.encode() + b" " + str(len(body)).encode() + b"\0" + body
        sha = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
        path = self._object_path(sha)
        try:
            with open(path, "rb") as f:
                if zlib.decompress(f.read()) == raw:
                    return sha
        except (OSError, zlib.error):
            pass
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _replace(path, zlib.compress(raw))
        return sha

    @contextmanager
    def updating(self) -> Iterator[Callable[[str], None]]:
        """Hold git's lock on the branch (create the repository first if there is none);
        yields ``set_head(sha)``, which moves the branch to commit ``sha``."""
        self._check_foreign()
        for sub in ("objects", "refs/heads", "refs/tags"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)
        if not os.path.exists(os.path.join(self.path, "HEAD")):
            _replace(os.path.join(self.path, "config"), _CONFIG)
            _replace(os.path.join(self.path, "HEAD"), _HEAD)
        lock = os.path.join(self.path, _BRANCH) + ".lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise HistoryError(f"{lock} exists: another start is recording its configuration, "
                               "or one stopped while it did.", advice="If no yz node is starting "
                               "on this data dir, remove that lock file.") from None
        ours = os.fstat(fd).st_ino  # set_head renames it onto the branch: then it is gone
        os.close(fd)
        try:
            yield lambda sha: _replace(lock, (sha + "\n").encode(),
                                       into=os.path.join(self.path, _BRANCH))
        finally:
            with suppress(FileNotFoundError):
                if os.stat(lock).st_ino == ours:  # a lock there now may be the next writer's
                    os.unlink(lock)

    def _object_path(self, sha: str) -> str:
        return os.path.join(self.path, "objects", sha[:2], sha[2:])


def _replace(path: str, data: bytes, *, into: str | None = None) -> None:
    """Write ``data`` to ``path`` durably, then rename it to ``into`` (default: ``path``)."""
    tmp = path if into is not None else f"{path}.{os.getpid()}.tmp"
    target = into or path
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fd = os.open(os.path.dirname(target), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
