"""``yz diagnose``: test the way into a network step by step, and name the cause of a failure.

The network this project replaces was diagnosed wrongly: its operators chased
"Unexpected server response: 200" while the real cause was a version mismatch
nobody reported. Each step here has its own verdict and, when it fails, its
own code and a sentence saying what to do; a later step is skipped when the
one it needs failed, so the first failure named is the cause.

Steps: the URL; DNS; TCP (refused vs silently dropped); TLS where the URL
asks for it (or where the server speaks it unasked); the WebSocket upgrade
(a 200 is a web page, not the endpoint); the signed hello and the protocol
version; introductions; each bridge on its own (A2.4) and the bridge
registrations the server refused; a find_node round trip with an introduced
node (B1.2); the advertised address of ``--node`` (or ``--advertise``)
dialled back by the bootstrap server (A6.2, A6.3); the frames this run sent
and received (B1.4); the host: container and network namespace (A2.5). It
ends with the verdict of each connection manager (B1.5).
"""

from __future__ import annotations

import base64
import enum
import json
import os
import socket
import ssl
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio

from yzcore import wire
from yzcore.exceptions import ConnectionClosed, NameNotResolved
from yzcore.identity import Identity
from yzcore.runtime.peer import describe_failure, handshake
from yzcore.transport import KNOWN_ADDRESSES, Connection, http_base, transport_for

__all__ = ["Fault", "Report", "Step", "diagnose"]

TIMEOUT = 3.0  # seconds for each network step
DIAL_BACK_WAIT = 8.0  # the bootstrap server's dial-back takes up to 5 s
REFUSED_LATELY = 600.0  # a bridge refused longer ago than this is history, not a fault now


class Fault(enum.StrEnum):
    """The codes of faults only a diagnosis names (the wire's codes are used as they are)."""

    INVALID_URL = "INVALID_URL"
    DNS_FAILED = "DNS_FAILED"
    PORT_CLOSED = "PORT_CLOSED"
    PACKETS_DROPPED = "PACKETS_DROPPED"
    HOST_UNREACHABLE = "HOST_UNREACHABLE"
    TLS_EXPECTED = "TLS_EXPECTED"
    TLS_FAILED = "TLS_FAILED"
    NOT_HTTP = "NOT_HTTP"
    WRONG_ENDPOINT = "WRONG_ENDPOINT"
    WRONG_PATH = "WRONG_PATH"
    UPGRADE_NOT_PASSED = "UPGRADE_NOT_PASSED"
    BRIDGE_DOWN = "BRIDGE_DOWN"
    PEER_UNREACHABLE = "PEER_UNREACHABLE"
    ADVERTISED_UNREACHABLE = "ADVERTISED_UNREACHABLE"


ADVICE: dict[str, str] = {
    Fault.INVALID_URL: "Give a URL like ws://HOST:PORT/dht (wss:// behind TLS).",
    Fault.DNS_FAILED: NameNotResolved.advice,
    Fault.PORT_CLOSED: "Nothing listens on that port: start the server there, or fix the port "
    "(in a container, the published port).",
    Fault.PACKETS_DROPPED: "Nothing answered at all, not even a refusal: a firewall drops packets to "
    "that port (or the host is down); open the port in the firewall or security group.",
    Fault.HOST_UNREACHABLE: "There is no route to that host: check the address and the network "
    "between here and there.",
    Fault.TLS_EXPECTED: "The server speaks TLS: use wss:// instead of ws://.",
    Fault.TLS_FAILED: "The TLS handshake failed: use ws:// if the server does not speak TLS, or fix "
    "its certificate.",
    Fault.NOT_HTTP: "Something that does not speak HTTP listens on that port: check the port.",
    Fault.WRONG_ENDPOINT: "This URL serves a web page, not the WebSocket endpoint; the endpoint is "
    "/dht (ws://HOST:PORT/dht), and the port must be the node's or bootstrap server's.",
    Fault.WRONG_PATH: "The server has no WebSocket endpoint at that path; yzcore's is /dht.",
    Fault.UPGRADE_NOT_PASSED: "The endpoint is there, but the WebSocket upgrade did not reach it: "
    "a proxy on the way drops it (nginx: proxy_http_version 1.1; proxy_set_header Upgrade "
    "$http_upgrade; proxy_set_header Connection \"upgrade\").",
    Fault.BRIDGE_DOWN: "This bridge does not answer: nodes behind NAT cannot be reached through it; "
    "restart it (a bootstrap server with --bridges restarts its own).",
    Fault.PEER_UNREACHABLE: "The node the bootstrap server introduced cannot be reached from here: "
    "its advertised address is wrong or blocked (run yz diagnose --node on its host).",
    Fault.ADVERTISED_UNREACHABLE: "The bootstrap server cannot reach the node's advertised address, "
    "so nobody else can either: fix --advertise (host and port as others see them), publish the "
    "port from the container, or open the firewall.",
}


