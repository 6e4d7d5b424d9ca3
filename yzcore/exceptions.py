"""The one exception tree of yzcore.

Every error a user can see is a :class:`YzError` with a stable ``code`` (for
scripts, logs and the error reference) and a message that says what to do
next::

    YzError                          code            meaning
    ├── InvalidArgument              INVALID_ARGUMENT  a caller passed a bad value
    │   ├── InvalidId                INVALID_ID        not a 32-byte / 64-hex node id
    │   └── InvalidConfig            INVALID_CONFIG    a limit or setting is out of range
    ├── LocalProtocolError           LOCAL_PROTOCOL    we broke the protocol (a bug here)
    │   └── EncodeError              (per instance)    a message we cannot send
    ├── RemoteProtocolError          REMOTE_PROTOCOL   the peer broke the protocol
    │   └── WireError                (per instance)    a bad frame or an error reply
    │       └── HandshakeError       (per instance)    the signed hello failed
    ├── PubSubFailed                 (per instance)    no home took a subscription or message
    ├── HistoryError                 CONFIG_HISTORY    <data_dir>/history is unusable
    ├── DataDirInUse                 DATA_DIR_IN_USE   another process runs on <data_dir>
    ├── KeyFileError                 KEY_FILE_INVALID  <data_dir>/node.key is unusable
    │   └── KeyFilePermissionError   KEY_FILE_PERMISSIONS  node.key is open to others
    └── TransportError               TRANSPORT_ERROR   a transport could not carry a message
        ├── ConnectFailed            CONNECT_FAILED    refused, unreachable or timed out
        │   └── WsUpgradeRejected    WS_UPGRADE_REJECTED  HTTP, but no 101 (200: a web page)
        ├── ListenFailed             LISTEN_FAILED     the listen address cannot be bound
        ├── ConnectionClosed         CONNECTION_CLOSED  the peer or the network closed it
        ├── FrameTooLarge            FRAME_TOO_LARGE   a message is over max_frame
        └── TransportUnavailable     TRANSPORT_UNAVAILABLE  no loadable plugin

``InvalidArgument`` also derives from :class:`ValueError`, so code written
against the standard library keeps working. The compiled modules raise these
same classes.

The classes marked *per instance* carry one of the wire error codes of
:class:`yzcore.wire.ErrorCode` in ``code``; their default advice is
:func:`yzcore.wire.advice` of that code.
"""

from __future__ import annotations

