"""The WebRTC step of ``yz diagnose`` (B1.3): a DataChannel round trip through signalling.

Two throwaway browser-class peers join through the bootstrap server, one
opens a DataChannel to the other with offer and answer relayed by the
server, both run the signed hello on it, and a ``ping`` goes over it and its
``pong`` comes back. Each stage that fails is named with its code:
``WEBRTC_UNAVAILABLE`` (aiortc not installed), ``BOOTSTRAP_UNREACHABLE`` (no
signalling path), ``WEBRTC_FAILED`` (no answer, ICE or DTLS failed), the
hello's own codes, and ``TIMEOUT`` (no pong). Without the ``webrtc`` extra the
step is skipped, not failed: WebRTC is optional, and peers are then reached
through relays.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from yzcore import wire
from yzcore.runtime.peer import describe_failure, handshake

if TYPE_CHECKING:
    from yzcore.diagnose import Report

__all__ = ["webrtc_step"]

TIMEOUT = 8.0  # seconds for the whole step


async def webrtc_step(bootstrap: str, report: Report) -> str:
    """Add the ``webrtc`` step to ``report``; the WebRTC manager's verdict ("ok", "fail",
    or "not installed")."""
    from yzcore.runtime import Node

    peers = [Node(listen=None, role="browser", bootstrap=[bootstrap], metrics=False,
                  heartbeat_interval=1.0) for _ in range(2)]
    verdict = "fail"
    # What a timeout at each stage means.
    stage = str(wire.ErrorCode.BOOTSTRAP_UNREACHABLE)
    async with anyio.create_task_group() as tg:
        try:
            with anyio.fail_after(TIMEOUT):
                for p in peers:
                    await p.start(tg)
                dialer, answerer = peers
                if dialer.managers.endpoint is None:
                    report.add("webrtc", "skip", f"no WebRTC here: {dialer.managers.webrtc.reason} "
                               f"({wire.advice(wire.ErrorCode.WEBRTC_UNAVAILABLE)})")
                    return "not installed"
                while not all(link.pc for p in peers for link in p.links):
                    await anyio.sleep(0.05)
                stage = str(wire.ErrorCode.WEBRTC_FAILED)
                start = time.monotonic()
                conn = await dialer.managers.endpoint.connect(answerer.id, timeout=TIMEOUT / 2)
                opened = time.monotonic() - start
                try:
                    stage = str(wire.ErrorCode.HANDSHAKE_TIMEOUT)
                    await handshake(conn, dialer.identity, role="browser", advertise=None,
                                    timeout=TIMEOUT / 4, expected_id=answerer.id)
                    stage = str(wire.ErrorCode.TIMEOUT)
                    sent = time.monotonic()
                    await conn.send(wire.encode(wire.Ping(1)))
                    while not isinstance(wire.decode(await conn.receive()), wire.Pong):
                        pass
                    rtt = time.monotonic() - sent
                finally:
                    await conn.close()
            report.add("webrtc", "ok", f"DataChannel to a second browser-class peer through the "
                       f"bootstrap server's signal relay in {opened * 1000:.0f} ms; signed hello "
                       f"and a ping round trip of {rtt * 1000:.1f} ms on it", seconds=opened)
            verdict = "ok"
        except TimeoutError:
            what = {str(wire.ErrorCode.BOOTSTRAP_UNREACHABLE): "the throwaway peers got no "
                    "connection to the bootstrap server to signal through",
                    str(wire.ErrorCode.WEBRTC_FAILED): "no DataChannel",
                    str(wire.ErrorCode.HANDSHAKE_TIMEOUT): "the hello on the DataChannel did "
                    "not finish", str(wire.ErrorCode.TIMEOUT): "no pong on the DataChannel"}[stage]
            report.add("webrtc", "fail", f"{what} within {TIMEOUT:g} s", stage)
        except Exception as exc:  # noqa: BLE001 -- every failure is a verdict
            code, text = describe_failure(exc)
            report.add("webrtc", "fail", text, code)
        finally:
            with anyio.CancelScope(shield=True):
                for p in peers:
                    await p.aclose()
            tg.cancel_scope.cancel()
    return verdict
