"""Node identity: an Ed25519 key pair, and the node id derived from it.

A node's id is ``sha256(public_key)`` (32 bytes), so nobody can claim an id
without holding its private key: the signed hello (see
:mod:`yzcore.protocol.handshake`) proves possession. The private key lives in
``<data_dir>/node.key`` (32 raw bytes, mode 0600), so a restarted node keeps
its id and its place in other nodes' routing tables.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from yzcore.exceptions import DataDirInUse, InvalidArgument, KeyFileError, KeyFilePermissionError

__all__ = [
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "KEY_FILE",
    "Identity",
    "verify",
    "node_id_of",
    "load_or_create",
    "holding",
]

KEY_BYTES = 32  #: length of an Ed25519 private or public key
SIGNATURE_BYTES = 64  #: length of an Ed25519 signature
KEY_FILE = "node.key"  #: file name of the private key inside the data directory
LOCK_FILE = "lock"  #: held by the process running on the data directory (its pid inside)

_log = logging.getLogger("yzcore.identity")
_DIR_ADVICE = "Make the data directory readable and writable by this user, or use another one."


def node_id_of(public_key: bytes) -> bytes:
    """The node id of a public key: its sha256 digest (32 bytes).

    Raises:
        InvalidArgument: ``public_key`` is not 32 bytes.
    """
    if not isinstance(public_key, bytes) or len(public_key) != KEY_BYTES:
        raise InvalidArgument(
            f"an Ed25519 public key is {KEY_BYTES} bytes, got {_describe(public_key)}."
        )
    return hashlib.sha256(public_key).digest()


class Identity:
    """An Ed25519 key pair and the node id it proves.

    Build one with :meth:`generate`, :meth:`from_private_bytes` or
    :func:`load_or_create`.

    Attributes:
        public_key: The 32 raw bytes of the public key.
        node_id: ``sha256(public_key)``, 32 bytes.
    """

    __slots__ = ("_key", "public_key", "node_id")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )
        self.node_id: bytes = hashlib.sha256(self.public_key).digest()

    @classmethod
    def generate(cls) -> Identity:
        """A fresh key pair from the operating system's random source."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, private: bytes) -> Identity:
        """The identity of a raw 32-byte Ed25519 private key.

        Raises:
            InvalidArgument: ``private`` is not 32 bytes.
        """
        if not isinstance(private, bytes) or len(private) != KEY_BYTES:
            raise InvalidArgument(
                f"an Ed25519 private key is {KEY_BYTES} raw bytes, got {_describe(private)}."
            )
        return cls(Ed25519PrivateKey.from_private_bytes(private))

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key. Keep it secret; it *is* this node's id."""
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        # Never the private key: reprs end up in logs and tracebacks.
        return f"<Identity {self.node_id.hex()[:16]}>"


