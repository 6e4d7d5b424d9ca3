"""The wire codec's refusals: every class of bad input with its error code, the
version rule, the advice each code carries, and the reference docs that list them."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from tests.core._wire_examples import _DROP, GOOD, HEX32, NODE, good
import yzcore
from yzcore import wire
from yzcore.exceptions import (
    EncodeError,
    RemoteProtocolError,
    WireError,
)
from yzcore.wire import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    Error,
    ErrorCode,
    Hello,
    Ping,
    decode,
    encode,
    error_reply,
)


def frame_of(**fields: object) -> bytes:
    return orjson.dumps({"v": PROTOCOL_VERSION, **fields})


def decode_error(frame: bytes | str) -> WireError:
    with pytest.raises(WireError) as info:
        decode(frame)
    return info.value


# -- bad input, class by class ----------------------------------------------------------


@pytest.mark.req("B2.2")
@pytest.mark.parametrize(
    "frame", [b"", b"{", b'{"v":"1.0",}', b"\xff\xfe", "not json", b'{"a":1} {"b":2}', b"[" * 2000]
)
def test_malformed_json(frame):
    err = decode_error(frame)
    assert err.code == ErrorCode.MALFORMED_JSON
    assert err.rid is None


@pytest.mark.req("B2.2")
def test_frame_over_64_kib_is_refused_before_parsing():
    frame = encode(Ping(1))
    padded = frame[:-1] + b" " * (MAX_FRAME + 1 - len(frame)) + b"}"
    assert decode_error(padded).code == ErrorCode.FRAME_TOO_LARGE
    # Garbage of that size is "too large", not "malformed": the size is checked first.
    err = decode_error(b"\xff" * (MAX_FRAME + 1))
    assert err.code == ErrorCode.FRAME_TOO_LARGE
    assert str(MAX_FRAME + 1) in str(err) and str(MAX_FRAME) in str(err)


def test_text_frames_are_measured_in_utf8_bytes():
    body = "é" * 33_000  # 33 000 characters, 66 000 bytes
    text = '{"v":"1.0","t":"ping","rid":1,"pad":"' + body + '"}'
    assert len(text) < MAX_FRAME < len(text.encode())
    assert decode_error(text).code == ErrorCode.FRAME_TOO_LARGE
    assert decode_error("x" * (MAX_FRAME + 1)).code == ErrorCode.FRAME_TOO_LARGE
    assert decode('{"v":"1.0","t":"ping","rid":1,"pad":"' + "é" * 1000 + '"}') == Ping(1)


@pytest.mark.parametrize("frame", [b"[1]", b"1", b"null", b'"ping"', b"true"])
def test_json_that_is_not_an_object(frame):
    assert decode_error(frame).code == ErrorCode.INVALID_MESSAGE


@pytest.mark.req("B2.2")
def test_unknown_type_names_the_type_and_keeps_the_rid():
    err = decode_error(frame_of(t="frobnicate", rid=42))
    assert err.code == ErrorCode.UNKNOWN_TYPE
    assert "frobnicate" in str(err)
    assert err.rid == 42


def test_unknown_type_is_truncated_in_the_message():
    err = decode_error(frame_of(t="x" * 5000))
    assert err.code == ErrorCode.UNKNOWN_TYPE
    assert "x" * 40 in str(err) and "x" * 41 not in str(err)


@pytest.mark.parametrize("t", [None, 1, ["ping"], {"a": 1}, _DROP])
def test_missing_or_non_string_type(t):
    assert decode_error(good("ping", t=t)).code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(
    "v", [_DROP, None, 1, 1.0, "1", "1.0.0", "x.y", "1.", ".1", "².0", "1." + "0" * 20, ""]
)
def test_version_must_be_a_major_minor_string(v):
    err = decode_error(good("ping", v=v))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert "'v'" in str(err)


@pytest.mark.req("B2.2")
@pytest.mark.parametrize(
    "name, field, value",
    [
        ("find_node", "target", "ab" * 31),  # 31 bytes
        ("find_node", "target", "ab" * 33),
        ("find_node", "target", "AB" * 32),  # upper case
        ("find_node", "target", "zz" * 32),
        ("find_node", "target", "ab " * 21 + "a"),  # fromhex would skip the spaces
        ("find_node", "target", 5),
        ("find_node", "target", None),
        ("find_value", "key", "ab" * 16),
        ("store", "key", "ab" * 64),
        ("auth", "sig", "cd" * 63),
        ("auth", "sig", "cd" * 65),
        ("hello", "key", "ab" * 31),
        ("hello", "nonce", "00" * 15),
        ("hello", "nonce", "00" * 65),
        ("hello", "nonce", "0" * 33),  # odd length
    ],
)
def test_wrong_hex_is_invalid(name, field, value):
    err = decode_error(good(name, **{field: value}))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert repr(field) in str(err)


@pytest.mark.parametrize("rid", [True, False, -1, 2**53, 1.0, "1", None, [1]])
def test_rid_must_be_a_non_negative_integer_below_2_53(rid):
    err = decode_error(good("ping", rid=rid))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert "'rid'" in str(err)
    assert err.rid is None  # a bad rid is never echoed


def test_largest_rid_is_accepted():
    assert decode(good("ping", rid=2**53 - 1)) == Ping(2**53 - 1)


@pytest.mark.req("B2.2")
def test_rid_is_attached_to_field_errors():
    err = decode_error(good("find_node", rid=7, target="nope"))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert err.rid == 7
    assert error_reply(err).rid == 7


STORE_HEAD = b'{"v":"1.0","t":"store","rid":1,"key":"' + HEX32.encode() + b'","value":"v",'


@pytest.mark.parametrize(
    "frame",
    [
        STORE_HEAD + b'"ttl":NaN}',
        STORE_HEAD + b'"ttl":Infinity}',
        STORE_HEAD + b'"ttl":1e400}',
        b'{"v":"1.0","t":"error","rid":1,"code":"X","message":"m","retry_after":-Infinity}',
    ],
)
def test_non_finite_numbers_are_refused(frame):
    # NaN and infinities are not JSON; a hand-written frame gets them refused.
    err = decode_error(frame)
    assert err.code in (ErrorCode.MALFORMED_JSON, ErrorCode.INVALID_MESSAGE)


@pytest.mark.parametrize("ttl", [-1, -0.5, "60", True, None, [60]])
def test_ttl_must_be_a_finite_non_negative_number(ttl):
    err = decode_error(good("store", ttl=ttl))
    assert err.code == ErrorCode.INVALID_MESSAGE and "'ttl'" in str(err)


@pytest.mark.parametrize("retry", [-1, "1", True, [1]])
def test_retry_after_must_be_null_or_a_non_negative_number(retry):
    assert decode_error(good("error", retry_after=retry)).code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(
    "name, changes",
    [
        ("nodes", {"nodes": [NODE] * 65}),
        ("value", {"nodes": [NODE] * 65}),
        ("nodes", {"nodes": NODE}),
        ("nodes", {"nodes": [HEX32]}),
        ("nodes", {"nodes": [{"addr": None}]}),
        ("nodes", {"nodes": [{"id": HEX32}]}),
        ("nodes", {"nodes": [{**NODE, "role": "king"}]}),
        ("nodes", {"nodes": [{**NODE, "role": None}]}),
        ("nodes", {"nodes": [{**NODE, "addr": "ws://" + "h" * 508}]}),  # 513 characters
        ("nodes", {"nodes": [{**NODE, "addr": ""}]}),
        ("nodes", {"nodes": [{**NODE, "addr": "ws://a\n/dht"}]}),
        ("nodes", {"nodes": [{**NODE, "addr": 80}]}),
        ("nodes", {"nodes": [{**NODE, "id": "ab" * 31}]}),
        ("value", {"value": 5}),
        ("value", {"value": ["x"]}),
        ("store", {"value": None}),
        ("hello", {"role": "admin"}),
        ("hello", {"role": "Node"}),
        ("hello", {"agent": "a" * 129}),
        ("hello", {"agent": None}),
        ("hello", {"caps": ["c"] * 33}),
        ("hello", {"caps": ["c" * 65]}),
        ("hello", {"caps": [""]}),
        ("hello", {"caps": "ws"}),
        ("hello", {"listen": ["ws://a"] * 9}),
        ("hello", {"listen": [None]}),
        ("hello", {"advertise": "a" * 513}),
        ("hello", {"advertise": "ws://a\r\nX-Evil: 1"}),
        ("error", {"code": ""}),
        ("error", {"code": 404}),
        ("error", {"code": "C" * 65}),
        ("error", {"message": "m" * 1025}),
        ("error", {"message": None}),
        ("error", {"rid": "1"}),
    ],
)
def test_out_of_range_fields_are_invalid(name, changes):
    err = decode_error(good(name, **changes))
    assert err.code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_required_field_is_required(name):
    for field in GOOD[name]:
        if field == "t" or (name, field) == ("error", "retry_after"):
            continue
        err = decode_error(good(name, **{field: _DROP}))
        assert err.code == ErrorCode.INVALID_MESSAGE
        assert repr(field) in str(err), (name, field)


def test_the_good_examples_really_are_good():
    for name in GOOD:
        assert type(decode(good(name))).TYPE == name


# -- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, ok",
    [
        ("1.0", "1.0", True),
        ("1.0", "1.7", True),
        ("1.12", "01.3", True),
        ("1.0", "2.0", False),
        ("0.9", "1.0", False),
        ("1.0", "1", False),
        ("1.0", "x", False),
        ("1.0", None, False),
    ],
)
def test_same_major_interoperates(a, b, ok):
    assert wire.compatible(a, b) is ok
    assert wire.compatible(b, a) is ok


@pytest.mark.req("B2.2")
def test_version_mismatch_names_both_versions():
    wire.check_version("1.4")
    with pytest.raises(WireError) as info:
        wire.check_version("2.0")
    err = info.value
    assert err.code == ErrorCode.VERSION_MISMATCH
    assert f"peer speaks protocol 2.0, this node speaks {PROTOCOL_VERSION}" in str(err)
    assert "upgrade" in str(err)


@pytest.mark.req("B2.2")
def test_version_mismatch_with_a_garbled_version_still_names_ours():
    with pytest.raises(WireError) as info:
        wire.check_version("banana")
    assert "'banana'" in str(info.value) and PROTOCOL_VERSION in str(info.value)


def test_a_valid_hello_of_another_major_decodes_for_the_handshake_to_refuse():
    msg = decode(good("hello", v="2.0"))
    assert isinstance(msg, Hello) and msg.version == "2.0"


@pytest.mark.req("B2.2")
def test_a_frame_of_another_major_that_we_cannot_read_blames_the_version():
    # The old network died of a silent version mismatch: "missing field" alone
    # would have hidden it.
    err = decode_error(orjson.dumps({"v": "2.0", "t": "hello", "pubkey": "..", "rid": 9}))
    assert err.code == ErrorCode.VERSION_MISMATCH
    assert f"peer speaks protocol 2.0, this node speaks {PROTOCOL_VERSION}" in str(err)
    assert "'key'" in str(err)  # and the concrete problem
    assert err.rid == 9
    err = decode_error(orjson.dumps({"v": "3.1", "t": "hello2"}))
    assert err.code == ErrorCode.VERSION_MISMATCH
    # The same problems within our major stay what they are.
    assert decode_error(orjson.dumps({"v": "1.3", "t": "hello2"})).code == ErrorCode.UNKNOWN_TYPE


# -- errors and advice ------------------------------------------------------------------


def test_every_code_has_its_own_advice():
    seen = set()
    for code in ErrorCode:
        text = wire.advice(code)
        assert text and text != wire.advice("NO_SUCH_CODE")
        assert text.endswith(".")
        seen.add(text)
        assert wire.advice(str(code)) == text
    assert len(seen) == len(ErrorCode)


def test_unknown_codes_point_to_the_reference():
    assert "reference" in wire.advice("SOMETHING_NEW")


def test_the_minimum_code_set_is_there():
    required = {
        "MALFORMED_JSON", "FRAME_TOO_LARGE", "UNKNOWN_TYPE", "INVALID_MESSAGE",
        "VERSION_MISMATCH", "BAD_SIGNATURE", "ID_MISMATCH", "HANDSHAKE_REQUIRED",
        "HANDSHAKE_TIMEOUT", "RATE_LIMITED", "NOT_FOUND", "VALUE_TOO_LARGE", "TIMEOUT",
        "PEER_UNREACHABLE", "DUPLICATE_CONNECTION", "SHUTTING_DOWN", "INTERNAL",
    }
    assert required <= {c.value for c in ErrorCode}


def test_wire_error_is_a_remote_protocol_error_with_code_and_advice():
    err = WireError(ErrorCode.RATE_LIMITED, "12 find_node/s over the limit", rid=5, retry_after=2.0)
    assert isinstance(err, RemoteProtocolError)
    assert err.code == "RATE_LIMITED" and type(err.code) is str
    assert err.message == "12 find_node/s over the limit"
    assert str(err).startswith("[RATE_LIMITED] 12 find_node/s")
    assert wire.advice("RATE_LIMITED") in str(err)


def test_error_reply_carries_code_rid_retry_after_and_advice():
    reply = error_reply(WireError("RATE_LIMITED", "over the limit.", rid=5, retry_after=2.0))
    assert reply == Error(5, "RATE_LIMITED", f"over the limit. {wire.advice('RATE_LIMITED')}", 2.0)
    assert decode(encode(reply)) == reply


def test_error_reply_keeps_internals_private():
    reply = error_reply(WireError("INTERNAL", "KeyError: 'secret' at engine.py:42"))
    assert "secret" not in reply.message
    assert reply.message == wire.advice("INTERNAL")


def test_error_reply_is_always_sendable():
    long = WireError("X" * 100, "m" * 5000, rid=2**60, retry_after=math.nan)
    reply = error_reply(long)
    assert len(reply.message) == wire.MAX_ERROR_MESSAGE
    assert reply.rid is None and reply.retry_after is None
    assert reply.code == "INTERNAL"
    encode(reply)


@pytest.mark.req("A2.3")
def test_text_from_outside_is_made_one_sendable_line():
    page = "<html>\r\n<head>404</head>\r\n\t\x1b[0m </html>\r\n"
    assert wire.printable(page) == "<html> <head>404</head> [0m </html>"
    assert wire.printable("as it is: fine") == "as it is: fine"
    cut = wire.printable("a\n" * 2000)
    assert len(cut) == wire.MAX_ERROR_MESSAGE and cut.endswith("...")
    encode(Error(None, "WS_UPGRADE_REJECTED", wire.printable(page + "\x00" * 3000)))


# -- the reference docs cannot drift ----------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_error_reference_lists_every_wire_code_with_its_advice():
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    for code in ErrorCode:
        assert f"| `{code}` | {wire.advice(code)} |" in text, f"add {code} to errors.md"


def test_every_log_only_code_in_the_reference_is_known_to_the_metrics():
    # Codes outside KNOWN_CODES share a bounded set of series (a peer may send any).
    from yzcore.metrics import KNOWN_CODES

    text = (DOCS / "errors.md").read_text()
    section = text.split("## Log-only codes", 1)[1].split("\n## ", 1)[0]
    codes = [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]
    assert codes and set(codes) <= KNOWN_CODES, set(codes) - KNOWN_CODES
    assert {str(c) for c in wire.ErrorCode} <= KNOWN_CODES


def test_error_reference_lists_every_exception_class_and_code():
    from yzcore import exceptions

    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert f"| `{name}` |" in text, f"add the class {name} to docs/reference/errors.md"
        if cls not in (EncodeError, WireError, exceptions.HandshakeError):
            assert f"`{cls.code}`" in text, f"add the code {cls.code} to errors.md"


def test_wire_reference_examples_decode():
    text = (DOCS / "wire.md").read_text(encoding="utf-8")
    head = '{"v":"%s"' % PROTOCOL_VERSION
    examples = [line for line in text.splitlines() if line.startswith(head)]
    assert len(examples) == len(wire.MESSAGE_TYPES) + 1  # value appears twice
    for line in examples:
        frame = line.replace("a1a1…a1", "a1" * 32).replace("b2b2…b2", "b2" * 32)
        frame = frame.replace("5e5e…5e", "5e" * 32).replace("c3c3…c3", "c3" * 64)
        msg = decode(frame)
        assert encode(msg).decode() == frame  # and it is exactly what encode writes


def test_the_browser_client_speaks_this_protocol_version():
    # Two builds that disagree about the version without saying so is how the network
    # yzcore replaces died: the browser client's constant follows this one.
    js = (Path(yzcore.__file__).parent / "web" / "yz-peer.js").read_text(encoding="utf-8")
    assert f'export const PROTOCOL_VERSION = "{PROTOCOL_VERSION}";' in js
