"""The one exception tree of yzcore.

Every error a user can see is a :class:`YzError` with a stable ``code`` (for
scripts, logs and the error reference) and a message that says what to do
next::

    YzError                          code            meaning
    ├── InvalidArgument              INVALID_ARGUMENT  a caller passed a bad value
    │   ├── InvalidId                INVALID_ID        not a 32-byte / 64-hex node id
    │   └── InvalidConfig            INVALID_CONFIG    a limit or setting is out of range
    ├── LocalProtocolError           LOCAL_PROTOCOL    we broke the protocol (a bug here)
    └── RemoteProtocolError          REMOTE_PROTOCOL   the peer broke the protocol

``InvalidArgument`` also derives from :class:`ValueError`, so code written
against the standard library keeps working. The compiled modules raise these
same classes.
"""

from __future__ import annotations

__all__ = [
    "YzError",
    "InvalidArgument",
    "InvalidId",
    "InvalidConfig",
    "LocalProtocolError",
    "RemoteProtocolError",
]


class YzError(Exception):
    """Root of every yzcore error.

    Attributes:
        code: A stable, upper-case identifier, e.g. ``RATE_LIMITED``.
        advice: One sentence telling the user what to do about it.
    """

    code = "YZ_ERROR"
    advice = "See the error reference in the yzcore docs for this code."

    def __init__(self, message: str, *, advice: str | None = None) -> None:
        if advice is not None:
            self.advice = advice
        super().__init__(message)

    def __str__(self) -> str:
        return f"[{self.code}] {self.args[0]} {self.advice}"


class InvalidArgument(YzError, ValueError):
    """A caller passed a value the API cannot accept."""

    code = "INVALID_ARGUMENT"
    advice = "Check the value against the documented range of the argument."


class InvalidId(InvalidArgument):
    """Something that should be a node id (32 bytes, or 64 lowercase hex digits) is not."""

    code = "INVALID_ID"
    advice = "Node ids are 32 bytes (sha256 of the public key), or 64 hex digits on the wire."


class InvalidConfig(InvalidArgument):
    """A limit, size or interval is outside its allowed range."""

    code = "INVALID_CONFIG"
    advice = "Use a finite, positive number; `yz config show` prints the defaults."


class LocalProtocolError(YzError):
    """This node tried to do something the protocol forbids: a bug in yzcore."""

    code = "LOCAL_PROTOCOL"
    advice = "Please report it with the log lines around it."


class RemoteProtocolError(YzError):
    """A peer sent something the protocol forbids."""

    code = "REMOTE_PROTOCOL"
    advice = "The peer is misbehaving or runs an incompatible build; it has been dropped."
