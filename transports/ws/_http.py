"""Plain HTTP on a WebSocket listener's port: the node's pages, 426 and 404.

websockets calls ``process_request`` with every request before its
handshake. A WebSocket upgrade of the endpoint path passes through (``None``);
anything else is answered here: by the listener's :data:`HttpHandler` first,
then by the defaults: **426 Upgrade Required** with a JSON hint on the
endpoint path (B2.3: never a bare 200), 204 for a CORS preflight, 404 JSON
elsewhere. Every answer carries ``Access-Control-Allow-Origin: *`` (B3.4)
unless the handler set its own.
"""

from __future__ import annotations

import email.utils
import http
import logging
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from yzcore.transport import HttpHandler, HttpResponse

__all__ = ["make_process_request", "upgrade_required_body"]

log = logging.getLogger("yzcore.transport.ws")

_CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
    ("Access-Control-Allow-Headers", "*"),
)


def upgrade_required_body(ws_path: str) -> dict[str, str]:
    """The JSON hint a plain GET on the WebSocket endpoint gets with its 426."""
    return {
        "error": "WS_UPGRADE_REQUIRED",
        "message": "This is the yzcore WebSocket endpoint; connect with a WebSocket client "
        f"(ws://HOST:PORT{ws_path}).",
    }


def make_process_request(ws_path: str, handler: HttpHandler | None) -> Any:
    """A websockets ``process_request`` serving HTTP beside the endpoint ``ws_path``."""

    def process_request(connection: Any, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        upgrade = any("websocket" in v.lower() for v in request.headers.get_all("Upgrade"))
        if path == ws_path and upgrade:
            return None  # websockets checks the rest of the handshake
        method = getattr(request, "method", "GET")
        reply = None
        if handler is not None:
            headers: dict[str, str] = {}
            for name, value in request.headers.raw_items():
                name = name.lower()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            try:
                reply = handler(method, request.path, headers)
            except Exception as exc:
                log.exception("HTTP handler failed", extra={"path": path, "error": repr(exc)})
                reply = HttpResponse.json(
                    500, {"error": "INTERNAL", "message": "The HTTP handler failed; see the log."}
                )
        if reply is None:
            reply = _default(method, path, ws_path)
        return _to_response(reply, head=method == "HEAD")

    return process_request


def _default(method: str, path: str, ws_path: str) -> HttpResponse:
    if method == "OPTIONS":
        return HttpResponse(204, (("Access-Control-Max-Age", "86400"),))
    if path == ws_path:
        return HttpResponse.json(426, upgrade_required_body(ws_path), (("Upgrade", "websocket"),))
    return HttpResponse.json(
        404,
        {
            "error": "NOT_FOUND",
            "message": f"No page at {path}; the WebSocket endpoint is {ws_path}.",
        },
    )


def _to_response(reply: HttpResponse, *, head: bool) -> Response:
    headers = Headers(reply.headers)
    for name, value in _CORS:
        if name not in headers:
            headers[name] = value
    if "Content-Type" not in headers and reply.body:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    if "Content-Length" in headers:
        del headers["Content-Length"]
    headers["Content-Length"] = str(len(reply.body))
    headers["Connection"] = "close"  # websockets answers one request a connection
    headers["Date"] = email.utils.formatdate(usegmt=True)
    try:
        phrase = http.HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = ""
    return Response(reply.status, phrase, headers, b"" if head else reply.body)