__all__ = [
    "YzError",
    "InvalidArgument",
    "InvalidId",
    "InvalidConfig",
    "LocalProtocolError",
    "RemoteProtocolError",
    "EncodeError",
    "WireError",
    "HandshakeError",
    "PubSubFailed",
    "HistoryError",
    "DataDirInUse",
    "KeyFileError",
    "KeyFilePermissionError",
    "TransportError",
    "ConnectFailed",
    "NameNotResolved",
    "RelayUnavailable",
    "WebRtcFailed",
    "WsUpgradeRejected",
    "ListenFailed",
    "ConnectionClosed",
    "FrameTooLarge",
    "TransportUnavailable",
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


def _wire_advice(code: str) -> str:
    # Imported here: yzcore.wire imports this module, and the advice table
    # lives beside the codes it explains.
    from yzcore.wire import advice

    return advice(code)


class EncodeError(LocalProtocolError):
    """This node tried to send a message the wire format cannot carry.

    Attributes:
        code: A wire error code, e.g. ``VALUE_TOO_LARGE`` or ``INVALID_MESSAGE``.
    """

    def __init__(self, code: str, message: str, *, advice: str | None = None) -> None:
        self.code = str(code)
        super().__init__(message, advice=advice if advice is not None else _wire_advice(code))


class WireError(RemoteProtocolError):
    """A peer sent something invalid, or refused something we sent.

    Raised by :func:`yzcore.wire.decode` for every bad frame; turn it into the
    ``error`` reply with :func:`yzcore.wire.error_reply`.

    Attributes:
        code: A wire error code (see :class:`yzcore.wire.ErrorCode`).
        rid: The request id of the offending message when it could be read, so
            the reply can name the request; else None.
        retry_after: Seconds to wait before retrying, for ``RATE_LIMITED``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        rid: int | None = None,
        retry_after: float | None = None,
        advice: str | None = None,
    ) -> None:
        self.code = str(code)
        self.rid = rid
        self.retry_after = retry_after
        super().__init__(message, advice=advice if advice is not None else _wire_advice(code))

    @property
    def message(self) -> str:
        """The message without code and advice."""
        return str(self.args[0])


class HandshakeError(WireError):
    """The signed hello failed: wrong version, bad signature, unexpected id...

    The connection must be closed; the peer never enters a routing table.
    """


class PubSubFailed(YzError):
    """No home node of a channel took a subscription or a published message.

    Attributes:
        code: A wire error code: ``NO_PEERS`` (no server node found to hold the
            channel), ``TIMEOUT`` (no home answered), or the code a home
            refused with (``RATE_LIMITED``, ``OVER_CAPACITY``).
    """

    def __init__(self, code: str, message: str, *, advice: str | None = None) -> None:
        from yzcore.messages import advice as advice_for  # messages imports this module

        self.code = code
        super().__init__(message, advice=advice or advice_for(code))


class HistoryError(YzError):
    """The configuration history (``<data_dir>/history``) cannot be read or written."""

    code = "CONFIG_HISTORY"
    advice = (
        "Make <data_dir>/history readable and writable by the node's user, or move it aside "
        "to begin a new history (a node still starts, without recording its configuration)."
    )


class DataDirInUse(YzError):
    """Another process runs on this ``--data-dir`` (it holds ``<data_dir>/lock``)."""

    code = "DATA_DIR_IN_USE"
    advice = (
        "Two processes with one key are one node twice, and the network keeps only one: stop "
        "the other process, or give this one its own --data-dir."
    )


class KeyFileError(YzError):
    """The node key file (``<data_dir>/node.key``) cannot be used."""

    code = "KEY_FILE_INVALID"
    advice = (
        "node.key must hold exactly the 32 raw bytes of an Ed25519 private key; move the "
        "file aside to let the node create a new one (the node then gets a new id)."
    )


class KeyFilePermissionError(KeyFileError):
    """The node key file is readable or writable by group or others."""

    code = "KEY_FILE_PERMISSIONS"
    advice = (
        "Restrict it to its owner with `chmod 600 <data_dir>/node.key` (in Kubernetes, mount "
        "the secret with defaultMode: 0400)."
    )


class TransportError(YzError):
    """A transport (``ws``, ``mem``, a plugin, ...) could not carry a message."""

    code = "TRANSPORT_ERROR"
    advice = "The message names the address and the cause; `yz diagnose` checks each step."


class ConnectFailed(TransportError):
    """Dialling an address failed: refused, unreachable, unresolvable or timed out."""

    code = "CONNECT_FAILED"
    advice = (
        "Check the address, that the peer is running, and that its port is reachable from "
        "here (`yz diagnose --bootstrap URL` tests each step)."
    )


class RelayUnavailable(ConnectFailed):
    """A bridge would not relay to the peer: it holds no connection to it, the peer did
    not answer in time, or the bridge relays too much already."""

    code = "RELAY_UNAVAILABLE"
    advice = ("The bridge would not relay (no connection to that peer, no answer from it, or "
              "too many relays already): retry shortly, through another of its bridges, or look "
              "its id up again for its current address.")


class NameNotResolved(ConnectFailed):
    """A host name did not resolve, and no address is known for it from before."""

    code = "DNS_FAILED"
    advice = (
        "The name does not resolve from here: check its spelling and this host's resolver "
        "(/etc/resolv.conf), or use the IP address instead."
    )


class WebRtcFailed(ConnectFailed):
    """A WebRTC DataChannel could not be opened: no answer, ICE failed, or time ran out.

    Attributes:
        relays: The ws:// URLs of server nodes the peer said it can be
            reached through (from its answer), for the relayed fallback.
    """

    code = "WEBRTC_FAILED"
    advice = (
        "The two peers found no WebRTC path (UDP dropped by a firewall, or NAT on both sides): "
        "configure a STUN/TURN server with --ice-server; traffic goes through a relay meanwhile."
    )

    def __init__(self, message: str, *, relays: tuple[str, ...] = (), advice: str | None = None,
                 code: str | None = None) -> None:
        self.relays = relays
        if code is not None:
            self.code = code
        super().__init__(message, advice=advice)


class WsUpgradeRejected(ConnectFailed):
    """The server answered the WebSocket handshake over HTTP, but not with 101.

    Attributes:
        status: The HTTP status it answered with (``None`` if the answer was not valid HTTP).
    """

    code = "WS_UPGRADE_REJECTED"
    advice = "Point the URL at a yzcore node's WebSocket endpoint: ws://HOST:PORT/dht."

    def __init__(
        self, message: str, *, status: int | None = None, advice: str | None = None
    ) -> None:
        self.status = status
        super().__init__(message, advice=advice)


class ListenFailed(TransportError):
    """The listen address cannot be bound (in use, not a local address, no permission)."""

    code = "LISTEN_FAILED"
    advice = "Choose another port (0 picks a free one) or stop the process that holds it."


class ConnectionClosed(TransportError):
    """The connection is closed: the peer left, the network dropped it, or we closed it.

    Attributes:
        close_code: The WebSocket-style close code (1000 normal, 1001 going away, 1006
            dropped without a close, 1009 frame too large, ...), or ``None`` where the
            transport has no codes.
        reason: The close reason the peer gave, if any.
        silent: Nothing closed it: the peer stopped answering (its host died, the path to
            it was cut, or its process hangs), and a timeout gave up on it.
    """

    code = "CONNECTION_CLOSED"
    advice = "The peer went away; connection managers reconnect with backoff."

    def __init__(
        self,
        message: str,
        *,
        close_code: int | None = None,
        reason: str = "",
        advice: str | None = None,
        silent: bool = False,
    ) -> None:
        self.close_code = close_code
        self.reason = reason
        self.silent = silent
        super().__init__(message, advice=advice)


class FrameTooLarge(TransportError):
    """A message is larger than the receiving side accepts (``max_frame``, 64 KiB by default).

    Raised by ``send()`` before anything is sent, so the connection stays usable.

    Attributes:
        size: The size of the refused message in bytes.
        limit: The limit it broke.
    """

    code = "FRAME_TOO_LARGE"
    advice = "Split the payload; frames are limited to 64 KiB by default (max_frame)."

    def __init__(self, message: str, *, size: int, limit: int, advice: str | None = None) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message, advice=advice)


class TransportUnavailable(TransportError):
    """No transport plugin serves this URL scheme, or its plugin failed to load."""

    code = "TRANSPORT_UNAVAILABLE"
    advice = "Install the package that provides this transport; `yz version` lists them."