def advice(code: str) -> str:
    """The sentence of advice for a diagnosis or wire code."""
    return ADVICE.get(code) or wire.advice(code)


@dataclass
class Step:
    """One step's verdict: ``ok``, ``fail``, ``skip`` or ``info``."""

    name: str
    verdict: str
    detail: str
    code: str | None = None
    advice: str | None = None
    seconds: float | None = None


@dataclass
class Report:
    """Everything a diagnosis found."""

    steps: list[Step] = field(default_factory=list)
    managers: dict[str, str] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=lambda: {"sent": 0, "received": 0})

    @property
    def ok(self) -> bool:
        return not any(s.verdict == "fail" for s in self.steps)

    def add(self, name: str, verdict: str, detail: str, code: str | None = None,
            seconds: float | None = None) -> Step:
        step = Step(name, verdict, detail, str(code) if code else None,
                    advice(str(code)) if code else None, None if seconds is None else round(seconds, 3))
        self.steps.append(step)
        return step

    def failed(self, name: str) -> bool:
        return any(s.name == name and s.verdict == "fail" for s in self.steps)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "steps": [asdict(s) for s in self.steps], "managers": self.managers,
                "frames": self.frames}


class _Session:
    """A verified connection this diagnosis opened, counting its frames (B1.4)."""

    def __init__(self, conn: Connection, peer: Any, report: Report) -> None:
        self.conn, self.peer, self.report = conn, peer, report
        self._rid = 0

    async def ask(self, make: Any, want: tuple[type, ...], timeout: float = TIMEOUT) -> wire.Message:
        self._rid += 1
        try:
            await self.conn.send(wire.encode(make(self._rid)))
            self.report.frames["sent"] += 1
        except ConnectionClosed:
            pass  # the peer may have said why before it closed: read that
        with anyio.fail_after(timeout):
            while True:
                msg = wire.decode(await self.conn.receive())
                self.report.frames["received"] += 1
                if isinstance(msg, (*want, wire.Error)):
                    return msg


async def _open(url: str, identity: Identity, report: Report) -> _Session:
    """Connect and say hello (role browser: we accept nothing)."""
    conn = await transport_for(url).connect(url, timeout=TIMEOUT)
    try:
        peer = await handshake(conn, identity, role="browser", advertise=None, timeout=TIMEOUT)
    except BaseException:
        await conn.close()
        raise
    report.frames["sent"] += 2  # hello and auth
    report.frames["received"] += 2
    return _Session(conn, peer, report)


# -- the steps before the hello: raw sockets, to tell the causes apart -------------------


async def _network_steps(url: str, report: Report) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        report.add("url", "fail", f"{url!r} is not a ws:// or wss:// URL", Fault.INVALID_URL)
        return False
    host, tls = parts.hostname, parts.scheme == "wss"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        report.add("url", "fail", f"{url!r} has no valid port", Fault.INVALID_URL)
        return False
    path = parts.path or "/"
    report.add("url", "ok", f"{parts.scheme}://{host}:{port}{path}")
    start = time.monotonic()
    try:
        with anyio.fail_after(TIMEOUT + 2):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(i[4][0]) for i in infos))
    except (OSError, TimeoutError) as exc:
        known = KNOWN_ADDRESSES.lookup(host)
        report.add("dns", "fail", f"{host} does not resolve: {exc}" + (
            f"; going on with {known}, its last known address (A6.4)" if known else ""),
            Fault.DNS_FAILED, time.monotonic() - start)
        if known is None:
            return False
        addresses = [known]
    else:
        report.add("dns", "ok" if addresses != [host] else "skip",
                   f"{host} -> {', '.join(addresses)}" if addresses != [host] else f"{host} is an address",
                   seconds=time.monotonic() - start)
    return await anyio.to_thread.run_sync(_socket_steps, addresses, host, port, path, tls, report)


