"""The signed hello, both ways, between in-memory endpoints (no sockets, no clock)."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from yzcore import wire
from yzcore.exceptions import (
    EncodeError,
    HandshakeError,
    InvalidArgument,
    LocalProtocolError,
    RemoteProtocolError,
    WireError,
)
from yzcore.identity import Identity
from yzcore.protocol.handshake import (
    DEFAULT_AGENT,
    TRANSCRIPT_PREFIX,
    Handshake,
    PeerInfo,
    transcript,
)
from yzcore.wire import (
    PROTOCOL_VERSION, Auth, Error, ErrorCode, FindNode, Hello, Ping, decode, encode,
)

RNG = random.Random(1234)
ALICE = Identity.from_private_bytes(bytes(range(32)))
BOB = Identity.from_private_bytes(bytes(range(32, 64)))
MALLORY = Identity.from_private_bytes(bytes(range(64, 96)))


def make(ident: Identity = ALICE, **kw: object) -> Handshake:
    args: dict[str, object] = {
        "role": "node",
        "listen": ("ws://0.0.0.0:9000/dht",),
        "advertise": "ws://10.0.0.1:9000/dht",
        "caps": ("ws", "webrtc"),
        "nonce": RNG.randbytes(32),
    }
    args.update(kw)
    return Handshake(ident, **args)  # type: ignore[arg-type]


def over_the_wire(msg: wire.Message) -> wire.Message:
    return decode(encode(msg))


def run(a: Handshake, b: Handshake, *, a_to_b=over_the_wire, b_to_a=over_the_wire) -> None:
    """Pump messages between two endpoints until both are quiet."""
    to_b, to_a = [a_to_b(a.start())], [b_to_a(b.start())]
    for _ in range(10):  # loop guard: the exchange takes one round trip
        if not (to_a or to_b):
            return
        out_a: list[wire.Message] = []
        out_b: list[wire.Message] = []
        for m in to_b:
            out_b.extend(b.receive(m))
        for m in to_a:
            out_a.extend(a.receive(m))
        to_b, to_a = [a_to_b(m) for m in out_a], [b_to_a(m) for m in out_b]
    raise AssertionError("handshake did not settle")


def test_two_endpoints_verify_each_other():
    a, b = make(ALICE), make(BOB, role="browser", listen=(), advertise=None, caps=("webrtc",))
    assert not a.done and a.peer is None
    run(a, b)
    assert a.done and b.done
    assert a.peer == PeerInfo(BOB.node_id, BOB.public_key, "browser", (), None, ("webrtc",),
                              PROTOCOL_VERSION, DEFAULT_AGENT)
    assert b.peer is not None
    assert b.peer.id == ALICE.node_id == hashlib.sha256(ALICE.public_key).digest()
    assert b.peer.advertise == "ws://10.0.0.1:9000/dht"
    assert b.peer.listen == ("ws://0.0.0.0:9000/dht",)
    assert b.peer.caps == ("ws", "webrtc")


def test_dialling_a_known_id_succeeds_when_it_answers():
    a, b = make(ALICE, expected_id=BOB.node_id), make(BOB)
    run(a, b)
    assert a.peer is not None and a.peer.id == BOB.node_id


def test_each_side_sends_exactly_hello_then_auth():
    a, b = make(ALICE), make(BOB)
    hello_a, hello_b = a.start(), b.start()
    assert isinstance(hello_a, Hello) and hello_a.key == ALICE.public_key
    assert hello_a.version == wire.PROTOCOL_VERSION
    (auth_b,) = b.receive(hello_a)
    (auth_a,) = a.receive(hello_b)
    assert isinstance(auth_a, Auth) and isinstance(auth_b, Auth)
    # The auth is exactly the documented transcript, signed.
    assert auth_a == Auth(ALICE.sign(transcript(hello_b.nonce, hello_a)))
    assert b.receive(auth_a) == [] and a.receive(auth_b) == []
    assert a.done and b.done


def test_transcript_layout():
    hello = Hello("1.0", ALICE.public_key, bytes(16), "bridge", ("ws://a",), "wss://b", ("ws",),
                  "yzcore/9")
    nonce = bytes(range(20))
    expected = (
        b"yz-hello-v1\x00" + bytes([20]) + nonce + hashlib.sha256(ALICE.public_key).digest()
        + b'{"advertise":"wss://b","agent":"yzcore/9","caps":["ws"],"listen":["ws://a"],'
        b'"role":"bridge","version":"1.0"}'
    )
    assert TRANSCRIPT_PREFIX == b"yz-hello-v1\x00"
    assert transcript(nonce, hello) == expected


@given(
    field=st.sampled_from(["role", "listen", "advertise", "caps", "version", "agent", "key"]),
    data=st.data(),
)
def test_every_claim_is_bound_by_the_transcript(field, data):
    hello = Hello("1.0", ALICE.public_key, bytes(16), "node", ("ws://a",), "ws://b", ("ws",), "x")
    other = {
        "role": "bridge", "listen": ("ws://c",), "advertise": None, "caps": (), "version": "1.1",
        "agent": "y", "key": BOB.public_key,
    }[field]
    nonce = data.draw(st.binary(min_size=16, max_size=64))
    changed = dataclasses.replace(hello, **{field: other})
    assert transcript(nonce, hello) != transcript(nonce, changed)


# -- refusals -----------------------------------------------------------------------


def refused(a: Handshake, msg: wire.Message) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        a.receive(msg)
    err = info.value
    assert a.peer is None and not a.done  # never a half-verified peer
    assert isinstance(err, WireError) and isinstance(err, RemoteProtocolError)
    encode(wire.error_reply(err))  # the caller can always tell the peer why
    return err


@pytest.mark.req("B2.2")
def test_tampered_signature_is_refused():
    a, b = make(ALICE), make(BOB)
    hello_a = a.start()
    a.receive(b.start())
    (auth,) = b.receive(hello_a)
    bad = Auth(bytes([auth.sig[0] ^ 0x01]) + auth.sig[1:])
    err = refused(a, over_the_wire(bad))
    assert err.code == ErrorCode.BAD_SIGNATURE
    assert BOB.node_id.hex()[:16] in str(err)


@pytest.mark.req("B2.2")
def test_hello_and_auth_replayed_from_another_session_are_refused():
    # Bob's genuine hello and auth, captured from a session with an earlier Alice...
    old_a, b = make(ALICE), make(BOB)
    bob_hello = b.start()
    (bob_auth,) = b.receive(old_a.start())
    # ...replayed to a new Alice, who draws a fresh nonce.
    a = make(ALICE)
    a.start()
    a.receive(bob_hello)
    err = refused(a, bob_auth)
    assert err.code == ErrorCode.BAD_SIGNATURE


@pytest.mark.req("B2.2")
def test_a_hello_claiming_another_key_is_refused():
    # Mallory sends Bob's key in her hello but can only sign with her own.
    a = make(ALICE)
    hello = a.start()
    fake = dataclasses.replace(make(MALLORY).start(), key=BOB.public_key)
    a.receive(fake)
    err = refused(a, Auth(MALLORY.sign(transcript(hello.nonce, fake))))
    assert err.code == ErrorCode.BAD_SIGNATURE


@pytest.mark.req("B2.2")
def test_claims_changed_in_transit_are_refused():
    # An attacker rewrites Bob's advertised address; Bob's signature no longer fits.
    a, b = make(ALICE), make(BOB)
    hello_a = a.start()
    hijacked = dataclasses.replace(b.start(), advertise="ws://evil.example/dht")
    a.receive(hijacked)
    (bob_auth,) = b.receive(hello_a)
    assert refused(a, bob_auth).code == ErrorCode.BAD_SIGNATURE


@pytest.mark.req("B2.2")
def test_a_different_node_at_the_dialled_address_is_refused():
    a = make(ALICE, expected_id=BOB.node_id)
    a.start()
    err = refused(a, over_the_wire(make(MALLORY).start()))
    assert err.code == ErrorCode.ID_MISMATCH
    assert BOB.node_id.hex()[:16] in str(err) and MALLORY.node_id.hex()[:16] in str(err)


@pytest.mark.req("B2.2")
def test_version_2_against_1_is_refused_naming_both():
    a = make(ALICE)
    a.start()
    future = dataclasses.replace(make(BOB).start(), version="2.0")
    err = refused(a, over_the_wire(future))
    assert err.code == ErrorCode.VERSION_MISMATCH
    assert f"peer speaks protocol 2.0, this node speaks {PROTOCOL_VERSION}" in str(err)
    reply = wire.error_reply(err)
    assert reply.code == "VERSION_MISMATCH" and "2.0" in reply.message
    assert PROTOCOL_VERSION in reply.message


def test_a_newer_minor_version_is_welcome():
    a, b = make(ALICE), make(BOB)
    hello_b = dataclasses.replace(b.start(), version="1.7")
    hello_a = a.start()
    a.receive(hello_b)
    a.receive(Auth(BOB.sign(transcript(hello_a.nonce, hello_b))))
    assert a.done and a.peer is not None and a.peer.version == "1.7"


@pytest.mark.req("B2.2")
@pytest.mark.parametrize("early", [Ping(3), FindNode(4, bytes(32))])
def test_messages_before_the_handshake_are_refused(early):
    a = make(ALICE)
    a.start()
    err = refused(a, early)
    assert err.code == ErrorCode.HANDSHAKE_REQUIRED
    assert early.TYPE in str(err)
    assert err.rid == early.rid  # so the reply names the request


@pytest.mark.req("B2.2")
def test_a_request_between_hello_and_auth_is_refused():
    a, b = make(ALICE), make(BOB)
    a.start()
    a.receive(b.start())
    assert refused(a, Ping(1)).code == ErrorCode.HANDSHAKE_REQUIRED


@pytest.mark.req("B2.2")
def test_auth_before_hello_is_refused():
    a = make(ALICE)
    a.start()
    assert refused(a, Auth(bytes(64))).code == ErrorCode.HANDSHAKE_REQUIRED


def test_a_second_hello_is_refused():
    a, b = make(ALICE), make(BOB)
    a.start()
    hello_b = b.start()
    a.receive(hello_b)
    assert refused(a, hello_b).code == ErrorCode.INVALID_MESSAGE


@pytest.mark.req("B2.2")
def test_a_node_that_dialled_itself_is_told_so():
    a, a_again = make(ALICE), make(ALICE)
    a.start()
    err = refused(a, a_again.start())
    assert err.code == ErrorCode.SELF_CONNECTION
    assert "itself" in str(err)


@pytest.mark.req("B2.2")
def test_an_error_from_the_peer_surfaces_with_its_code():
    a = make(ALICE)
    a.start()
    err = refused(a, Error(None, "RATE_LIMITED", "too many hellos", 4.0))
    assert err.code == "RATE_LIMITED" and err.retry_after == 4.0
    assert "too many hellos" in str(err)


@pytest.mark.parametrize(
    "change",
    [{"role": "king"}, {"key": bytes(31)}, {"nonce": bytes(8)}],
)
def test_in_memory_hellos_are_checked_too(change):
    # The simulator may hand messages over without the codec.
    a = make(ALICE)
    a.start()
    bad = dataclasses.replace(make(BOB).start(), **change)
    assert refused(a, bad).code == ErrorCode.INVALID_MESSAGE


def test_the_wire_codec_carries_a_complete_handshake_with_tampering_detected():
    a, b = make(ALICE), make(BOB)

    def flip_auth(msg: wire.Message) -> wire.Message:
        msg = over_the_wire(msg)
        if isinstance(msg, Auth):
            obj = orjson.loads(encode(msg))
            obj["sig"] = ("0" if obj["sig"][0] != "0" else "1") + obj["sig"][1:]
            return decode(orjson.dumps(obj))
        return msg

    with pytest.raises(HandshakeError) as info:
        run(a, b, b_to_a=flip_auth)
    assert info.value.code == ErrorCode.BAD_SIGNATURE


# -- misuse by the caller ----------------------------------------------------------------


def test_receive_before_start_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        make(ALICE).receive(make(BOB).start())


def test_start_twice_is_a_local_error():
    a = make(ALICE)
    a.start()
    with pytest.raises(LocalProtocolError):
        a.start()


def test_receive_after_done_is_a_local_error():
    a, b = make(ALICE), make(BOB)
    run(a, b)
    with pytest.raises(LocalProtocolError):
        a.receive(Ping(1))


def test_receive_after_failure_is_a_local_error():
    a = make(ALICE)
    a.start()
    refused(a, Ping(1))
    with pytest.raises(LocalProtocolError):
        a.receive(make(BOB).start())


@pytest.mark.parametrize(
    "kw",
    [{"nonce": bytes(15)}, {"nonce": bytes(65)}, {"nonce": "00" * 16}, {"role": "king"},
     {"expected_id": bytes(31)}],
)
def test_bad_arguments_are_refused(kw):
    with pytest.raises(InvalidArgument):
        make(ALICE, **kw)


@pytest.mark.parametrize(
    "kw",
    [{"agent": "a" * 129}, {"caps": ("c",) * 33}, {"listen": ("",)}, {"advertise": "a" * 513}],
)
def test_claims_beyond_wire_limits_fail_at_construction(kw):
    with pytest.raises(EncodeError):
        make(ALICE, **kw)


@given(
    role_a=st.sampled_from(wire.ROLES),
    role_b=st.sampled_from(wire.ROLES),
    nonce_a=st.binary(min_size=16, max_size=64),
    nonce_b=st.binary(min_size=16, max_size=64),
    advertise=st.none() | st.just("wss://n.example/dht"),
)
def test_any_valid_pair_completes(role_a, role_b, nonce_a, nonce_b, advertise):
    a = make(ALICE, role=role_a, nonce=nonce_a, advertise=advertise)
    b = make(BOB, role=role_b, nonce=nonce_b, expected_id=ALICE.node_id)
    run(a, b)
    assert a.peer is not None and b.peer is not None
    assert (a.peer.id, a.peer.role) == (BOB.node_id, role_b)
    assert (b.peer.id, b.peer.role, b.peer.advertise) == (ALICE.node_id, role_a, advertise)