def verify(public_key: bytes, data: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is a valid Ed25519 signature of ``data`` by ``public_key``.

    Answers False for any failure, including a malformed key or signature; it
    never raises for bad input, because both come from untrusted peers.
    """
    if not (
        isinstance(public_key, bytes)
        and isinstance(data, bytes)
        and isinstance(sig, bytes)
        and len(public_key) == KEY_BYTES
        and len(sig) == SIGNATURE_BYTES
    ) or _weak_key(public_key):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# The points of order 1, 2, 4 and 8 of Curve25519 (RFC 8032 §5.1), by their
# y coordinate (the encoding's sign bit picks x, which does not change the
# order): 1, -1, 0 and the two y of the order-8 points.
_P = 2**255 - 19
_Y8 = int.from_bytes(
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
)
_SMALL_ORDER_Y = frozenset((0, 1, _P - 1, _Y8, _P - _Y8))
_Y_MASK = (1 << 255) - 1


def _weak_key(public_key: bytes) -> bool:
    """Whether ``public_key`` is a small-order point or a non-canonical encoding.

    OpenSSL verifies without the cofactor and accepts such points as keys. For
    them a "signature" can be found without any private key (the all-zero key
    accepts the all-zero signature for about one message in four), so anyone
    could complete a hello as ``sha256(that point)``. Honest keys are
    ``[a]B`` for a secret scalar ``a`` and never land there.
    """
    y = int.from_bytes(public_key, "little") & _Y_MASK
    return y >= _P or y in _SMALL_ORDER_Y


def load_or_create(data_dir: str | os.PathLike[str]) -> Identity:
    """This node's identity, kept in ``<data_dir>/node.key`` across restarts.

    Reads the key when the file exists; otherwise creates the directory (mode
    0700) if needed and writes a new key (mode 0600) atomically, so a crash
    never leaves half a key behind and two processes starting together end up
    with the same one.

    Raises:
        KeyFilePermissionError: the key file is readable or writable by group
            or others (``KEY_FILE_PERMISSIONS``).
        KeyFileError: the key file is not 32 bytes, not a regular file, or
            cannot be read or written (``KEY_FILE_INVALID``).
    """
    directory = Path(data_dir)
    path = directory / KEY_FILE
    identity = _read_key(path)
    if identity is not None:
        return identity
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity = _create_key(directory, path)
    except OSError as exc:
        raise KeyFileError(
            f"cannot create the node key {path}: {exc}.", advice=_DIR_ADVICE
        ) from exc
    _log.info("created a new node identity %s in %s", identity.node_id.hex(), path,
              extra={"peer_id": identity.node_id.hex()})
    return identity


@contextmanager
def holding(data_dir: str | os.PathLike[str] | None) -> Iterator[Callable[[], None]]:
    """Hold ``<data_dir>/lock`` while the block runs: one process on a data directory
    (nothing to hold without one). Yields a function that lets it go sooner.

    Raises:
        DataDirInUse: another process holds it (its pid is in the message).
    """
    try:
        import fcntl  # POSIX: elsewhere there is no lock to take
    except ImportError:
        data_dir = None
    if data_dir is None:
        yield lambda: None
        return
    held: list[int] = []

    def release() -> None:
        while held:
            os.close(held.pop())  # (closing frees the lock; the kernel does if we die)

    try:
        try:
            held.append(os.open(Path(data_dir) / LOCK_FILE,
                                os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600))
            fcntl.flock(held[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(held[0], 0)
            os.pwrite(held[0], f"{os.getpid()}\n".encode(), 0)
        except BlockingIOError:
            holder = os.pread(held[0], 32, 0).decode(errors="replace").strip() or "?"
            raise DataDirInUse(f"{data_dir} is in use by process {holder}.") from None
        except OSError as exc:  # read-only, or a file system without locks: run, and say so
            release()
            _log.warning("running without the lock of %s (%s): make sure no other process "
                         "uses this data directory", data_dir, exc,
                         extra={"code": "DATA_DIR_UNLOCKED"})
        yield release
    finally:
        release()


def _read_key(path: Path) -> Identity | None:
    """The identity stored at ``path``, or None when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if os.path.islink(path):  # a link to a key that is not there (a volume not mounted)
            raise KeyFileError(
                f"the node key {path} links to {os.readlink(path)}, which does not exist.",
                advice="This node's identity is there: mount or restore it (or remove the link "
                       "to start as a new node, with a new id).") from None
        return None
    except OSError as exc:
        raise KeyFileError(f"cannot open the node key {path}: {exc}.", advice=_DIR_ADVICE) from exc
    try:
        # fstat on the open descriptor: the file we check is the file we read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"the node key {path} is not a regular file.")
        # POSIX permission bits mean nothing on Windows, where ACLs rule.
        if os.name == "posix" and st.st_mode & 0o077:
            raise KeyFilePermissionError(
                f"the node key {path} has mode {stat.S_IMODE(st.st_mode):04o}; anyone who reads "
                "it can impersonate this node, so it must be private to its owner."
            )
        data = os.read(fd, KEY_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read the node key {path}: {exc}.", advice=_DIR_ADVICE) from exc
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        more = "more than" if len(data) > KEY_BYTES else "only"
        raise KeyFileError(
            f"the node key {path} holds {more} {min(len(data), KEY_BYTES)} bytes, "
            f"not the {KEY_BYTES} raw bytes of an Ed25519 private key."
        )
    return Identity.from_private_bytes(data)


def _create_key(directory: Path, path: Path) -> Identity:
    """Write a new key to ``path`` atomically; if another process won the race, use its key."""
    identity = Identity.generate()
    # mkstemp creates the file with mode 0600 from the start: the key is never
    # readable by others, not even for a moment.
    fd, tmp = tempfile.mkstemp(prefix=".node.key.", suffix=".tmp", dir=directory)
    try:
        try:
            os.write(fd, identity.private_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # A hard link publishes the complete file atomically and, unlike
            # rename, never replaces a key another process just wrote.
            os.link(tmp, path)
        except FileExistsError:
            existing = _read_key(path)
            if existing is None:  # deleted under our feet: try once more, never over a file
                os.link(tmp, path)
                return identity
            return existing
        except OSError:
            os.replace(tmp, path)  # filesystems without hard links
        _fsync_dir(directory)
        return identity
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _fsync_dir(directory: Path) -> None:
    """Make the new directory entry durable; best effort where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__
