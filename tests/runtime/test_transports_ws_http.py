"""The ws transport's HTTP side, on real sockets (127.0.0.1 only): plain HTTP on
the WebSocket port (426 on the endpoint, the node's pages, 404, CORS) and why a
dial failed (a web page, the wrong path, a timeout, a malformed URL, wss without
a certificate)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import pytest
from anyio.abc import SocketStream

from tests.runtime._transport_helpers import LISTEN, echo, serving
from yzcore.exceptions import (
    ConnectFailed,
    InvalidArgument,
    ListenFailed,
    WsUpgradeRejected,
)
from yzcore.transport import HttpResponse, get_transport

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------
# ws specifics: HTTP on the same port
# --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def http_get(address: str, path: str, method: str = "GET", extra: str = "") -> Reply:
    """One raw HTTP/1.1 request to the listener at ``address`` (ws://127.0.0.1:P/...)."""
    port = int(address.split(":")[2].split("/")[0])
    stream: SocketStream
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
        )
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(lines[0].split()[1]), headers, body)


def node_pages(method: str, path: str, headers: Mapping[str, str]) -> HttpResponse | None:
    if path == "/healthz":
        return HttpResponse.json(200, {"healthy": True, "ua": headers.get("user-agent", "")})
    if path == "/broken":
        raise RuntimeError("handler bug")
    return None


@pytest.mark.req("B2.3")
async def test_ws_plain_get_on_the_endpoint_is_426_with_a_json_hint() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo) as listener:
        reply = await http_get(listener.address, "/dht")
    assert reply.status == 426
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["upgrade"] == "websocket"
    assert reply.json() == {
        "error": "WS_UPGRADE_REQUIRED",
        "message": "This is the yzcore WebSocket endpoint; connect with a WebSocket client "
        "(ws://HOST:PORT/dht).",
    }


@pytest.mark.req("B2.3")
async def test_ws_http_handler_serves_pages_and_never_answers_the_endpoint_with_200() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo, http=node_pages) as listener:
        health = await http_get(listener.address, "/healthz", extra="User-Agent: probe/1\r\n")
        endpoint = await http_get(listener.address, "/dht?x=1")  # handler says None
        missing = await http_get(listener.address, "/nope")
        broken = await http_get(listener.address, "/broken")
        head = await http_get(listener.address, "/healthz", method="HEAD")
        # The WebSocket endpoint still upgrades with a handler installed.
        async with await get_transport("ws").connect(listener.address, timeout=5) as conn:
            await conn.send(b"ws ok")
            assert await conn.receive() == b"ws ok"
    assert (health.status, health.json()) == (200, {"healthy": True, "ua": "probe/1"})
    assert health.headers["content-length"] == str(len(health.body))
    assert endpoint.status == 426
    assert (missing.status, missing.json()["error"]) == (404, "NOT_FOUND")
    assert "/dht" in missing.json()["message"]
    assert (broken.status, broken.json()["error"]) == (500, "INTERNAL")
    assert (head.status, head.body) == (200, b"")


async def test_ws_unknown_path_is_404_json_without_a_handler() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo) as listener:
        reply = await http_get(listener.address, "/nope")
    assert reply.status == 404
    assert reply.json() == {
        "error": "NOT_FOUND",
        "message": "No page at /nope; the WebSocket endpoint is /dht.",
    }


@pytest.mark.req("B3.4")
async def test_ws_http_answers_carry_cors_headers() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo, http=node_pages) as listener:
        replies = [
            await http_get(listener.address, "/healthz", extra="Origin: http://example.test\r\n"),
            await http_get(listener.address, "/dht"),
            await http_get(listener.address, "/nope"),
        ]
        preflight = await http_get(
            listener.address,
            "/status",
            method="OPTIONS",
            extra="Origin: http://example.test\r\nAccess-Control-Request-Method: GET\r\n",
        )
    for reply in [*replies, preflight]:
        assert reply.headers["access-control-allow-origin"] == "*"
    assert preflight.status == 204
    assert "GET" in preflight.headers["access-control-allow-methods"]


# --------------------------------------------------------------------------
# ws specifics: why a dial failed
# --------------------------------------------------------------------------


@asynccontextmanager
async def plain_web_server() -> AsyncIterator[int]:
    """A tiny HTTP server on 127.0.0.1 that answers every request 200 with a page."""

    async def answer(stream: SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            page = b"<html>hello</html>"
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(page), page)
            )

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as tcp:
        port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tcp.serve, answer)
            yield port
            tg.cancel_scope.cancel()


@pytest.mark.req("B2.3", "B3.5", "B6.5")
async def test_ws_dialling_a_web_page_names_the_cause() -> None:
    async with plain_web_server() as port:
        with pytest.raises(WsUpgradeRejected) as info:
            await get_transport("ws").connect(f"ws://127.0.0.1:{port}/", timeout=5)
    err = info.value
    assert (err.code, err.status) == ("WS_UPGRADE_REJECTED", 200)
    assert isinstance(err, ConnectFailed)
    assert "HTTP 200 instead of 101" in str(err)
    assert "serves a web page, not the WebSocket endpoint; the endpoint is /dht" in str(err)


@pytest.mark.req("B3.5", "B6.5")
async def test_ws_dialling_the_wrong_path_reports_the_status_and_the_hint() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo) as listener:
        wrong = listener.address.removesuffix("/dht") + "/ws"
        with pytest.raises(WsUpgradeRejected) as info:
            await get_transport("ws").connect(wrong, timeout=5)
    assert info.value.status == 404
    assert "HTTP 404" in str(info.value) and "the WebSocket endpoint is /dht" in str(info.value)


@pytest.mark.req("B3.5", "B6.5")
async def test_ws_dial_timeout_is_a_connect_failure() -> None:
    async def silent(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as tcp:
        port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tcp.serve, silent)
            with pytest.raises(ConnectFailed) as info:
                await get_transport("ws").connect(f"ws://127.0.0.1:{port}/dht", timeout=0.2)
            tg.cancel_scope.cancel()
    assert "timed out after 0.2 s" in str(info.value)
    assert not isinstance(info.value, WsUpgradeRejected)


@pytest.mark.parametrize("url", ["ws://", "http://127.0.0.1:1/dht", "ws://127.0.0.1:x/dht"])
async def test_ws_malformed_urls_are_invalid_arguments(url: str) -> None:
    with pytest.raises(InvalidArgument):
        await get_transport("ws").connect(url, timeout=1)
    with pytest.raises(InvalidArgument):
        await get_transport("ws").listen(url)


async def test_ws_cannot_listen_on_wss_without_a_certificate() -> None:
    with pytest.raises(ListenFailed, match="TLS certificate"):
        await get_transport("wss").listen("wss://127.0.0.1:0/dht")