def _socket_steps(addresses: list[str], host: str, port: int, path: str, tls: bool,
                  report: Report) -> bool:
    """TCP, TLS and the upgrade on a plain blocking socket: its errors say exactly what happened.
    TCP to each address in turn, as a dial does (``localhost``: ::1 first, maybe)."""
    start = time.monotonic()
    failed: list[tuple[str, Fault]] = []
    for ip in addresses:
        try:
            sock = socket.create_connection((ip, port), timeout=TIMEOUT)
            break
        except TimeoutError:
            failed.append((f"no answer from {ip}:{port} within {TIMEOUT:g} s",
                           Fault.PACKETS_DROPPED))
        except ConnectionRefusedError as exc:
            failed.append((f"{ip}:{port} refused the connection ({exc.strerror})",
                           Fault.PORT_CLOSED))
        except OSError as exc:
            failed.append((f"{ip}:{port}: {exc.strerror or exc}", Fault.HOST_UNREACHABLE))
    else:  # the verdict of the address that got furthest: refused, then silent, then no route
        rank = (Fault.PORT_CLOSED, Fault.PACKETS_DROPPED, Fault.HOST_UNREACHABLE)
        report.add("tcp", "fail", "; ".join(text for text, _ in failed),
                   min((code for _, code in failed), key=rank.index), time.monotonic() - start)
        return False
    before = f" ({'; '.join(text for text, _ in failed)})" if failed else ""
    report.add("tcp", "ok", f"connected to {ip}:{port}{before}", seconds=time.monotonic() - start)
    try:
        if tls:
            try:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
                report.add("tls", "ok", f"TLS handshake completed ({sock.version()})")
            except (OSError, ssl.SSLError) as exc:
                report.add("tls", "fail", str(exc), Fault.TLS_FAILED)
                return False
        return _upgrade_step(sock, host, port, path, report)
    finally:
        sock.close()  # the TLS socket when there is one: closing it closes the plain one too


def _upgrade_step(sock: socket.socket, host: str, port: int, path: str, report: Report) -> bool:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    try:
        sock.sendall(request.encode())
        while b"\r\n\r\n" not in head and len(head) < 16384:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    except OSError as exc:
        if not head:
            report.add("upgrade", "fail", f"no HTTP answer to the upgrade ({exc})", Fault.NOT_HTTP)
            return False
    if head[:2] == b"\x15\x03":  # a TLS alert: the server wanted a TLS handshake
        report.add("upgrade", "fail", "the server answered with a TLS alert", Fault.TLS_EXPECTED)
        return False
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    fields = line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        report.add("upgrade", "fail", f"not an HTTP answer: {line[:60]!r}", Fault.NOT_HTTP)
        return False
    status = int(fields[1])
    if status == 101:
        report.add("upgrade", "ok", f"101 Switching Protocols at {path}")
        return True
    if status == 200:
        report.add("upgrade", "fail", f"{line}: the server answered the WebSocket upgrade at {path} "
                   "with a page (\"Unexpected server response: 200\")", Fault.WRONG_ENDPOINT)
    elif status == 426:  # an endpoint that wants the upgrade, and did not get it (yzcore's says so)
        report.add("upgrade", "fail", f"{line} at {path}: the upgrade request arrived without "
                   "its Upgrade header", Fault.UPGRADE_NOT_PASSED)
    else:
        report.add("upgrade", "fail", f"{line} at {path}", Fault.WRONG_PATH)
    return False


# -- the steps after it ---------------------------------------------------------------------


