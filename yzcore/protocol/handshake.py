"""The signed hello: both sides prove their key and bind their claims to it.

Sans-I/O: no socket, no clock, no random source. The caller draws the nonce
(from its injected rng or ``os.urandom``), sends what :meth:`Handshake.start`
and :meth:`Handshake.receive` return, and enforces the handshake timeout
(``HANDSHAKE_TIMEOUT``) itself.

The exchange is symmetric and takes one round trip::

    A                                   B
    Hello(nonce=Na) ───────┐ ┌───────── Hello(nonce=Nb)
                           ╳
    Auth(sign_A(T(Nb))) ◀──┘ └──▶       Auth(sign_B(T(Na)))

where ``T(peer_nonce)`` is :func:`transcript`: a fixed prefix, the peer's
nonce (length-prefixed), the signer's node id and the canonical bytes of the
signer's own hello claims (role, addresses, capabilities, version, agent).
Signing the *peer's* fresh nonce proves the key is live on this connection
(an old hello and auth replayed elsewhere fail); signing the claims binds the
role and addresses to the key, so nobody can advertise an address in another
node's name.

On a :class:`~yzcore.exceptions.HandshakeError` the caller sends
``wire.error_reply(err)`` and closes the connection: the peer never enters a
routing table.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from yzcore import __version__
from yzcore.exceptions import HandshakeError, InvalidArgument, LocalProtocolError, WireError
from yzcore.identity import Identity, node_id_of, verify
from yzcore.wire import (
    NONCE_MAX,
    NONCE_MIN,
    PROTOCOL_VERSION,
    ROLES,
    Auth,
    Error,
    ErrorCode,
    Hello,
    Message,
    check_version,
    encode,
)

__all__ = ["DEFAULT_AGENT", "TRANSCRIPT_PREFIX", "PeerInfo", "Handshake", "transcript"]

DEFAULT_AGENT = f"yzcore/{__version__}"  #: the agent string a Handshake sends by default
TRANSCRIPT_PREFIX = b"yz-hello-v1\x00"  #: domain separation: these signatures mean nothing else


def transcript(peer_nonce: bytes, hello: Hello) -> bytes:
    """The bytes the sender of ``hello`` signs for a peer that sent ``peer_nonce``.

    ``TRANSCRIPT_PREFIX + len(peer_nonce) (1 byte) + peer_nonce + sha256(hello.key)
    + canonical(hello)``, where ``canonical`` is the compact JSON (sorted keys,
    UTF-8, no spaces) of ``{"advertise", "agent", "caps", "listen", "role",
    "version"}``. Signer and verifier both call this one function.
    """
    claims = {
        "advertise": hello.advertise,
        "agent": hello.agent,
        "caps": list(hello.caps),
        "listen": list(hello.listen),
        "role": hello.role,
        "version": hello.version,
    }
    return b"".join((
        TRANSCRIPT_PREFIX,
        # The length byte keeps the nonce/id boundary unambiguous.
        bytes((len(peer_nonce),)),
        peer_nonce,
        node_id_of(hello.key),
        orjson.dumps(claims, option=orjson.OPT_SORT_KEYS),
    ))


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer whose hello was verified.

    Attributes:
        id: Its node id, ``sha256(key)``.
        key: Its 32-byte Ed25519 public key.
        role: The role it claims (signed), one of ``wire.ROLES``.
        listen: The addresses it listens on (signed).
        advertise: The URL it asks others to dial, or None (signed).
        caps: Its capabilities (signed).
        version: Its protocol version (signed; compatible with ours).
        agent: Its software name and version (signed).
    """

    id: bytes
    key: bytes
    role: str
    listen: tuple[str, ...]
    advertise: str | None
    caps: tuple[str, ...]
    version: str
    agent: str