def _http_json(url: str, path: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(http_base(url) + path, timeout=TIMEOUT) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


async def _bridge_steps(intro: Any, bootstrap: str, identity: Identity, report: Report) -> None:
    status = await anyio.to_thread.run_sync(_http_json, bootstrap, "/status")
    bridges: dict[str, str] = {}
    for b in getattr(intro, "bridges", ()):
        bridges[b.id.hex()] = b.addr or ""
    for b in (status or {}).get("bridges", []):
        bridges.setdefault(b["id"], b.get("address") or "")
    now = time.time()  # the server's clock in its entries: a few minutes of skew will do
    refused = [e for e in (status or {}).get("recent_errors", [])
               if e.get("code") == str(wire.ErrorCode.BRIDGE_AUTH_FAILED)
               and now - float(e.get("time") or 0) <= REFUSED_LATELY]
    if refused:
        report.add("bridge registration", "fail", refused[-1].get("message", ""),
                   wire.ErrorCode.BRIDGE_AUTH_FAILED)
    if not bridges:
        report.add("bridges", "info", "the bootstrap server knows no bridge")
        report.managers["bridge relay"] = "no bridges" if not refused else "fail"
        return
    down = 0
    for bid, addr in sorted(bridges.items()):
        start = time.monotonic()
        try:
            s = await _open(addr, identity, report)
            await s.conn.close()
            if s.peer.role != "bridge":
                raise wire.WireError(wire.ErrorCode.WRONG_ROLE, f"it answered as a {s.peer.role}")
            report.add(f"bridge {bid[:16]}", "ok", f"{addr} answered the hello",
                       seconds=time.monotonic() - start)
        except Exception as exc:  # noqa: BLE001 - each bridge on its own (A2.4)
            down += 1
            code, text = describe_failure(exc)
            report.add(f"bridge {bid[:16]}", "fail", f"{addr}: {code}: {text}", Fault.BRIDGE_DOWN,
                       time.monotonic() - start)
    report.managers["bridge relay"] = "ok" if not down and not refused else (
        "fail" if down == len(bridges) else "degraded")


async def _round_trip(intro: Any, identity: Identity, report: Report) -> None:
    peers = list(getattr(intro, "peers", ()))
    if not peers:
        report.add("round trip", "skip", "no node to try")
        return
    last: tuple[str, str, str] | None = None
    for peer in peers[:3]:
        start = time.monotonic()
        try:
            s = await _open(peer.addr or "", identity, report)
            try:
                reply = await s.ask(lambda rid: wire.FindNode(rid, os.urandom(32)), (wire.Nodes,))
            finally:
                await s.conn.close()
            if isinstance(reply, wire.Error):
                raise wire.WireError(reply.code, reply.message)
            report.add("round trip", "ok", f"find_node to {peer.addr}: {len(reply.nodes)} nodes "  # type: ignore[union-attr]
                       f"in {1000 * (time.monotonic() - start):.1f} ms", seconds=time.monotonic() - start)
            return
        except Exception as exc:  # noqa: BLE001
            code, text = describe_failure(exc)
            last = (peer.addr or "", code, text)
    assert last is not None
    code = last[1] if last[1] == str(wire.ErrorCode.RATE_LIMITED) else Fault.PEER_UNREACHABLE
    report.add("round trip", "fail", f"{last[0]}: {last[1]}: {last[2]}", code)


async def _dial_back(session: _Session, node: str | None, advertise: str | None, report: Report) -> None:
    addr = advertise
    if node is not None:
        status = await anyio.to_thread.run_sync(_http_json, node, "/status")
        if status is None:
            report.add("node", "fail", f"{node} does not answer /status", Fault.PORT_CLOSED)
            return
        addr = status.get("address")
        report.add("node", "ok", f"{status.get('role')} {str(status.get('id'))[:16]} advertises {addr}")
        if not addr:
            report.add("dial back", "info", "the node accepts no inbound connections (reached through a bridge)")
            return
    if addr is None:
        return
    try:  # the server gives its dial up to 5 s: wait for its answer longer than that
        reply = await session.ask(lambda rid: wire.DialBack(rid, addr), (wire.DialBackResult,),
                                  timeout=DIAL_BACK_WAIT)
    except Exception as exc:  # noqa: BLE001 - no answer is an answer too
        code, text = describe_failure(exc)
        report.add("dial back", "fail", f"the bootstrap server did not report on {addr}: {code}: {text}",
                   code)
        return
    if isinstance(reply, wire.Error):
        report.add("dial back", "fail", reply.message, reply.code)
    elif reply.ok:  # type: ignore[union-attr]
        report.add("dial back", "ok", f"the bootstrap server reached {addr}: {reply.message}",  # type: ignore[union-attr]
                   seconds=reply.seconds)  # type: ignore[union-attr]
    else:
        report.add("dial back", "fail", f"the bootstrap server could not reach {addr}: "
                   f"{reply.code}: {reply.message}", Fault.ADVERTISED_UNREACHABLE)  # type: ignore[union-attr]


def _host(report: Report) -> None:
    """Container and network namespace: information, never a failure (A2.5)."""
    marks = [p for p in ("/.dockerenv", "/run/.containerenv") if os.path.exists(p)]
    try:
        with open("/proc/1/cgroup", encoding="utf-8") as f:
            cgroup = f.read()
        marks += [w for w in ("docker", "kubepods", "containerd", "lxc", "podman") if w in cgroup]
    except OSError:
        pass
    try:
        own_ns = os.readlink("/proc/self/ns/net") != os.readlink("/proc/1/ns/net")
    except OSError:
        own_ns = False
    try:
        addrs = sorted({str(i[4][0]) for i in socket.getaddrinfo(socket.gethostname(), None)})
    except OSError:
        addrs = []
    where = f"in a container ({', '.join(marks)})" if marks else "not in a container"
    report.add("host", "info", f"{where}; {'its own' if own_ns else 'the host'} network namespace; "
               f"hostname {socket.gethostname()} -> {', '.join(addrs) or 'unresolved'}")


async def diagnose(bootstrap: str, *, node: str | None = None, advertise: str | None = None,
                   data_dir: str | None = None, webrtc: bool = True) -> Report:
    """Run every step against ``bootstrap`` (and ``node``, or an ``advertise`` address).

    ``data_dir``: a node's data directory; the addresses its peer cache keeps
    are the fallback when a name does not resolve (A6.4).
    """
    report = Report()
    if data_dir:
        from yzcore.runtime import peercache

        peercache.load_addresses(data_dir)
    identity = Identity.generate()
    reachable = await _network_steps(bootstrap, report)
    session: _Session | None = None
    intro: Any = None
    if reachable:
        start = time.monotonic()
        try:
            session = await _open(bootstrap, identity, report)
            peer = session.peer
            report.add("hello", "ok", f"{peer.role} {peer.id.hex()[:16]}, protocol {peer.version}, "
                       f"signature verified", seconds=time.monotonic() - start)
            if peer.role != "bootstrap":
                report.add("role", "fail", f"{bootstrap} is a {peer.role}, not a bootstrap server",
                           wire.ErrorCode.WRONG_ROLE)
        except Exception as exc:  # noqa: BLE001
            code, text = describe_failure(exc)
            report.add("hello", "fail", text, code, time.monotonic() - start)
    if session is not None and not report.failed("role"):
        try:
            intro = await session.ask(lambda rid: wire.Introduce(rid, 8), (wire.Introductions,))
            if isinstance(intro, wire.Error):
                report.add("introductions", "fail", intro.message, intro.code)
                intro = None
            elif not intro.peers:  # type: ignore[union-attr]
                report.add("introductions", "fail", "the bootstrap server knows no node: this would be "
                           "the first", wire.ErrorCode.NO_PEERS)
            else:
                report.add("introductions", "ok", f"{len(intro.peers)} nodes, "  # type: ignore[union-attr]
                           f"{len(intro.bridges)} bridges")  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001
            code, text = describe_failure(exc)
            report.add("introductions", "fail", text, code)
    if session is not None and not report.failed("role"):
        await _bridge_steps(intro, bootstrap, identity, report)
        await _round_trip(intro, identity, report)
        if node is not None or advertise is not None:
            await _dial_back(session, node, advertise, report)
    if session is not None:
        await session.conn.close()
    report.add("frames", "info", f"this run sent {report.frames['sent']} frames and received "
               f"{report.frames['received']}")
    rtc = "untested"
    if webrtc and session is not None and not report.failed("role"):
        from yzcore.diagnose_rtc import webrtc_step

        rtc = await webrtc_step(bootstrap, report)
    else:
        report.add("webrtc", "skip", "not asked for (--no-webrtc)" if not webrtc
                   else "needs a bootstrap server that answered")
    _host(report)
    websocket = ("ok" if reachable and session is not None and not report.failed("round trip")
                 and not report.failed("introductions") else "fail")
    report.managers = {"websocket": websocket, "bridge relay": report.managers.get("bridge relay", "untested"),
                       "webrtc": rtc}
    return report


def render(report: Report) -> str:
    """The report for a terminal."""
    marks = {"ok": "ok  ", "fail": "FAIL", "skip": "skip", "info": "info"}
    lines = []
    for s in report.steps:
        lines.append(f"{marks[s.verdict]}  {s.name}: {s.detail}")
        if s.code:
            lines.append(f"      [{s.code}] {s.advice}")
    managers = ", ".join(f"{k}: {v}" for k, v in report.managers.items())
    lines.append(f"connection managers: {managers}")
    first = next((s for s in report.steps if s.verdict == "fail"), None)
    lines.append("verdict: " + ("no fault found" if first is None else f"{first.code} at step {first.name!r}"))
    return "\n".join(lines)