class Handshake:
    """One side of the signed hello on one connection.

    Args:
        identity: This node's key pair.
        role: The role we claim, one of ``wire.ROLES``.
        listen: The addresses we listen on.
        advertise: The URL others should dial, or None if we accept no inbound connections.
        caps: Our capability names.
        nonce: 16 to 64 fresh random bytes, new for every connection.
        agent: Our software name and version.
        expected_id: The node id we meant to reach when we dialled; None when
            the peer dialled us or any node will do.

    Raises:
        InvalidArgument: ``nonce``, ``role`` or ``expected_id`` is malformed.
        EncodeError: another field breaks a wire limit (see ``docs/reference/wire.md``).

    Attributes:
        done: True once the peer's auth verified and our auth was produced.
        peer: The verified peer once ``done``, else None.
    """

    __slots__ = ("done", "peer", "_identity", "_hello", "_expected", "_started", "_theirs",
                 "_failed")

    def __init__(
        self,
        identity: Identity,
        *,
        role: str,
        listen: tuple[str, ...],
        advertise: str | None,
        caps: tuple[str, ...],
        nonce: bytes,
        agent: str = DEFAULT_AGENT,
        expected_id: bytes | None = None,
    ) -> None:
        if not isinstance(nonce, bytes) or not NONCE_MIN <= len(nonce) <= NONCE_MAX:
            raise InvalidArgument(
                f"the hello nonce must be {NONCE_MIN} to {NONCE_MAX} fresh random bytes.",
                advice="Draw it per connection, e.g. nonce=rng.randbytes(32) or os.urandom(32).",
            )
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}, got {role!r}.")
        if expected_id is not None and (not isinstance(expected_id, bytes)
                                        or len(expected_id) != 32):
            raise InvalidArgument("expected_id must be a 32-byte node id or None.")
        self._identity = identity
        self._hello = Hello(PROTOCOL_VERSION, identity.public_key, nonce, role, tuple(listen),
                            advertise, tuple(caps), agent)
        encode(self._hello)  # every wire limit checked now, as our error, not the peer's
        self._expected = expected_id
        self._started = False
        self._theirs: Hello | None = None
        self._failed = False
        self.done = False
        self.peer: PeerInfo | None = None

    def start(self) -> Hello:
        """Our hello; send it as soon as the connection opens, whoever dialled.

        Raises:
            LocalProtocolError: called twice.
        """
        if self._started:
            raise LocalProtocolError("Handshake.start() was called twice; send one hello only.")
        self._started = True
        return self._hello

    def receive(self, msg: Message) -> list[Message]:
        """Feed the next message from the peer; answers the messages to send back.

        Feed every message until :attr:`done`; after that, messages belong to
        the protocol engine.

        Raises:
            HandshakeError: the peer failed the handshake; send
                ``wire.error_reply(err)`` and close. Codes: ``VERSION_MISMATCH``
                (naming both versions), ``BAD_SIGNATURE``, ``ID_MISMATCH``,
                ``SELF_CONNECTION``, ``HANDSHAKE_REQUIRED`` (a message other than
                hello/auth, or auth before hello), ``INVALID_MESSAGE`` (a second
                hello or auth, a malformed field), or the peer's own code when
                it sent an ``error``.
            LocalProtocolError: called before :meth:`start`, after
                :attr:`done`, or after a failure.
        """
        if self._failed:
            raise LocalProtocolError("this handshake already failed; close the connection.")
        if self.done:
            raise LocalProtocolError("the handshake is done; give messages to the protocol engine.")
        if not self._started:
            raise LocalProtocolError("call Handshake.start() and send our hello before receive().")
        try:
            return self._receive(msg)
        except HandshakeError:
            self._failed = True
            raise

    def _receive(self, msg: Message) -> list[Message]:
        if isinstance(msg, Hello):
            if self._theirs is not None:
                raise HandshakeError(ErrorCode.INVALID_MESSAGE, "the peer sent a second hello.")
            self._check_hello(msg)
            self._theirs = msg
            return [Auth(self._identity.sign(transcript(msg.nonce, self._hello)))]
        if isinstance(msg, Auth):
            theirs = self._theirs
            if theirs is None:
                raise HandshakeError(ErrorCode.HANDSHAKE_REQUIRED,
                                     "the peer sent its auth before its hello.")
            if not verify(theirs.key, transcript(self._hello.nonce, theirs), msg.sig):
                raise HandshakeError(
                    ErrorCode.BAD_SIGNATURE,
                    f"the hello signature of peer {node_id_of(theirs.key).hex()[:16]} does not "
                    "verify against its key, its claims and our nonce.",
                )
            self.peer = PeerInfo(node_id_of(theirs.key), theirs.key, theirs.role, theirs.listen,
                                 theirs.advertise, theirs.caps, theirs.version, theirs.agent)
            self.done = True
            return []
        if isinstance(msg, Error):
            raise HandshakeError(
                msg.code, f"the peer refused the handshake: [{msg.code}] {msg.message}",
                retry_after=msg.retry_after,
            )
        name = getattr(type(msg), "TYPE", type(msg).__name__)
        rid = getattr(msg, "rid", None)
        raise HandshakeError(
            ErrorCode.HANDSHAKE_REQUIRED,
            f"the peer sent {name!r} before completing the handshake.",
            rid=rid if isinstance(rid, int) else None,
        )

    def _check_hello(self, hello: Hello) -> None:
        """Refuse a hello we must not sign for; the signature itself comes with the auth."""
        try:
            check_version(hello.version)
        except WireError as exc:
            raise HandshakeError(exc.code, exc.message) from None
        # decode() guarantees these; in-memory drivers (the simulator) do not.
        if hello.role not in ROLES:
            raise HandshakeError(ErrorCode.INVALID_MESSAGE,
                                 f"the peer claims the unknown role {hello.role!r}.")
        if not isinstance(hello.key, bytes) or len(hello.key) != 32:
            raise HandshakeError(ErrorCode.INVALID_MESSAGE, "the peer's key is not 32 bytes.")
        if not isinstance(hello.nonce, bytes) or not NONCE_MIN <= len(hello.nonce) <= NONCE_MAX:
            raise HandshakeError(ErrorCode.INVALID_MESSAGE,
                                 f"the peer's nonce is not {NONCE_MIN} to {NONCE_MAX} bytes.")
        peer_id = node_id_of(hello.key)
        if peer_id == self._identity.node_id:
            raise HandshakeError(
                ErrorCode.SELF_CONNECTION,
                f"the peer has our own node id {peer_id.hex()[:16]}: this node connected to "
                "itself.",
            )
        if self._expected is not None and peer_id != self._expected:
            raise HandshakeError(
                ErrorCode.ID_MISMATCH,
                f"dialled node {self._expected.hex()[:16]} but the peer at this address is "
                f"{peer_id.hex()[:16]}.",
            )
